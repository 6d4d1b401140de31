"""Shaw et al.'s relative positions against the paper's formula written out as loops over (i, j),
and the property it exists for: scores depend on j − i only (clipped at ±K)."""

from __future__ import annotations

import pytest
import torch

from attnzoo.positional.relative import RelativePosition
from tests.conftest import TOLERANCE

ATOL, GRAD_ATOL = TOLERANCE[torch.float64]
B, H, D = 2, 3, 6
# (N, K): N below, equal to and well past the clipping distance
CASES = [(1, 2), (5, 2), (7, 3), (13, 4), (6, 16)]
IDS = [f"N{n}-K{k}" for n, k in CASES]


def module(k, values=True, seed=0):
    torch.manual_seed(seed)
    m = RelativePosition(H, D, max_distance=k, values=values).double()
    with torch.no_grad():  # table rows of unit size, so every entry matters at float64 tolerance
        m.emb_k.normal_()
        if values:
            m.emb_v.normal_()
    return m


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).requires_grad_(True)


def loop_bias(q, emb_k, k, scale):
    """Shaw's key term written out: bias[b, h, i, j] = scale · q_i · a^K_{clip(j − i, −K, K)}."""
    n = q.shape[2]
    rows = [[scale * (q[:, :, i] * emb_k[min(max(j - i, -k), k) + k]).sum(-1) for j in range(n)] for i in range(n)]
    return torch.stack([torch.stack(row, -1) for row in rows], -2)  # [B, H, N, N]


def loop_values(w, emb_v, k):
    """Shaw's value term written out: out[b, h, i] = Σ_j w_ij · a^V_{clip(j − i, −K, K)}."""
    n = w.shape[2]
    rows = [sum(w[:, :, i, j, None] * emb_v[min(max(j - i, -k), k) + k] for j in range(n)) for i in range(n)]
    return torch.stack(rows, 2)  # [B, H, N, D]


@pytest.mark.parametrize("n,k", CASES, ids=IDS)
@pytest.mark.parametrize("scale", [D**-0.5, 1.0, -0.7], ids=["scale-rsqrtD", "scale-1", "scale-neg0.7"])
def test_bias_matches_the_loop_forward_and_backward(n, k, scale):
    m = module(k)
    q, kk = randn(B, H, n, D, seed=1), randn(B, H, n, D, seed=2)
    got = m.bias(q, kk, scale)
    want = loop_bias(q, m.emb_k, k, scale)
    assert got.shape == (B, H, n, n)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=ATOL)
    weight = torch.linspace(-1, 1, got.numel(), dtype=torch.float64).view_as(got)
    g_got = torch.autograd.grad((got * weight).sum(), (q, m.emb_k))
    g_want = torch.autograd.grad((want * weight).sum(), (q, m.emb_k))
    for name, g, w in zip(("dq", "d a^K"), g_got, g_want):
        torch.testing.assert_close(g, w, atol=GRAD_ATOL, rtol=GRAD_ATOL, msg=lambda s, name=name: f"{name}: {s}")


@pytest.mark.parametrize("n,k", CASES, ids=IDS)
def test_value_term_matches_the_loop_forward_and_backward(n, k):
    m = module(k)
    w = randn(B, H, n, n, seed=3)  # any weights: the term is linear in them
    got = m.value_term(w)
    want = loop_values(w, m.emb_v, k)
    assert got.shape == (B, H, n, D)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=ATOL)
    weight = torch.linspace(-1, 1, got.numel(), dtype=torch.float64).view_as(got)
    g_got = torch.autograd.grad((got * weight).sum(), (w, m.emb_v))
    g_want = torch.autograd.grad((want * weight).sum(), (w, m.emb_v))
    for name, g, ww in zip(("dweights", "d a^V"), g_got, g_want):
        torch.testing.assert_close(g, ww, atol=GRAD_ATOL, rtol=GRAD_ATOL, msg=lambda s, name=name: f"{name}: {s}")


