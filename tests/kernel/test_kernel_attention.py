"""Every kernel mechanism against its written-out quadratic form, forward and gradients.

Each reference below builds the [N, N] implied attention matrix A from the paper's formula with
its own code (features written out again here, not imported), masks it, and applies A V / A 1.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attnzoo.functional import (
    efficient_attention,
    linear_attention,
    performer_attention,
    performer_relu_attention,
    performer_trig_attention,
    rfa_attention,
)
from attnzoo.kernel.features import gaussian_projection
from tests.conftest import TOLERANCE, make_mask, make_qkv

M = 24  # random features in these tests


def projection(d, dtype=torch.float64, seed=3):
    return gaussian_projection(M, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def visible(mask, n, causal, b):
    """[B, 1, N, N] bool: key j visible to query i."""
    vis = torch.ones(b, 1, n, n, dtype=torch.bool)
    if mask is not None:
        vis = vis & mask[:, None, None, :]
    if causal:
        vis = vis & torch.ones(n, n, dtype=torch.bool).tril()
    return vis


def quadratic(a, v, vis, normalize=True):
    """A masked, then A V (/ A 1)."""
    a = a * vis
    out = a @ v
    if not normalize:
        return out
    den = a.sum(-1, keepdim=True)
    return out / torch.where(den == 0, torch.ones_like(den), den)


def ref_map(phi, normalize=True):
    return lambda q, k, v, mask, causal: quadratic(phi(q) @ phi(k).transpose(-1, -2), v, visible(mask, q.shape[2], causal, q.shape[0]), normalize)


def ref_efficient(q, k, v, mask, causal):
    b, h, n, d = q.shape
    vis = visible(mask, n, causal, b)  # [B, 1, I, J]
    logits = k[:, :, None, :, :].expand(b, h, n, n, d).masked_fill(~vis[..., None], float("-inf"))
    key_softmax = torch.softmax(logits, dim=3).nan_to_num(0.0)  # softmax over visible positions j, per feature d
    return torch.einsum("bhid,bhijd,bhje->bhie", torch.softmax(q, -1), key_softmax, v)


def ref_favor(q, k, v, mask, causal):
    w, s = projection(q.shape[-1], q.dtype), q.shape[-1] ** -0.25
    feat = lambda x: torch.exp((x * s) @ w.T - (x * s).square().sum(-1, keepdim=True) / 2) / math.sqrt(M)  # noqa: E731
    return quadratic(feat(q) @ feat(k).transpose(-1, -2), v, visible(mask, q.shape[2], causal, q.shape[0]))


def ref_trig(q, k, v, mask, causal):
    w, s = projection(q.shape[-1], q.dtype), q.shape[-1] ** -0.25
    feat = lambda x: torch.exp((x * s).square().sum(-1, keepdim=True) / 2) * torch.cat(  # noqa: E731
        [torch.sin((x * s) @ w.T), torch.cos((x * s) @ w.T)], -1
    ) / math.sqrt(M)
    return quadratic(feat(q) @ feat(k).transpose(-1, -2), v, visible(mask, q.shape[2], causal, q.shape[0]))


def ref_rfa(q, k, v, mask, causal, gate_logits=None, sigma=0.7):
    w = projection(q.shape[-1], q.dtype) / sigma
    unit = lambda x: x / x.norm(dim=-1, keepdim=True)  # noqa: E731
    feat = lambda x: torch.cat([torch.sin(unit(x) @ w.T), torch.cos(unit(x) @ w.T)], -1) / math.sqrt(M)  # noqa: E731
    a = feat(q) @ feat(k).transpose(-1, -2)
    if gate_logits is not None:  # a_ij · (1 − g_j) · Π_{j<t≤i} g_t, the product from cumulative products
        g = torch.sigmoid(gate_logits)
        if mask is not None:
            g = torch.where(mask[:, None, :], g, torch.ones_like(g))  # padding keeps the state as it is
        p = torch.cumprod(g, dim=-1)
        a = a * (1 - g)[..., None, :] * (p[..., :, None] / p[..., None, :]).tril()
    return quadratic(a, v, visible(mask, q.shape[2], causal, q.shape[0]))


def gate_logits_for(q):
    return torch.randn(q.shape[:3], generator=torch.Generator().manual_seed(7), dtype=q.dtype).requires_grad_(True)


# (id, fast(q, k, v, mask, causal, chunk), reference(q, k, v, mask, causal), causal only)
CASES = [
    ("linear-elu", lambda q, k, v, m, c, ch: linear_attention(q, k, v, mask=m, causal=c, chunk=ch), ref_map(lambda x: F.elu(x) + 1)),
    ("linear-relu", lambda q, k, v, m, c, ch: linear_attention(q, k, v, feature_map="relu", mask=m, causal=c, chunk=ch), ref_map(F.relu)),
    (
        "linear-identity",
        lambda q, k, v, m, c, ch: linear_attention(q, k, v, feature_map="identity", mask=m, causal=c, chunk=ch),
        ref_map(lambda x: x, normalize=False),
    ),
    (
        "linear-user-map",
        lambda q, k, v, m, c, ch: linear_attention(q, k, v, feature_map=lambda x: torch.cat([x.square(), F.softplus(x)], -1), mask=m, causal=c, chunk=ch),
        ref_map(lambda x: torch.cat([x.square(), F.softplus(x)], -1)),
    ),
    ("efficient", lambda q, k, v, m, c, ch: efficient_attention(q, k, v, mask=m, causal=c, chunk=ch), ref_efficient),
    ("performer-favor+", lambda q, k, v, m, c, ch: performer_attention(q, k, v, projection(q.shape[-1]), mask=m, causal=c, chunk=ch), ref_favor),
    ("performer-trig", lambda q, k, v, m, c, ch: performer_trig_attention(q, k, v, projection(q.shape[-1]), mask=m, causal=c, chunk=ch), ref_trig),
    (
        "performer-relu",
        lambda q, k, v, m, c, ch: performer_relu_attention(q, k, v, projection(q.shape[-1]), mask=m, causal=c, chunk=ch),
        ref_map(lambda x: F.relu(x @ projection(x.shape[-1]).T) + 1e-3),
    ),
    (
        "performer-relu-deterministic",
        lambda q, k, v, m, c, ch: performer_relu_attention(q, k, v, None, epsilon=0.01, mask=m, causal=c, chunk=ch),
        ref_map(lambda x: F.relu(x) + 0.01),
    ),
    ("rfa", lambda q, k, v, m, c, ch: rfa_attention(q, k, v, projection(q.shape[-1]), sigma=0.7, mask=m, causal=c, chunk=ch), ref_rfa),
]
SIZES = [(1, 8), (7, 60), (113, 60)]  # (N, D)


def real_outputs_and_grads(fn, q, k, v, mask, extra=()):
    """Outputs at real query positions (padding queries may hold any finite value) and the gradients
    of a fixed non-symmetric loss on them, with respect to q, k, v and any extra inputs."""
    out = fn(q, k, v)
    keep = torch.ones(out.shape[0], 1, out.shape[2], 1, dtype=out.dtype) if mask is None else mask[:, None, :, None].to(out.dtype)
    weight = torch.linspace(-1.0, 1.0, out.numel(), dtype=out.dtype).view_as(out) * keep
    grads = torch.autograd.grad((out * weight).sum(), (q, k, v, *extra))
    return (out * keep, *grads)


def assert_close(got, want, dtype=torch.float64):
    atol_fwd, atol_grad = TOLERANCE[dtype]
    for i, (g, w) in enumerate(zip(got, want)):
        assert torch.isfinite(g).all(), f"output {i} has non-finite values"
        tol = atol_fwd if i == 0 else atol_grad
        torch.testing.assert_close(g, w, atol=tol, rtol=tol, msg=lambda m: f"output {i}: {m}")


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("pad", ["none", "end", "middle"])
@pytest.mark.parametrize("n,d", SIZES, ids=[f"N{n}-D{d}" for n, d in SIZES])
@pytest.mark.parametrize("name,fast,ref", CASES, ids=[c[0] for c in CASES])
def test_matches_quadratic_form(name, fast, ref, n, d, pad, causal):
    q, k, v = make_qkv(2, 2, n, d, seed=n)
    if name == "performer-trig":  # exp(|x|²/2) weights: keep the estimator in a sane range
        q, k = (t.detach().mul(0.5).requires_grad_(True) for t in (q, k))
    mask = make_mask(2, n, pad)
    got = real_outputs_and_grads(lambda *t: fast(*t, mask, causal, 16), q, k, v, mask)
    want = real_outputs_and_grads(lambda *t: ref(*t, mask, causal), q, k, v, mask)
    assert_close(got, want)


@pytest.mark.parametrize("pad", ["none", "end", "middle"])
def test_gated_rfa_matches_product_of_gates(pad):
    q, k, v = make_qkv(2, 2, 113, 60)
    g = gate_logits_for(q)
    mask = make_mask(2, 113, pad)
    got = real_outputs_and_grads(
        lambda *t: rfa_attention(*t, projection(60), sigma=0.7, gate_logits=g, mask=mask, causal=True, chunk=16), q, k, v, mask, (g,)
    )
    want = real_outputs_and_grads(lambda *t: ref_rfa(*t, mask, True, gate_logits=g), q, k, v, mask, (g,))
    assert_close(got, want)


def test_identity_map_is_exactly_qk_v_in_float32():
    q, k, v = make_qkv(2, 2, 200, 32, dtype=torch.float32, requires_grad=False)
    got = linear_attention(q, k, v, feature_map="identity")
    want = ((q.double() @ k.double().transpose(-1, -2)) @ v.double()).float()  # the expensive order, in float64
    scale = want.abs().amax()
    torch.testing.assert_close(got / scale, want / scale, atol=TOLERANCE[torch.float32][0], rtol=0)


@pytest.mark.parametrize("name,fast,ref", CASES, ids=[c[0] for c in CASES])
def test_padded_keys_leave_numerator_and_normalizer(name, fast, ref):
    """Real outputs do not move when padded keys and values change, however large (the public
    Performer code counts masked keys in the normalizer)."""
    q, k, v = make_qkv(2, 2, 50, 16, requires_grad=False)
    mask = make_mask(2, 50, "middle") & make_mask(2, 50, "end")
    for causal in (False, True):
        y = fast(q, k, v, mask, causal, 16)
        k2, v2 = k.clone(), v.clone()
        k2[~mask[:, None, :].expand(2, 2, 50)] = 30.0
        v2[~mask[:, None, :].expand(2, 2, 50)] = 1e6
        y2 = fast(q, k2, v2, mask, causal, 16)
        sel = mask[:, None, :, None].expand_as(y)
        torch.testing.assert_close(y2[sel], y[sel], atol=1e-10, rtol=1e-10)
        # and they equal attention on the real tokens alone (batch 1's real prefix)
        real = mask[1].nonzero().squeeze(1)
        alone = fast(q[1:, :, real], k[1:, :, real], v[1:, :, real], None, causal, 16)
        torch.testing.assert_close(y[1:, :, real], alone, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("name,fast,ref", CASES[:1] + CASES[4:6], ids=[c[0] for c in CASES[:1] + CASES[4:6]])
def test_half_precision_error_at_most_twice_the_naive_one(name, fast, ref, dtype):
    """flash-attention's rule, for inputs and outputs in half precision: the fast path is within 2×
    the error of the naive quadratic form on the same rounded inputs, both against float64."""
    q, k, v = make_qkv(1, 2, 257, 64, requires_grad=False)
    exact = ref(q, k, v, None, True)
    low = [t.to(dtype) for t in (q, k, v)]
    fast_out = fast(*[t for t in low], None, True, 64)
    assert fast_out.dtype == dtype
    naive = ref(*[t.float() for t in low], None, True).to(dtype)  # rounded inputs, float32 math, rounded output
    err = lambda y: (y.double() - exact).abs().max().item()  # noqa: E731
    assert err(fast_out) <= 2 * err(naive) + 1e-3
