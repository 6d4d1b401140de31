"""Pattern predicates against definitions written independently from the papers, and block predicates
against the dense predicate (any must never be missed, all must never be over-claimed)."""

from __future__ import annotations

import itertools

import pytest
import torch

from attnzoo.core.masks import (
    and_masks,
    block_table,
    causal,
    difference_band,
    materialize,
    or_masks,
    per_head,
    position_columns,
    position_rows,
    residue,
    same_chunk,
)
from attnzoo.sparse.bigbird import bigbird_pattern
from attnzoo.sparse.global_tokens import global_pattern
from attnzoo.sparse.local import local_pattern
from attnzoo.sparse.longformer import longformer_pattern
from attnzoo.sparse.random import random_pattern
from attnzoo.sparse.sparse_transformer import sparse_transformer_pattern
from attnzoo.sparse.strided import strided_pattern


def grid(n, rule):
    return torch.tensor([[bool(rule(i, j)) for j in range(n)] for i in range(n)])


N = 37
G = (0, 5, 36)
SUMMARY = {j for j in range(N) if j % 8 >= 6}

# (id, pattern, independent rule(i, j)) — rules written from the papers' definitions.
PATTERNS = [
    ("local-w3", local_pattern(3), lambda i, j: abs(i - j) <= 3),
    ("local-w0", local_pattern(0), lambda i, j: i == j),
    ("local-w100", local_pattern(100), lambda i, j: True),
    ("strided-s4", strided_pattern(4), lambda i, j: (i - j) % 4 == 0),
    ("dilated-s3-w2", strided_pattern(3, 2), lambda i, j: (i - j) % 3 == 0 and abs(i - j) <= 6),
    ("global", global_pattern(G, N, 1), lambda i, j: i in G or j in G or abs(i - j) <= 1),
    ("st-strided", sparse_transformer_pattern("strided", 6, 0, N), lambda i, j: abs(i - j) < 6 or (i - j) % 6 == 0),
    ("st-fixed", sparse_transformer_pattern("fixed", 8, 2, N), lambda i, j: i // 8 == j // 8 or j in SUMMARY),
    ("longformer", longformer_pattern(2, (3,), (0,), N, 1), lambda i, j: i == 0 or j == 0 or ((i - j) % 3 == 0 and abs(i - j) <= 6)),
    ("causal", causal, lambda i, j: j <= i),
]


@pytest.mark.parametrize("name,pattern,rule", PATTERNS, ids=[p[0] for p in PATTERNS])
def test_pattern_matches_its_definition(name, pattern, rule):
    assert torch.equal(materialize(pattern, N), grid(N, rule))


def test_longformer_dilation_is_per_head():
    pattern = longformer_pattern(2, (1, 2), (), N, 4)
    for h, d in enumerate((1, 2, 1, 2)):
        assert torch.equal(materialize(pattern, N, h=h), grid(N, lambda i, j: (i - j) % d == 0 and abs(i - j) <= 2 * d))


def test_bigbird_pattern_has_window_global_and_exactly_r_random_blocks():
    n, bs, r = 20 * 8, 8, 3
    table = materialize(bigbird_pattern(n, bs, 3, 2, r, seed=7), n)[::bs, ::bs]  # one cell per block pair
    nb = n // bs
    for a in range(nb):
        fixed = {c for c in range(nb) if abs(a - c) <= 1 or a < 2 or c < 2}
        assert all(table[a, c] for c in fixed)
        extra = {c for c in range(nb) if table[a, c]} - fixed
        assert len(extra) == (0 if a < 2 else r), f"block row {a}: {sorted(extra)}"


def test_bigbird_causal_draws_random_blocks_from_the_past():
    n, bs = 16 * 4, 4
    table = materialize(bigbird_pattern(n, bs, 3, 1, 2, seed=3, causal=True), n)[::bs, ::bs]
    nb = n // bs
    for a in range(nb):
        fixed = {c for c in range(nb) if abs(a - c) <= 1 or a < 1 or c < 1}
        extra = {c for c in range(nb) if table[a, c]} - fixed
        assert all(c < a for c in extra)
        assert len(extra) == min(2, max(0, a - 2))  # candidates: blocks 1 .. a-2


def test_random_pattern_is_seeded():
    a = materialize(random_pattern(64, 2, 8, seed=1), 64)
    assert torch.equal(a, materialize(random_pattern(64, 2, 8, seed=1), 64))
    assert not torch.equal(a, materialize(random_pattern(64, 2, 8, seed=2), 64))
    assert torch.equal(a[::8, ::8].sum(1), torch.full((8,), 2))


def test_combinators_are_union_and_intersection():
    a, b = local_pattern(2), strided_pattern(5)
    da, db = materialize(a, N), materialize(b, N)
    assert torch.equal(materialize(or_masks(a, b), N), da | db)
    assert torch.equal(materialize(and_masks(a, b), N), da & db)
    heads = per_head((a, b))
    assert torch.equal(materialize(heads, N, h=0), da) and torch.equal(materialize(heads, N, h=1), db)


# Block predicates: for every block of every blocking, any/all must agree with the dense predicate
# (any may over-report, all may under-report; never the other way).
TABLE = torch.rand(6, 6, generator=torch.Generator().manual_seed(0)) > 0.5
BLOCK_PATTERNS = PATTERNS + [
    ("band(-2,5)", difference_band(-2, 5, "b"), None),
    ("rows", position_rows(torch.arange(N) % 7 == 3, "r"), None),
    ("cols", position_columns(torch.arange(N) % 5 == 1, "c"), None),
    ("table", block_table(TABLE, 7, "t"), None),
    ("chunk", same_chunk(6, "ch"), None),
    ("residue-bounded", residue(4, 9, "res"), None),
    ("and", and_masks(local_pattern(5), strided_pattern(2)), None),
    ("bigbird", bigbird_pattern(N, 4, 3, 1, 2, 0), None),
    ("random", random_pattern(N, 2, 5, 0), None),
]


@pytest.mark.parametrize("block", [1, 3, 8, 40])
@pytest.mark.parametrize("name,pattern,_", BLOCK_PATTERNS, ids=[p[0] for p in BLOCK_PATTERNS])
def test_block_predicate_is_sound(name, pattern, _, block):
    dense = materialize(pattern, N)
    nb = -(-N // block)
    for a, c in itertools.product(range(nb), range(nb)):
        q0, q1 = a * block, min((a + 1) * block, N) - 1
        k0, k1 = c * block, min((c + 1) * block, N) - 1
        tile = dense[q0 : q1 + 1, k0 : k1 + 1]
        any_, all_ = pattern.block_mod(0, torch.tensor(q0), torch.tensor(q1), torch.tensor(k0), torch.tensor(k1))
        assert bool(any_) or not bool(tile.any()), f"block ({a}, {c}) holds allowed pairs but any=False"
        assert not bool(all_) or bool(tile.all()), f"block ({a}, {c}) claims all=True but has forbidden pairs"


@pytest.mark.parametrize("name,pattern,_", PATTERNS[:6], ids=[p[0] for p in PATTERNS[:6]])
def test_block_predicate_is_tight_for_simple_patterns(name, pattern, _):
    """For bands, strides and position sets, any/all are exact, so the kernel touches no needless block."""
    dense, block = materialize(pattern, N), 4
    nb = -(-N // block)
    for a, c in itertools.product(range(nb), range(nb)):
        q0, q1, k0, k1 = a * block, min((a + 1) * block, N) - 1, c * block, min((c + 1) * block, N) - 1
        tile = dense[q0 : q1 + 1, k0 : k1 + 1]
        any_, _all = pattern.block_mod(0, torch.tensor(q0), torch.tensor(q1), torch.tensor(k0), torch.tensor(k1))
        assert bool(any_) == bool(tile.any())
