"""Patterns computed as disjoint parts in their own position orders: the parts must tile the pattern exactly."""

from __future__ import annotations

import pytest
import torch

from attnzoo.core.masks import materialize
from attnzoo.sparse.layout import build_layout
from attnzoo.sparse.sparse_transformer import sparse_transformer_parts, sparse_transformer_pattern
from attnzoo.sparse.strided import strided_parts, strided_pattern
from attnzoo.sparse.kernel import merge_by_lse

N = 50
CASES = [
    ("strided-s4", strided_parts(4, None, N), strided_pattern(4)),
    ("dilated-s3-w2", strided_parts(3, 2, N), strided_pattern(3, 2)),
    ("st-strided-l7", sparse_transformer_parts("strided", 7, 0, N), sparse_transformer_pattern("strided", 7, 0, N)),
    ("st-fixed-l8-c3", sparse_transformer_parts("fixed", 8, 3, N), sparse_transformer_pattern("fixed", 8, 3, N)),
]


def in_natural_order(dense: torch.Tensor, perm) -> torch.Tensor:
    """[N, N] in a part's order -> natural order: entry (p, q) belongs to (perm[p], perm[q])."""
    if perm is None:
        return dense
    out = torch.zeros_like(dense)
    out[perm[:, None], perm[None, :]] = dense
    return out


@pytest.mark.parametrize("name,parts,pattern", CASES, ids=[c[0] for c in CASES])
def test_parts_are_disjoint_and_cover_the_pattern(name, parts, pattern):
    pieces = [in_natural_order(materialize(p.pattern, N), p.perm).int() for p in parts]
    assert int(sum(pieces).max()) <= 1, "parts overlap: a pair would be counted twice"
    assert torch.equal(sum(pieces).bool(), materialize(pattern, N))
    causal = torch.ones(N, N, dtype=torch.bool).tril()
    for part in parts:  # each part's own notion of causality agrees with the natural one on its pairs
        mine = in_natural_order(materialize(part.pattern, N), part.perm)
        theirs = in_natural_order(materialize(part.causal, N), part.perm)
        assert torch.equal(mine & theirs, mine & causal)


@pytest.mark.parametrize("mode,summary,bound", [("strided", 0, 0.1), ("fixed", 4, 0.15)])
def test_sparse_transformer_touches_far_fewer_than_n_squared_pairs(mode, summary, bound):
    """strided: N·(2l + N/l) pairs; fixed: N·(l + N·c/l) pairs; with l = 64 at N = 4096 both are ~3-8% of N²."""
    n, stride = 4096, 64
    parts = sparse_transformer_parts(mode, stride, summary, n)
    touched = sum(build_layout(p.pattern, n, 64, 1, torch.device("cpu")).touched_pairs(1) for p in parts)
    assert touched < bound * n * n, f"{touched} pairs of {n * n}: each part should be block-sparse in its own order"


def test_kernel_lse_output_and_its_gradient():
    """return_lse gives log2 Σ_j exp(s_ij) of the visible keys, and gradients through it are right."""
    from attnzoo.core.masks import materialize
    from attnzoo.sparse.kernel import blocked_attention
    from attnzoo.sparse.local import local_pattern

    layout = build_layout(local_pattern(5), 40, 8, 2, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 40, 4, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = torch.ones(1, 40, dtype=torch.bool)
    mask[0, :3] = False
    scores = (q @ k.transpose(-1, -2)) * 0.4
    allowed = materialize(local_pattern(5), 40) & mask[0][None, :]
    want = torch.logsumexp(scores.masked_fill(~allowed, float("-inf")), -1) / torch.log(torch.tensor(2.0, dtype=torch.float64))
    _, lse = blocked_attention(q, k, v, layout, key_valid=mask, scale=0.4, dropout_p=0.0, return_lse=True)
    torch.testing.assert_close(lse, want)

    def f(q, k, v):
        out, lse = blocked_attention(q, k, v, layout, key_valid=mask, scale=0.4, dropout_p=0.0, return_lse=True)
        return out, torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))

    assert torch.autograd.gradcheck(f, (q, k, v))


def test_merge_by_lse_is_one_softmax_over_the_union():
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(3, 10, generator=gen, dtype=torch.float64)
    v = torch.randn(10, 4, generator=gen, dtype=torch.float64)
    split = [slice(0, 4), slice(4, 10)]
    outs = [torch.softmax(s[:, sl], -1) @ v[sl] for sl in split]
    lses = [torch.logsumexp(s[:, sl], -1) / torch.log(torch.tensor(2.0, dtype=torch.float64)) for sl in split]
    torch.testing.assert_close(merge_by_lse(outs, lses)[0], torch.softmax(s, -1) @ v)
    # A part that saw nothing (lse = -inf, output 0) changes nothing and yields finite gradients.
    empty_lse = torch.full((3,), float("-inf"), dtype=torch.float64, requires_grad=True)
    merged, _ = merge_by_lse(outs + [torch.zeros(3, 4, dtype=torch.float64)], lses + [empty_lse])
    torch.testing.assert_close(merged, torch.softmax(s, -1) @ v)
    merged.sum().backward()
    assert torch.isfinite(empty_lse.grad).all()
