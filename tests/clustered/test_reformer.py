"""Reformer LSH attention against a written-out reference: buckets by the angular-LSH formula,
chunk windows by explicit ranks, softmax over the union of the rounds' windows."""

from __future__ import annotations

import math

import pytest
import torch

import attnzoo.clustered.reformer as reformer_module
from attnzoo.clustered.reformer import Reformer, ReformerConfig, lsh_rotations, reformer_attention
from tests.clustered import padding


def reference_lsh(qk, v, rotations, bucket_size, mask=None, causal=False, scale=None):
    b, h, n, d = qk.shape
    scale = 1 / math.sqrt(d) if scale is None else scale
    buckets = -(-n // bucket_size)
    chunks = buckets
    real = torch.ones(b, n, dtype=torch.bool) if mask is None else mask
    allowed = torch.zeros(b, h, n, n, dtype=torch.bool)
    for bi in range(b):
        for hi in range(h):
            for r in range(rotations.shape[1]):
                if buckets == 1:
                    bucket = [0] * n
                else:
                    proj = qk[bi, hi] @ rotations[:, r, : -(-buckets // 2)].to(qk.dtype)
                    bucket = torch.cat((proj, -proj), -1)[:, :buckets].argmax(-1).tolist()
                reals = sorted((bucket[i], i) for i in range(n) if real[bi, i])
                chunk = {i: rank // bucket_size for rank, (_, i) in enumerate(reals)}
                for i in chunk:
                    if causal:  # the bucket_size latest of i's bucket up to i
                        for j in [j for j in chunk if j <= i and bucket[j] == bucket[i]][-bucket_size:]:
                            allowed[bi, hi, i, j] = True
                        continue
                    for j in chunk:
                        if chunk[j] == chunk[i] or (chunks > 1 and chunk[j] == (chunk[i] - 1) % chunks):
                            allowed[bi, hi, i, j] = True
    keys = qk / qk.norm(dim=-1, keepdim=True)
    scores = (qk @ keys.transpose(-1, -2)) * scale
    eye = torch.eye(n, dtype=torch.bool)
    others = allowed & ~eye
    alone = ~others.any(-1, keepdim=True)  # nothing but itself: attend to itself
    use = torch.where(alone, eye.expand_as(allowed), others)
    weights = torch.softmax(scores.masked_fill(~use, float("-inf")), dim=-1).nan_to_num(0.0)
    return weights @ v, use


def inputs(b, h, n, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    qk = torch.randn(b, h, n, d, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(b, h, n, d, generator=g, dtype=torch.float64, requires_grad=True)
    return qk, v


CASES = [
    # (B, H, N, D, bucket_size, n_hashes)
    (1, 1, 1, 8, 4, 2),
    (2, 2, 7, 8, 2, 3),
    (2, 1, 45, 60, 8, 4),
    (1, 2, 113, 16, 16, 2),
    (1, 1, 64, 8, 8, 1),
    (2, 1, 33, 8, 16, 3),  # three chunks, odd bucket count
]


@pytest.mark.parametrize("pad", ["none", "tail", "holes"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("b,h,n,d,bucket_size,n_hashes", CASES, ids=lambda c: str(c))
def test_equals_softmax_over_the_union_of_round_windows(b, h, n, d, bucket_size, n_hashes, causal, pad):
    qk, v = inputs(b, h, n, d)
    mask = padding(pad, b, n)
    rotations = lsh_rotations(d, n_hashes, -(-n // bucket_size), generator=torch.Generator().manual_seed(3))
    out = reformer_attention(qk, v, rotations, bucket_size=bucket_size, mask=mask, causal=causal)
    ref, _ = reference_lsh(qk, v, rotations, bucket_size, mask, causal)
    real = torch.ones(b, n, dtype=torch.bool) if mask is None else mask
    sel = real[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[sel], ref[sel], atol=1e-10, rtol=1e-9)
    g = torch.randn_like(out) * sel
    grads = torch.autograd.grad((out * g).sum(), (qk, v))
    ref_grads = torch.autograd.grad((ref * g).sum(), (qk, v))
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-8)


# A head's working tensor here: 3 rounds x 8 chunks x 4 queries x 8 keys = 768 elements.
@pytest.mark.parametrize("slice_elements", [1, 3 * 768], ids=["one head", "one sequence"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_heads_run_in_groups_when_all_at_once_would_outgrow_the_slice(monkeypatch, causal, slice_elements):
    monkeypatch.setattr(reformer_module, "SLICE_ELEMENTS", slice_elements)
    b, h, n, d, bucket_size, n_hashes = 2, 3, 29, 8, 4, 3
    qk, v = inputs(b, h, n, d, seed=5)
    mask = padding("tail", b, n)
    mask[0, 1::3] = False  # the two sequences padded differently
    rotations = lsh_rotations(d, n_hashes, -(-n // bucket_size), generator=torch.Generator().manual_seed(4))
    out = reformer_attention(qk, v, rotations, bucket_size=bucket_size, mask=mask, causal=causal)
    ref, _ = reference_lsh(qk, v, rotations, bucket_size, mask, causal)
    sel = mask[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[sel], ref[sel], atol=1e-10, rtol=1e-9)
    g = torch.randn_like(out) * sel
    for got, want in zip(torch.autograd.grad((out * g).sum(), (qk, v)), torch.autograd.grad((ref * g).sum(), (qk, v))):
        torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-8)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_one_bucket_is_full_shared_qk_attention_without_self(causal):
    b, h, n, d = 2, 2, 37, 16
    qk, v = inputs(b, h, n, d, seed=1)
    rotations = lsh_rotations(d, 3, 1)
    out = reformer_attention(qk, v, rotations, bucket_size=64, causal=causal)
    keys = qk / qk.norm(dim=-1, keepdim=True)
    scores = qk @ keys.transpose(-1, -2) / math.sqrt(d)
    hide = torch.eye(n, dtype=torch.bool)
    if causal:
        hide = hide | torch.ones(n, n, dtype=torch.bool).triu(1)
    want = torch.softmax(scores.masked_fill(hide, float("-inf")), -1).nan_to_num(0.0) @ v
    torch.testing.assert_close(out[:, :, 1:], want[:, :, 1:], atol=1e-10, rtol=1e-9)
    # the first token sees only itself when causal, every other token otherwise
    torch.testing.assert_close(out[:, :, 0], v[:, :, 0] if causal else want[:, :, 0], atol=1e-10, rtol=1e-9)


def test_more_hash_rounds_see_more_keys_and_approach_full_attention():
    torch.manual_seed(0)
    b, h, n, d = 1, 4, 256, 32
    qk, v = inputs(b, h, n, d, seed=2)
    qk = qk.detach() * 2
    keys = qk / qk.norm(dim=-1, keepdim=True)
    full = torch.softmax((qk @ keys.transpose(-1, -2) / math.sqrt(d)).masked_fill(torch.eye(n, dtype=torch.bool), float("-inf")), -1) @ v
    errors = []
    for rounds in (1, 2, 8):
        rot = lsh_rotations(d, rounds, n // 32, generator=torch.Generator().manual_seed(rounds))
        out = reformer_attention(qk, v.detach(), rot, bucket_size=32)
        errors.append(((out - full).norm() / full.norm()).item())
    assert errors[0] > errors[1] > errors[2], errors


def test_a_single_token_and_a_lonely_token_attend_to_themselves():
    qk, v = inputs(1, 1, 1, 8)
    out = reformer_attention(qk, v, lsh_rotations(8, 2, 1))
    torch.testing.assert_close(out, v)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_within_twice_the_naive_error(dtype):
    qk, v = inputs(2, 2, 50, 16)
    qk, v = qk.detach(), v.detach()
    rot = lsh_rotations(16, 2, 7, generator=torch.Generator().manual_seed(0))
    want, use = reference_lsh(qk, v, rot, 8)
    got = reformer_attention(qk.to(dtype), v.to(dtype), rot, bucket_size=8)
    keys = qk.to(dtype) / qk.to(dtype).norm(dim=-1, keepdim=True)
    naive = torch.softmax((qk.to(dtype) @ keys.transpose(-1, -2) / 4).masked_fill(~use, float("-inf")), -1) @ v.to(dtype)
    assert got.dtype == dtype
    assert (got.double() - want).abs().max() <= 2 * (naive.double() - want).abs().max() + 1e-3


def test_module_is_deterministic_under_its_seed_and_ignores_the_key_projection():
    config = ReformerConfig(bucket_size=4, n_hashes=2, seed=7)
    a, b = (Reformer(config, heads=2, head_dim=8, causal=False, max_len=None) for _ in range(2))
    qk, v = inputs(1, 2, 19, 8)
    k = torch.randn_like(qk)
    torch.testing.assert_close(a(qk, k, v), b(qk, torch.zeros_like(k), v), atol=0, rtol=0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(bucket_size=0), "bucket_size"),
        (dict(rotations=torch.randn(5, 2, 4)), "rotations must be"),
        (dict(rotations=torch.randn(8, 2, 1)), "rotations must be"),  # 10 buckets need 5 columns
        (dict(dropout_p=1.5), "dropout_p"),
    ],
    ids=["bucket_size", "rotations-dim", "rotations-too-few", "dropout"],
)
def test_errors(kwargs, match):
    qk, v = inputs(1, 1, 20, 8)
    args = dict(rotations=lsh_rotations(8, 2, 10), bucket_size=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        reformer_attention(qk, v, **args)


def test_implied_weights_rows_are_distributions_over_visible_keys():
    core = Reformer(ReformerConfig(bucket_size=4, n_hashes=2, seed=1), heads=2, head_dim=8, causal=True, max_len=None).double()
    qk, _ = inputs(1, 2, 21, 8)
    mask = torch.ones(1, 21, dtype=torch.bool)
    mask[0, 17:] = False
    w = core.implied_weights(qk.detach(), qk.detach(), mask)
    torch.testing.assert_close(w.sum(-1)[0, :, :17], torch.ones(2, 17, dtype=torch.float64))
    assert w[0, :, :17, 17:].abs().max() == 0 and w[0, :, :17].triu(1).abs().max() == 0  # real rows
    pairs = core.computed_pairs(24)
    assert pairs.shape == (2, 24, 24) and not pairs.triu(1).any() and pairs.float().mean() < 0.5


def test_the_layer_makes_one_projection_for_queries_and_keys():
    import attnzoo
    from einops import rearrange

    layer = attnzoo.build("reformer", dim=16, heads=2, bucket_size=4, n_hashes=2, seed=3).double()
    assert layer.qkv.out_features == 2 * 16  # shared QK: no separate key projection
    x = torch.randn(2, 13, 16, dtype=torch.float64)
    qk, v = rearrange(layer.qkv(x), "b n (two h d) -> two b h n d", two=2, h=2)
    want = layer.out(rearrange(reformer_attention(qk, v, layer.core.rotations(13, x.device), bucket_size=4), "b h n d -> b n (h d)"))
    torch.testing.assert_close(layer(x), want)
