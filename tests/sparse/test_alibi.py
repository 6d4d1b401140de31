"""ALiBi on the sparse kernel: −m_h·|i − j| joins the scores of every fixed pattern, on every path
(band, extra columns, gathered groups, permuted parts, per-head patterns, the dense reference and
compiled FlexAttention), forward and backward, against the dense softmax written out here."""

from __future__ import annotations

import math

import pytest
import torch

import attnzoo
from attnzoo.functional import local_attention, sparse_attention
from attnzoo.positional import alibi_slopes
from attnzoo.sparse.local import local_pattern
from tests.test_registry import SMALL

PATTERNS = ["local", "strided", "global", "random", "sparse_transformer", "longformer", "bigbird", "heads"]
H = 4


def written_out(q, k, v, allowed, slopes):
    """softmax(q kᵀ/√d − m_h |i − j|) over the allowed pairs, a row with no allowed key giving 0."""
    n = q.shape[2]
    i = torch.arange(n, dtype=q.dtype)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) - slopes.to(q.dtype)[:, None, None] * (i[:, None] - i[None, :]).abs()
    scores = scores.masked_fill(~allowed, float("-inf"))
    weights = torch.nan_to_num(torch.softmax(scores, dim=-1))
    return weights @ v


def qkv(b, n, d, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, H, n, d, dtype=dtype, generator=g).requires_grad_(True) for _ in range(3)]


@pytest.mark.parametrize("backend", ["blocked", "dense"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("name", PATTERNS)
def test_every_pattern_layer_adds_minus_slope_times_distance(name, causal, backend):
    layer = attnzoo.build(name, dim=H * 8, heads=H, causal=causal, position="alibi", **{**SMALL[name], "backend": backend}).double()
    n = 45
    q, k, v = qkv(2, n, 8)
    mask = torch.ones(2, n, dtype=torch.bool)
    mask[0, 5:9], mask[1, 38:] = False, False
    out = layer.core(q, k, v, mask=mask, position=layer.position)
    allowed = layer.core.computed_pairs(n)[None] & mask[:, None, None, :]  # the pattern, causal applied
    want = written_out(q, k, v, allowed, alibi_slopes(H))
    real = mask[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[real], want[real], atol=1e-12, rtol=1e-10)
    g = torch.randn_like(out) * real
    for got, ref in zip(torch.autograd.grad((out * g).sum(), (q, k, v)), torch.autograd.grad((want * g).sum(), (q, k, v))):
        torch.testing.assert_close(got, ref, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("name", ["local", "strided", "sparse_transformer", "longformer", "bigbird"])
def test_awkward_size_in_float32(name):
    """N = 113, D = 60, blocks of 16: several chunks, ragged last block, parts and groups in float32."""
    layer = attnzoo.build(name, dim=H * 60, heads=H, position="alibi", **{**SMALL[name], "block": 16})
    q, k, v = (t.detach() for t in qkv(1, 113, 60, dtype=torch.float32, seed=1))
    with torch.no_grad():
        out = layer.core(q, k, v, position=layer.position)
    want = written_out(q.double(), k.double(), v.double(), layer.core.computed_pairs(113)[None], alibi_slopes(H))
    torch.testing.assert_close(out.double(), want, atol=2e-6, rtol=1e-5)


def test_functions_take_the_slopes_and_check_them():
    q, k, v = qkv(1, 30, 8)
    slopes = torch.tensor([0.5, 0.25, 0.0, 2.0], dtype=torch.float64)
    i = torch.arange(30)
    allowed = ((i[:, None] - i[None, :]).abs() <= 3)[None, None]
    want = written_out(q, k, v, allowed, slopes)
    torch.testing.assert_close(local_attention(q, k, v, window=3, block=8, alibi_slopes=slopes), want, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(sparse_attention(q, k, v, local_pattern(3), block=8, alibi_slopes=slopes), want, atol=1e-12, rtol=1e-10)
    with pytest.raises(ValueError, match=r"alibi_slopes must be a float tensor \[H=4\]"):
        local_attention(q, k, v, window=3, alibi_slopes=slopes[:3])
    with pytest.raises(ValueError, match="alibi_slopes must be finite"):
        local_attention(q, k, v, window=3, alibi_slopes=torch.full((4,), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match="pass them detached"):
        local_attention(q, k, v, window=3, alibi_slopes=slopes.clone().requires_grad_(True))


@pytest.mark.parametrize("backend", ["blocked", "dense"])
def test_half_precision_counts_distances_past_256(backend):
    """bf16 holds integers only to 256: the distances must still be exact at N = 300."""
    q, k, v = (t.detach() for t in qkv(1, 300, 8, seed=3))
    slopes = torch.tensor([0.5, 0.25, 0.125, 1.0], dtype=torch.float64)
    i = torch.arange(300)
    want = written_out(q, k, v, ((i[:, None] - i[None, :]).abs() <= 3)[None, None], slopes)
    got = local_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), window=3, block=32, backend=backend, alibi_slopes=slopes)
    torch.testing.assert_close(got.double(), want, atol=3e-2, rtol=3e-2)


def test_heads_attention_checks_the_slopes_before_splitting_them():
    from attnzoo.sparse.heads import heads_attention

    q, k, v = qkv(1, 20, 8)
    patterns = (local_pattern(2), local_pattern(2), local_pattern(4), local_pattern(4))
    for bad in (torch.ones(5, dtype=torch.float64), torch.ones(3, dtype=torch.float64)):
        with pytest.raises(ValueError, match=r"alibi_slopes must be a float tensor \[H=4\]"):
            heads_attention(q, k, v, patterns=patterns, alibi_slopes=bad)


def test_relative_stays_refused_and_learned_tokens_say_why():
    with pytest.raises(ValueError, match="local cannot honour relative"):
        attnzoo.build("local", dim=32, heads=4, position="relative")
    layer = attnzoo.build("global", dim=32, heads=4, position="alibi", global_idx=(0,), num_tokens=2, window=2, block=8)
    with pytest.raises(ValueError, match="learned global tokens have no position"):
        layer(torch.randn(1, 20, 32))


def test_compiled_flex_forward_on_cpu_takes_the_slopes_as_a_score_mod():
    """One compile (~40 s on 2 cores), forward only (FlexAttention has no CPU backward)."""
    q, k, v = (t.detach().float() for t in qkv(1, 256, 64, seed=2))
    slopes = alibi_slopes(H).float()
    want = local_attention(q, k, v, window=40, backend="blocked", block=128, alibi_slopes=slopes)
    got = local_attention(q, k, v, window=40, backend="flex", block=128, alibi_slopes=slopes)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=2e-5)
