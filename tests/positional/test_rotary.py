"""RoPE against the paper's complex-number form written out here, and the two properties it exists
for: q·k after rotation depends only on the offset between positions, and rotation keeps norms."""

from __future__ import annotations

import pytest
import torch

from attnzoo.positional.rotary import Rotary, rotary
from tests.conftest import TOLERANCE

ATOL, GRAD_ATOL = TOLERANCE[torch.float64]


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def complex_rope(x, base, offset):
    """RoFormer eq. 34 as complex numbers: pair i of row n is x[2i] + 1j·x[2i+1], times e^{1j·(n+offset)·θ_i},
    θ_i = base^(−2i/D). All in float64 / complex128."""
    n, d = x.shape[-2], x.shape[-1]
    theta = torch.tensor([base ** (-2.0 * i / d) for i in range(d // 2)], dtype=torch.float64)
    pos = torch.arange(n, dtype=torch.float64) + offset
    z = torch.view_as_complex(x.double().reshape(*x.shape[:-1], d // 2, 2).contiguous())
    rotated = z * torch.polar(torch.ones(n, d // 2, dtype=torch.float64), pos[:, None] * theta[None, :])
    return torch.view_as_real(rotated).reshape(x.shape)


SHAPES = [(2, 3, 1, 2), (2, 3, 7, 8), (1, 2, 33, 60), (5, 16, 4)]  # [B, H, N, D] and one [..., N, D] without heads
SHAPE_IDS = ["N1-D2", "N7-D8", "N33-D60", "3dim-N16-D4"]


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("offset", [0, 5, 1000], ids=lambda o: f"offset{o}")
@pytest.mark.parametrize("base", [10000.0, 100.0], ids=["base1e4", "base100"])
def test_matches_the_complex_number_formula_forward_and_backward(shape, offset, base):
    x = randn(*shape).requires_grad_(True)
    got = rotary(x, base=base, offset=offset)
    want = complex_rope(x, base, offset)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=ATOL)
    weight = randn(*shape, seed=9)
    (g,) = torch.autograd.grad((got * weight).sum(), x)
    (g_want,) = torch.autograd.grad((want * weight).sum(), x)  # the inverse rotation of weight
    torch.testing.assert_close(g, g_want, atol=GRAD_ATOL, rtol=GRAD_ATOL)


@pytest.mark.parametrize("m,n,shift", [(0, 0, 3), (3, 9, 1), (9, 3, 40), (100, 7, 10**6)], ids=lambda v: str(v))
def test_dot_product_depends_only_on_the_offset(m, n, shift):
    q, k = randn(1, 1, 1, 16, seed=1), randn(1, 1, 1, 16, seed=2)
    here = (rotary(q, offset=m) * rotary(k, offset=n)).sum()
    there = (rotary(q, offset=m + shift) * rotary(k, offset=n + shift)).sum()
    torch.testing.assert_close(there, here, atol=1e-10, rtol=1e-10)


def test_dot_product_does_change_with_the_offset():
    """The property above is not vacuous: moving one row alone changes q·k."""
    q, k = randn(1, 1, 1, 16, seed=1), randn(1, 1, 1, 16, seed=2)
    here = (rotary(q, offset=3) * rotary(k, offset=5)).sum()
    assert (here - (rotary(q, offset=3) * rotary(k, offset=6)).sum()).abs() > 1e-3


@pytest.mark.parametrize("offset", [0, 77], ids=lambda o: f"offset{o}")
def test_rotation_preserves_every_pair_norm(offset):
    x = randn(2, 3, 20, 12)
    y = rotary(x, offset=offset)
    pair_norm = lambda t: t.reshape(*t.shape[:-1], -1, 2).norm(dim=-1)  # noqa: E731
    torch.testing.assert_close(pair_norm(y), pair_norm(x), atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), atol=ATOL, rtol=ATOL)


def test_long_positions_stay_accurate_in_float32():
    """Angles are computed in float64: at position 10^6 a float32 angle would be off by up to 0.03 rad."""
    x = randn(1, 1, 8, 64, seed=3)
    got = rotary(x.float(), offset=10**6)
    want = complex_rope(x, 10000.0, 10**6)
    torch.testing.assert_close(got.double(), want, atol=2e-6, rtol=2e-6)
    assert got.dtype == torch.float32


def test_module_rotates_q_and_k_from_position_zero():
    q, k = randn(2, 4, 9, 10, seed=1), randn(2, 4, 9, 10, seed=2)
    m = Rotary(10, base=500.0)
    assert m.level == "rotary" and "2104.09864" in m.paper and len(list(m.parameters())) == 0
    rq, rk = m(q, k)
    assert rq.equal(rotary(q, base=500.0)) and rk.equal(rotary(k, base=500.0))
    torch.testing.assert_close(rq, complex_rope(q, 500.0, 0), atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(rk, complex_rope(k, 500.0, 0), atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: rotary(torch.randn(2, 3, 5, 7)), "must be even"),
        (lambda: Rotary(7), "must be even"),
        (lambda: Rotary(8)(torch.randn(2, 3, 5, 6), torch.randn(2, 3, 5, 6)), "head_dim=6"),
        (lambda: Rotary(8)(torch.randn(3, 5, 8), torch.randn(3, 5, 8)), r"\[B, H, N, D\]"),
        (lambda: rotary(torch.randn(2, 4), offset=-1), "offset"),
        (lambda: rotary(torch.randn(2, 4), base=0.5), "base"),
        (lambda: rotary(torch.arange(8).view(2, 4)), "floating"),
    ],
    ids=["odd-D", "odd-head_dim", "wrong-D", "3dim-to-module", "negative-offset", "base-below-1", "integer-x"],
)
def test_errors_name_the_fix(call, match):
    with pytest.raises(ValueError, match=match):
        call()
