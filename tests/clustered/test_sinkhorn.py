"""Sinkhorn attention against written-out references: Sinkhorn balancing by repeated division in
the exp domain, the sorted blocks as explicit mixtures, one dense softmax per query."""

from __future__ import annotations

import math

import pytest
import torch

from attnzoo.clustered.sinkhorn import Sinkhorn, SinkhornConfig, block_sort_logits, sinkhorn_attention, sinkhorn_permutation
from tests.clustered import padding


def reference_permutation(logits, allowed, iters, temperature, causal):
    p = torch.exp(logits / temperature) * allowed
    def safe(total):  # an empty row or column (all masked) divides by 1, not 0
        return total + (total == 0)

    for _ in range(1 if causal else iters):
        p = p / safe(p.sum(-1, keepdim=True))
        if not causal:
            p = p / safe(p.sum(-2, keepdim=True))
    return p


def reference_sinkhorn(q, k, v, logits, block, iters, temperature, mask=None, causal=False, sortcut=0):
    b, h, n, d = q.shape
    t = -(-n // block)
    real = torch.ones(b, n, dtype=torch.bool) if mask is None else mask
    out = torch.zeros_like(v)
    for bi in range(b):
        blocks = [list(range(s * block, min(n, (s + 1) * block))) for s in range(t)]
        has_real = torch.tensor([any(bool(real[bi, j]) for j in blk) for blk in blocks])
        allowed = has_real[None, :].expand(t, t).clone()
        if causal:
            allowed &= torch.ones(t, t, dtype=torch.bool).tril(-1)
        for hi in range(h):
            p = reference_permutation(logits[bi, hi], allowed, iters, temperature, causal)

            def slot(row, c):  # the c-th key / value of the sorted block `row`, and whether it is real
                key = sum(p[row, s] * k[bi, hi, blocks[s][c]] * real[bi, blocks[s][c]] for s in range(t) if c < len(blocks[s]))
                val = sum(p[row, s] * v[bi, hi, blocks[s][c]] * real[bi, blocks[s][c]] for s in range(t) if c < len(blocks[s]))
                seen = any(p[row, s] > 0 and c < len(blocks[s]) and bool(real[bi, blocks[s][c]]) for s in range(t))
                return key, val, seen

            for i in range(n):
                if not real[bi, i]:
                    continue
                keys, vals = [], []
                if sortcut:
                    slots = [slot(r, c) for r in range(sortcut) for c in range(block)]
                else:
                    own = [j for j in blocks[i // block] if real[bi, j] and (not causal or j <= i)]
                    keys += [k[bi, hi, j] for j in own]
                    vals += [v[bi, hi, j] for j in own]
                    slots = [slot(i // block, c) for c in range(block)]
                for key, val, seen in slots:
                    if seen:
                        keys.append(key)
                        vals.append(val)
                s = torch.stack([q[bi, hi, i] @ key for key in keys]) / math.sqrt(d)
                out[bi, hi, i] = torch.softmax(s, 0) @ torch.stack(vals)
    return out


def inputs(b, h, n, d, block, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, n, d, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    t = -(-n // block)
    logits = torch.randn(b, h, t, t, generator=g, dtype=torch.float64, requires_grad=True)
    return q, k, v, logits


CASES = [(1, 1, 1, 8, 4), (2, 2, 7, 8, 2), (2, 1, 45, 60, 8), (1, 2, 50, 16, 16), (1, 1, 24, 8, 24)]


@pytest.mark.parametrize("pad", ["none", "tail", "holes"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("b,h,n,d,block", CASES, ids=lambda c: str(c))
def test_equals_the_written_out_sorted_block_attention(b, h, n, d, block, causal, pad):
    q, k, v, logits = inputs(b, h, n, d, block)
    mask = padding(pad, b, n)
    out = sinkhorn_attention(q, k, v, logits, block=block, iters=5, temperature=0.7, mask=mask, causal=causal)
    ref = reference_sinkhorn(q, k, v, logits, block, 5, 0.7, mask, causal)
    real = torch.ones(b, n, dtype=torch.bool) if mask is None else mask
    sel = real[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[sel], ref[sel], atol=1e-10, rtol=1e-8)
    g = torch.randn_like(out) * sel
    grads = torch.autograd.grad((out * g).sum(), (q, k, v, logits))
    want = torch.autograd.grad((ref * g).sum(), (q, k, v, logits), allow_unused=True)
    for got, ref_g in zip(grads, want):
        torch.testing.assert_close(got, torch.zeros_like(got) if ref_g is None else ref_g, atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_awkward_size_equals_the_written_out_sorted_block_attention(causal):
    """N = 113 (8 blocks of 16, the last one 1 real position), D = 60, padding holes."""
    test_equals_the_written_out_sorted_block_attention(2, 2, 113, 60, 16, causal, "holes")


@pytest.mark.parametrize("pad", ["none", "tail"])
def test_sortcut_equals_the_written_out_truncated_attention(pad):
    q, k, v, logits = inputs(2, 2, 37, 8, 8, seed=1)
    mask = padding(pad, 2, 37)
    out = sinkhorn_attention(q, k, v, logits, block=8, iters=4, temperature=1.0, sortcut=2, mask=mask)
    ref = reference_sinkhorn(q, k, v, logits, 8, 4, 1.0, mask, sortcut=2)
    real = torch.ones(2, 37, dtype=torch.bool) if mask is None else mask
    torch.testing.assert_close(out[real[:, None].expand(2, 2, 37)], ref[real[:, None].expand(2, 2, 37)], atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("n,block", [(40, 8), (37, 5)])
def test_identity_permutation_is_block_local_attention(n, block):
    q, k, v, _ = inputs(2, 2, n, 16, block, seed=2)
    t = -(-n // block)
    logits = torch.eye(t, dtype=torch.float64).expand(2, 2, t, t) * 1e4
    out = sinkhorn_attention(q, k, v, logits, block=block, temperature=1.0)
    same_block = (torch.arange(n)[:, None] // block) == (torch.arange(n)[None, :] // block)
    want = torch.softmax((q @ k.transpose(-1, -2) / 4).masked_fill(~same_block, float("-inf")), -1) @ v
    torch.testing.assert_close(out, want, atol=1e-10, rtol=1e-9)


def test_balancing_makes_a_doubly_stochastic_matrix():
    logits = torch.randn(1, 1, 9, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    p = sinkhorn_permutation(logits, iters=200, temperature=0.5, allowed=torch.ones(1, 1, 9, 9, dtype=torch.bool))
    torch.testing.assert_close(p.sum(-1), torch.ones(1, 1, 9, dtype=torch.float64))
    torch.testing.assert_close(p.sum(-2), torch.ones(1, 1, 9, dtype=torch.float64))
    cold = sinkhorn_permutation(logits, iters=200, temperature=0.01, allowed=torch.ones(1, 1, 9, 9, dtype=torch.bool))
    assert cold.amax(-1).mean() > 0.95 > p.amax(-1).mean(), "low temperature approaches a hard permutation"


def test_sort_logits_are_the_sorting_network_on_block_means():
    g = torch.Generator().manual_seed(5)
    q, k = torch.randn(2, 1, 2, 10, 4, generator=g, dtype=torch.float64)
    w1, w2 = torch.randn(2, 2, 4, 4, generator=g, dtype=torch.float64)
    mask = torch.ones(1, 10, dtype=torch.bool)
    mask[0, 7:] = False
    for causal in (False, True):
        got = block_sort_logits(q, k, w1, w2, block=4, mask=mask, causal=causal)
        blocks = [[0, 1, 2, 3], [4, 5, 6]]  # block 2 (positions 8, 9 and internal padding) is all padding
        kbar = torch.stack([k[0, :, blk].mean(1) for blk in blocks] + [torch.zeros(2, 4, dtype=torch.float64)], 1)
        qbar = torch.stack([q[0, :, blk].mean(1) for blk in blocks] + [torch.zeros(2, 4, dtype=torch.float64)], 1)
        rows = torch.cat((torch.zeros(2, 1, 4, dtype=torch.float64), kbar[:, :2]), 1) if causal else qbar
        want = torch.relu(rows @ w1) @ w2 @ kbar.transpose(-1, -2) / 2
        torch.testing.assert_close(got[0], want)


def test_gumbel_noise_only_in_training():
    core = Sinkhorn(SinkhornConfig(block=4), heads=1, head_dim=8, causal=False, max_len=None).double()
    q, k, v, _ = inputs(1, 1, 16, 8, 4)
    core.eval()
    torch.testing.assert_close(core(q, k, v), core(q, k, v), atol=0, rtol=0)
    core.train()
    assert not torch.equal(core(q, k, v), core(q, k, v))


@pytest.mark.parametrize(
    "kwargs,match",
    [(dict(block=0), "block"), (dict(temperature=0.0), "temperature"), (dict(sortcut=1, causal=True), "SortCut"),
     (dict(iters=0), "iters"), (dict(logits=torch.zeros(1, 1, 2, 2)), "sort_logits must be")],
    ids=["block", "temperature", "sortcut-causal", "iters", "logits-shape"],
)
def test_errors(kwargs, match):
    q, k, v, logits = inputs(1, 1, 12, 8, 4)
    args = dict(block=4)
    logits = kwargs.pop("logits", logits)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        sinkhorn_attention(q, k, v, logits, **args)


def test_sortcut_causal_is_rejected_at_build():
    with pytest.raises(ValueError, match="SortCut"):
        Sinkhorn(SinkhornConfig(sortcut=2), heads=1, head_dim=8, causal=True, max_len=None)
