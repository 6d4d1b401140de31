"""Patterns computed as disjoint parts in their own position orders: the parts must tile the pattern exactly."""

from __future__ import annotations

import pytest
import torch

from attnzoo.core.masks import materialize
from attnzoo.sparse.layout import build_layout
from attnzoo.sparse.sparse_transformer import sparse_transformer_parts, sparse_transformer_pattern
from attnzoo.sparse.strided import strided_parts, strided_pattern
from attnzoo.sparse.union import merge_by_lse

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


def test_sparse_transformer_touches_about_n_sqrt_n_pairs():
    n, stride = 4096, 64
    touched = sum(
        build_layout(p.pattern, n, 64, 1, torch.device("cpu")).touched_pairs(1) for p in sparse_transformer_parts("strided", stride, 0, n)
    )
    assert touched < 0.1 * n * n, f"{touched} pairs of {n * n}: the stride part should be block-sparse in residue order"


def test_merge_by_lse_is_one_softmax_over_the_union():
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(3, 10, generator=gen, dtype=torch.float64)
    v = torch.randn(10, 4, generator=gen, dtype=torch.float64)
    split = [slice(0, 4), slice(4, 10)]
    outs = [torch.softmax(s[:, sl], -1) @ v[sl] for sl in split]
    lses = [torch.logsumexp(s[:, sl], -1) / torch.log(torch.tensor(2.0, dtype=torch.float64)) for sl in split]
    torch.testing.assert_close(merge_by_lse(outs, lses), torch.softmax(s, -1) @ v)
    # A part that saw nothing (lse = -inf, output 0) changes nothing and yields finite gradients.
    empty_lse = torch.full((3,), float("-inf"), dtype=torch.float64, requires_grad=True)
    merged = merge_by_lse(outs + [torch.zeros(3, 4, dtype=torch.float64)], lses + [empty_lse])
    torch.testing.assert_close(merged, torch.softmax(s, -1) @ v)
    merged.sum().backward()
    assert torch.isfinite(empty_lse.grad).all()
