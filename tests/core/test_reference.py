"""The oracle itself, against loops written from the definition; full (SDPA) and additive against the oracle."""

from __future__ import annotations

import math

import pytest
import torch

from attnzoo.core.full import additive_attention, full_attention
from attnzoo.core.reference import reference_attention
from tests.conftest import assert_close_all, make_mask, make_qkv, outputs_and_grads


def loop_attention(q, k, v, allowed, scale):
    """softmax attention by explicit loops over (b, h, i): the textbook definition, zeros for empty rows."""
    b, h, n, d = q.shape
    out = torch.zeros_like(q)
    for bi in range(b):
        for hi in range(h):
            for i in range(n):
                keys = [j for j in range(n) if allowed[bi, hi, i, j]]
                if not keys:
                    continue
                scores = torch.stack([(q[bi, hi, i] * k[bi, hi, j]).sum() * scale for j in keys])
                w = torch.exp(scores - scores.max())
                w = w / w.sum()
                out[bi, hi, i] = sum(w[t] * v[bi, hi, j] for t, j in enumerate(keys))
    return out


def dense_allowed(b, h, n, mask, causal):
    allowed = torch.ones(b, h, n, n, dtype=torch.bool)
    if mask is not None:
        allowed &= mask[:, None, None, :]
    if causal:
        allowed &= torch.ones(n, n, dtype=torch.bool).tril()
    return allowed


CASES = [(2, 2, 7, 5, "none", False), (2, 1, 9, 4, "end", True), (1, 2, 6, 3, "middle", False), (2, 1, 5, 4, "end", False)]


@pytest.mark.parametrize("b,h,n,d,pad,causal", CASES, ids=lambda x: str(x))
def test_reference_matches_loops(b, h, n, d, pad, causal):
    q, k, v = make_qkv(b, h, n, d, requires_grad=False)
    mask = make_mask(b, n, pad)
    allowed = dense_allowed(b, h, n, mask, causal)
    want = loop_attention(q, k, v, allowed, 0.37)
    got = reference_attention(q, k, v, allowed=allowed, scale=0.37)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("pad", ["none", "end", "middle"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("n,d", [(1, 64), (7, 60), (113, 60)], ids=lambda x: str(x))
def test_full_attention_matches_reference(n, d, causal, pad, dtype):
    q, k, v = make_qkv(2, 3, n, d, dtype=dtype)
    mask = make_mask(2, n, pad)
    allowed = dense_allowed(2, 3, n, mask, causal)
    scale = 1 / math.sqrt(d)
    want = outputs_and_grads(lambda *t: reference_attention(*t, allowed=allowed, scale=scale), q, k, v)
    got = outputs_and_grads(lambda *t: full_attention(*t, mask=mask, causal=causal), q, k, v)
    assert_close_all(got, want, dtype)


def test_scale_is_honoured_exactly():
    q, k, v = make_qkv(1, 1, 5, 4, requires_grad=False)
    plain = full_attention(q, k, v, scale=1.0)
    want = torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v  # unscaled dot-product attention
    torch.testing.assert_close(plain, want, atol=1e-12, rtol=1e-12)
    assert not torch.allclose(plain, full_attention(q, k, v))


def test_query_with_no_visible_key_gives_zeros_and_finite_grads():
    # Causal with the first two keys padded: queries 0 and 1 see nothing.
    q, k, v = make_qkv(1, 2, 6, 4)
    mask = torch.tensor([[False, False, True, True, True, True]])
    out = full_attention(q, k, v, mask=mask, causal=True)
    assert torch.equal(out[:, :, :2], torch.zeros_like(out[:, :, :2]))
    out.sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    assert torch.equal(q.grad[:, :, :2], torch.zeros_like(q.grad[:, :, :2]))


def test_return_weights_rows_sum_to_one_and_respect_the_mask():
    q, k, v = make_qkv(2, 2, 9, 4, requires_grad=False)
    mask = make_mask(2, 9, "end")
    out, weights = full_attention(q, k, v, mask=mask, causal=True, return_weights=True)
    assert weights.shape == (2, 2, 9, 9)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, 9, dtype=weights.dtype))
    assert (weights.masked_select(~dense_allowed(2, 2, 9, mask, True)) == 0).all()
    torch.testing.assert_close(out, weights @ v)


def test_additive_attention_matches_the_bahdanau_formula():
    b, h, n, d, e = 2, 2, 6, 4, 3
    q, k, v = make_qkv(b, h, n, d, requires_grad=False)
    gen = torch.Generator().manual_seed(1)
    w_q, w_k = (torch.randn(h, d, e, generator=gen, dtype=q.dtype) for _ in range(2))
    w_out = torch.randn(h, e, generator=gen, dtype=q.dtype)
    mask = make_mask(b, n, "end")
    got = additive_attention(q, k, v, w_q, w_k, w_out, mask=mask, chunk=4)
    want = torch.zeros_like(q)
    for bi in range(b):
        for hi in range(h):
            for i in range(n):
                scores = torch.stack([w_out[hi] @ torch.tanh(q[bi, hi, i] @ w_q[hi] + k[bi, hi, j] @ w_k[hi]) for j in range(n)])
                scores = scores.masked_fill(~mask[bi], float("-inf"))
                want[bi, hi, i] = torch.softmax(scores, 0) @ v[bi, hi]
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)
