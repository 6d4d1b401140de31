"""Performer and RFA on what their papers promise: an unbiased kernel estimate, an error that falls
as features grow, orthogonal features beating i.i.d. ones, and the feature redraw policy."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

import attnzoo
from attnzoo.functional import full_attention, performer_attention, rfa_attention
from attnzoo.kernel.features import fourier_features, gaussian_projection, softmax_kernel_features

D = 16


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("orthogonal", [True, False], ids=["orthogonal", "iid"])
def test_favor_kernel_estimate_is_unbiased(orthogonal):
    """The mean of φ(x)·φ(y) over many draws is exp(x·y) within 4 standard errors; each block of D
    rows (dependent when orthogonal) counts as one sample."""
    x, y = (0.3 * torch.randn(D, generator=gen(s), dtype=torch.float64) for s in (0, 1))
    w = gaussian_projection(D * 20000, D, orthogonal=orthogonal, generator=gen(2), dtype=torch.float64)
    terms = softmax_kernel_features(x, w, role="raw") * softmax_kernel_features(y, w, role="raw") * w.shape[0]
    samples = terms.view(-1, D).mean(1)
    se = samples.std().item() / math.sqrt(samples.numel())
    assert abs(samples.mean().item() - math.exp(x @ y)) < 4 * se
    assert se < 0.01 * math.exp(x @ y), "enough draws for the check to mean something"


def test_fourier_features_estimate_the_gaussian_kernel():
    x, y = (torch.nn.functional.normalize(torch.randn(D, generator=gen(s), dtype=torch.float64), dim=0) for s in (0, 1))
    w = gaussian_projection(D * 4000, D, generator=gen(2), dtype=torch.float64) / 0.8  # σ = 0.8
    terms = fourier_features(x, w) * fourier_features(y, w) * w.shape[0]  # per frequency: sin·sin + cos·cos
    samples = (terms[: w.shape[0]] + terms[w.shape[0] :]).view(-1, D).mean(1)
    se = samples.std().item() / math.sqrt(samples.numel())
    assert abs(samples.mean().item() - math.exp(-(x - y).square().sum() / (2 * 0.8**2))) < 4 * se


def _errors(fn, m, orthogonal, seeds=40):
    q, k, v = (torch.randn(2, 4, 128, D, generator=gen(s), dtype=torch.float64) for s in (10, 11, 12))
    q, k = 0.5 * q, 0.5 * k  # logits of moderate size: the regime the estimator is meant for
    exact = full_attention(q, k, v)
    errs = []
    for s in range(seeds):
        w = gaussian_projection(m, D, orthogonal=orthogonal, generator=gen(100 + s), dtype=torch.float64)
        errs.append(((fn(q, k, v, w) - exact).norm() / exact.norm()).item())
    return statistics.mean(errs)


def test_performer_error_falls_as_features_grow():
    errs = [_errors(performer_attention, m, True) for m in (16, 64, 256)]
    assert errs[0] > 1.3 * errs[1] > 1.3 * 1.3 * errs[2], errs


@pytest.mark.parametrize("m", [16, 256])
def test_orthogonal_features_beat_iid(m):
    assert _errors(performer_attention, m, True) < 0.95 * _errors(performer_attention, m, False)


def test_rfa_error_falls_as_features_grow():
    """RFA estimates softmax(q̂·k̂ / σ²) on unit vectors: compare against exactly that."""
    q, k, v = (torch.randn(1, 2, 96, D, generator=gen(s), dtype=torch.float64) for s in (20, 21, 22))
    unit = lambda x: torch.nn.functional.normalize(x, dim=-1)  # noqa: E731
    sigma = 0.8
    exact = full_attention(unit(q), unit(k), v, scale=1 / sigma**2)
    errs = []
    for m in (16, 64, 256):
        runs = [
            rfa_attention(q, k, v, gaussian_projection(m, D, generator=gen(200 + s), dtype=torch.float64), sigma=sigma)
            for s in range(30)
        ]
        errs.append(statistics.mean(((r - exact).norm() / exact.norm()).item() for r in runs))
    assert errs[0] > 1.3 * errs[1] > 1.3 * 1.3 * errs[2], errs


def test_default_nb_features_is_d_ln_d():
    layer = attnzoo.build("performer", dim=128, heads=2)
    assert layer.core.projection.shape == (round(64 * math.log(64)), 64)
    assert attnzoo.build("performer", dim=128, heads=2, nb_features=10).core.projection.shape == (10, 64)


def test_redraw_policy():
    torch.manual_seed(0)
    layer = attnzoo.build("performer", dim=32, heads=2, redraw_every=2)
    x = torch.randn(1, 9, 32)
    seen = []
    layer.train()
    for _ in range(5):
        layer(x)
        seen.append(layer.core.projection.clone())
    # draws change before the 3rd and 5th training passes: every 2 passes
    assert torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2])
    assert torch.equal(seen[2], seen[3]) and not torch.equal(seen[3], seen[4])
    layer.eval()
    before = layer.core.projection.clone()
    for _ in range(4):
        layer(x)
    assert torch.equal(layer.core.projection, before), "no redraws in eval"
    layer.core.redraw()
    assert not torch.equal(layer.core.projection, before), "an explicit redraw draws new features"

    never = attnzoo.build("performer", dim=32, heads=2).train()
    first = never.core.projection.clone()
    for _ in range(4):
        never(x)
    assert torch.equal(never.core.projection, first), "redraw_every=0 never redraws"


def test_seed_option_fixes_the_draws_whatever_the_global_generator():
    torch.manual_seed(1)
    a = attnzoo.build("performer", dim=32, heads=2, seed=5).core.projection
    torch.manual_seed(2)
    b = attnzoo.build("performer", dim=32, heads=2, seed=5).core.projection
    assert torch.equal(a, b)
    assert not torch.equal(a, attnzoo.build("performer", dim=32, heads=2, seed=6).core.projection)


def test_projection_is_saved_with_the_model():
    """The features are a buffer: a reloaded model computes the same function."""
    src, dst = attnzoo.build("performer", dim=32, heads=2, seed=1), attnzoo.build("performer", dim=32, heads=2, seed=2)
    dst.load_state_dict(src.state_dict())
    x = torch.randn(1, 7, 32)
    torch.testing.assert_close(dst(x), src(x))


def test_lra_performer_has_no_random_features():
    layer = attnzoo.build("performer", dim=32, heads=2, kernel="relu", features="deterministic")
    assert layer.core.projection is None
    layer.core.redraw()  # a no-op, not an error
