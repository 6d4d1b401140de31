"""Positions against their formulas; encoder and classifier behaviour."""

from __future__ import annotations

import math

import pytest
import torch

import attnzoo
from attnzoo.model.encoder import Classifier, ClassifierConfig, EncoderConfig
from attnzoo.positional.learned import LearnedPosition
from attnzoo.positional.sinusoidal import sinusoidal_positions


def test_sinusoidal_matches_the_formula():
    n, c = 7, 6
    got = sinusoidal_positions(n, c, dtype=torch.float64)
    for p in range(n):
        for i in range(c // 2):
            angle = p / 10000 ** (2 * i / c)
            assert math.isclose(got[p, 2 * i].item(), math.sin(angle), abs_tol=1e-12)
            assert math.isclose(got[p, 2 * i + 1].item(), math.cos(angle), abs_tol=1e-12)


def test_learned_positions_refuse_longer_sequences():
    pos = LearnedPosition(8, max_len=5)
    assert pos(torch.zeros(2, 5, 8)).shape == (2, 5, 8)
    with pytest.raises(ValueError, match="max_len=5"):
        pos(torch.zeros(2, 6, 8))


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("positions", ["sinusoidal", "learned"])
def test_classifier_ignores_padding(pooling, positions):
    torch.manual_seed(0)
    enc = EncoderConfig(dim=16, depth=2, heads=2, dropout=0.0)
    model = Classifier(
        ClassifierConfig(vocab_size=20, num_classes=3, max_len=30, positions=positions, pooling=pooling),
        enc,
        lambda: attnzoo.build("local", dim=16, heads=2, window=3, block=8),
    ).eval()
    tokens = torch.randint(0, 20, (2, 30))
    mask = torch.ones(2, 30, dtype=torch.bool)
    mask[1, 20:] = False
    logits = model(tokens, mask)
    assert logits.shape == (2, 3)
    tokens2 = tokens.clone()
    tokens2[1, 20:] = (tokens2[1, 20:] + 7) % 20
    torch.testing.assert_close(model(tokens2, mask), logits)
    # And a model trains: loss falls on a tiny separable task.
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    labels = torch.tensor([0, 2])
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(tokens, mask), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_classifier_rejects_float_tokens():
    model = Classifier(ClassifierConfig(), EncoderConfig(dim=16, heads=2, depth=1), lambda: attnzoo.build("full", dim=16, heads=2))
    with pytest.raises(ValueError, match="integer ids"):
        model(torch.zeros(2, 5))
