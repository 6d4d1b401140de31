"""RNN positions against nn.GRU run on each sequence's real tokens alone (a loop here), padding
invariance, causality of the unidirectional form; and the input-level protocol of every input encoding."""

from __future__ import annotations

import pytest
import torch

from attnzoo.positional.floater import FloaterPosition
from attnzoo.positional.learned import LearnedPosition
from attnzoo.positional.rnn import RNNPosition
from attnzoo.positional.sinusoidal import SinusoidalPosition
from tests.conftest import TOLERANCE, make_mask

ATOL, GRAD_ATOL = TOLERANCE[torch.float64]
C = 6


def layer(bidirectional=False, dim=C, seed=0):
    torch.manual_seed(seed)
    return RNNPosition(dim, bidirectional=bidirectional).double()


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def per_sequence(m, x, mask):
    """Written out: each sequence's real rows, in order, through the layer's nn.GRU alone; padded rows unchanged."""
    out = []
    for b in range(x.shape[0]):
        real = torch.ones(x.shape[1], dtype=torch.bool) if mask is None else mask[b]
        y = x[b].clone()
        if real.any():
            r = x[b][real]
            y[real] = r + m.gru(r[None])[0][0]
        out.append(y)
    return torch.stack(out)


def masks(n):
    both = make_mask(3, n, "end")
    both[0] &= make_mask(3, n, "middle")[0]
    empty = make_mask(3, n, "end")
    empty[1] = False  # a sequence with no real token
    return {"none": None, "end": make_mask(3, n, "end"), "middle": make_mask(3, n, "middle"), "both": both, "empty-row": empty}


@pytest.mark.parametrize("pad", ["none", "end", "middle", "both", "empty-row"])
@pytest.mark.parametrize("n", [1, 11], ids=lambda n: f"N{n}")
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_matches_the_gru_on_each_sequence_alone_forward_and_backward(bidirectional, n, pad):
    m = layer(bidirectional)
    x = randn(3, n, C).requires_grad_(True)
    mask = masks(n)[pad]
    got, want = m(x, mask), per_sequence(m, x, mask)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=ATOL)
    weight = randn(*got.shape, seed=5)
    params = [x, *m.gru.parameters()]
    for g, w, name in zip(
        torch.autograd.grad((got * weight).sum(), params),
        torch.autograd.grad((want * weight).sum(), params),
        ["x"] + [name for name, _ in m.gru.named_parameters()],
    ):
        torch.testing.assert_close(g, w, atol=GRAD_ATOL, rtol=GRAD_ATOL, msg=lambda s, name=name: f"d{name}: {s}")


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_real_outputs_ignore_padding_content_and_amount(bidirectional):
    m = layer(bidirectional)
    x = randn(3, 10, C)
    mask = masks(10)["both"]
    y = m(x, mask)
    x2 = torch.where(mask[..., None], x, torch.full_like(x, 1e3))  # padded content changed
    torch.testing.assert_close(m(x2, mask)[mask], y[mask], atol=ATOL, rtol=ATOL)
    x3 = torch.cat([x, randn(3, 5, C, seed=7)], 1)  # five more padded positions at the end
    mask3 = torch.cat([mask, torch.zeros(3, 5, dtype=torch.bool)], 1)
    y3 = m(x3, mask3)
    torch.testing.assert_close(y3[mask3], y[mask], atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(y3[~mask3], x3[~mask3], atol=0, rtol=0)  # padded rows come back unchanged


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_unidirectional_is_causal_and_bidirectional_is_not(bidirectional):
    m = layer(bidirectional)
    assert m.causal is (not bidirectional)
    x = randn(2, 12, C)
    mask = make_mask(2, 12, "middle")
    x2 = x.clone()
    x2[:, 8:] = randn(2, 4, C, seed=3)  # change the future of position 7
    past_moved = (m(x2, mask)[:, :8] - m(x, mask)[:, :8]).abs().max()
    if bidirectional:
        assert past_moved > 1e-4
    else:
        assert past_moved == 0


def test_gradients_reach_every_gru_parameter():
    m = layer(True)
    m(randn(2, 9, C), make_mask(2, 9, "end")).square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_widths_and_protocol():
    uni, bi = RNNPosition(8), RNNPosition(8, bidirectional=True)
    assert uni.level == "input" and "K19-1031" in uni.paper
    assert uni.gru.hidden_size == 8 and not uni.gru.bidirectional
    assert bi.gru.hidden_size == 4 and bi.gru.bidirectional and bi(torch.randn(2, 5, 8)).shape == (2, 5, 8)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: RNNPosition(7, bidirectional=True), "even"),
        (lambda: RNNPosition(6, bidirectional=1), "True or False"),
        (lambda: RNNPosition(6)(torch.randn(2, 5, 4)), "C=6"),
        (lambda: RNNPosition(6)(torch.randn(2, 5, 6), torch.ones(2, 5)), "bool"),
        (lambda: RNNPosition(6)(torch.randn(2, 5, 6), torch.ones(2, 4, dtype=torch.bool)), r"\[B, N\]"),
        (lambda: RNNPosition(6)(torch.randn(2, 0, 6)), "N=0"),
    ],
    ids=["bi-odd-dim", "bi-not-bool", "wrong-width", "float-mask", "mask-shape", "empty"],
)
def test_errors_name_the_fix(call, match):
    with pytest.raises(ValueError, match=match):
        call()


INPUT_ENCODINGS = [
    ("sinusoidal", lambda: SinusoidalPosition(8)),
    ("learned", lambda: LearnedPosition(8, 16)),
    ("floater", lambda: FloaterPosition(8)),
    ("rnn", lambda: RNNPosition(8)),
]


@pytest.mark.parametrize("name,make", INPUT_ENCODINGS, ids=[e[0] for e in INPUT_ENCODINGS])
def test_input_level_protocol(name, make):
    """Every input encoding: level "input", a paper, built as cls(dim, max_len), forward(x, mask=None) -> [B, N, C]."""
    m = make()
    assert m.level == "input" and ("arxiv.org/abs/" in m.paper or "aclanthology.org/" in m.paper)
    assert type(m)(8, 16).level == "input"
    x = torch.randn(2, 9, 8)
    assert m(x).shape == (2, 9, 8) and m(x, mask=make_mask(2, 9, "end")).shape == (2, 9, 8)