@pytest.mark.parametrize("shift", [1, 4, 25], ids=lambda s: f"shift{s}")
def test_shifting_the_whole_sequence_leaves_bias_and_value_term_unchanged(shift):
    """(i, j) and (i + s, j + s) get the same bias: place q at the end of a longer sequence whose
    front rows are random, and compare the trailing block; the same for the value term, with the
    weights on the front keys set to zero."""
    n, k = 9, 3
    m = module(k)
    q, kk = randn(B, H, n, D, seed=1), randn(B, H, n, D, seed=2)
    front = randn(B, H, shift, D, seed=4).detach()
    q_long, k_long = torch.cat([front, q], 2), torch.cat([front, kk], 2)
    torch.testing.assert_close(m.bias(q_long, k_long, 0.5)[..., shift:, shift:], m.bias(q, kk, 0.5), atol=ATOL, rtol=ATOL)
    w = randn(B, H, n, n, seed=3).detach()
    w_long = torch.zeros(B, H, n + shift, n + shift, dtype=torch.float64)
    w_long[..., shift:, shift:] = w
    w_long[..., :shift, :] = 1.0  # front queries: anything
    torch.testing.assert_close(m.value_term(w_long)[:, :, shift:], m.value_term(w), atol=ATOL, rtol=ATOL)


def test_distances_beyond_k_share_the_last_rows():
    """Clipping: every key at j − i >= K gets a^K_{+K}, every key at j − i <= −K gets a^K_{−K}; the
    table rows in between are never used for them."""
    n, k = 12, 2
    m = module(k)
    q = randn(1, H, n, D, seed=1).detach()
    bias = m.bias(q, q, 1.0)[0]  # [H, N, N]
    for i in range(n):
        for j in range(n):
            r = min(max(j - i, -k), k) + k
            want = (q[0, :, i] * m.emb_k[r]).sum(-1)
            torch.testing.assert_close(bias[:, i, j], want, atol=ATOL, rtol=ATOL)
    with torch.no_grad():
        m.emb_k[1 : 2 * k] = 123.0  # the interior rows
    far = torch.tensor([[abs(j - i) >= k for j in range(n)] for i in range(n)])
    torch.testing.assert_close(m.bias(q, q, 1.0)[0][:, far], bias[:, far], atol=0, rtol=0)


def test_gradients_reach_both_tables_through_the_attention_formula():
    """The layer's formula out = softmax(scale·q kᵀ + bias) v + value_term(weights): a^K and a^V both learn."""
    m = RelativePosition(H, D, max_distance=3, values=True).double()
    q, kk, v = (randn(B, H, 10, D, seed=s) for s in (1, 2, 3))
    scale = D**-0.5
    weights = torch.softmax(scale * q @ kk.transpose(-1, -2) + m.bias(q, kk, scale), -1)
    out = weights @ v + m.value_term(weights)
    out.square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().min() > 0, f"{name}: every row (all 7 distances occur at N=10) gets a gradient"


def test_keys_only_by_default_and_the_protocol_attributes():
    m = RelativePosition(4, 8)
    assert m.level == "score" and "1803.02155" in m.paper
    assert m.max_distance == 16 and m.has_value_term is False and m.emb_v is None
    assert [n for n, _ in m.named_parameters()] == ["emb_k"] and tuple(m.emb_k.shape) == (33, 8)
    q = torch.randn(2, 4, 50, 8)  # any N, no max_len
    assert m.bias(q, q, 0.3).shape == (2, 4, 50, 50) and m.bias(q, q, 0.3).dtype == torch.float32
    with pytest.raises(ValueError, match="values=True"):
        m.value_term(torch.rand(2, 4, 50, 50))


@pytest.mark.parametrize(
    "build,call,match",
    [
        (dict(max_distance=0), None, "max_distance"),
        (dict(values="yes"), None, "values"),
        ({}, lambda m: m.bias(torch.randn(2, 3, 5, 7), torch.randn(2, 3, 5, 7), 1.0), "head_dim=7"),
        ({}, lambda m: m.bias(torch.randn(2, 2, 5, 6), torch.randn(2, 2, 5, 6), 1.0), "heads=2"),
        ({}, lambda m: m.bias(torch.randn(2, 3, 5, 6), torch.randn(2, 3, 4, 6), 1.0), "same shape"),
        (dict(values=True), lambda m: m.value_term(torch.rand(2, 3, 5, 4)), r"\[B, H, N, N\]"),
    ],
    ids=["K0", "values-not-bool", "wrong-D", "wrong-H", "N-mismatch", "weights-not-square"],
)
def test_errors_name_the_fix(build, call, match):
    with pytest.raises(ValueError, match=match):
        m = RelativePosition(3, 6, **build)
        call(m)
