"""Block layouts: which (query block, key block) pairs a pattern touches, built from its block predicate.

r query blocks of a group, s key-block slots per query block (the same count within a group),
i query position inside a block, j key position inside the gathered slots (s · block of them).

A layout is computed once per (pattern, N, block, heads, device, dtype) and cached: the block
predicate is evaluated on the (N/block)² grid in row chunks, then only the allowed blocks are kept.
Query blocks are grouped by how many key blocks they touch, so a group is a dense
[r, s] table of key-block indices with no padding slots and no wasted work, whatever the pattern
(a global row touching every block and a local row touching nine sit in different groups).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from attnzoo.core.masks import Pattern, _check_head_count

_GRID_ROWS = 256  # query-block rows of the block grid evaluated at once (bounds layout-building memory)


@dataclass(frozen=True, eq=False)
class BlockGroup:
    """Query blocks that touch the same number of key blocks."""

    rows: Tensor  # [R] query-block indices
    cols: Tensor  # [R, S] key-block indices, ascending
    bias: Tensor  # [R, block, S * block]: 0 where the pair is allowed, -inf where it is not
    kv_pos: Tensor  # [R, S * block] key positions of the gathered slots


@dataclass(frozen=True, eq=False)
class HeadLayout:
    """The layout shared by ``heads`` (None: every head)."""

    heads: tuple[int, ...] | None
    groups: tuple[BlockGroup, ...]
    any_blocks: Tensor  # [n_blocks, n_blocks] bool, block (qb, kb) holds an allowed pair (for FlexAttention / pictures)
    full_blocks: Tensor  # [n_blocks, n_blocks] bool, every pair of block (qb, kb) is allowed


@dataclass(frozen=True, eq=False)
class BlockLayout:
    n: int
    block: int
    n_blocks: int
    heads: tuple[HeadLayout, ...]

    def touched_pairs(self, num_heads: int) -> int:
        """(query, key) pairs the kernel computes, summed over heads (block granularity)."""
        total = 0
        for hl in self.heads:
            per_head = sum(g.cols.numel() for g in hl.groups) * self.block * self.block
            total += per_head * (num_heads if hl.heads is None else len(hl.heads))
        return total


@functools.lru_cache(maxsize=64)
def build_layout(pattern: Pattern, n: int, block: int, num_heads: int, device: torch.device, dtype: torch.dtype) -> BlockLayout:
    """Layout of ``pattern`` at length ``n`` (cached; patterns are built by cached factories)."""
    _check_head_count(pattern, num_heads)
    if pattern.heads is None:
        heads = (_head_layout(pattern, None, 0, n, block, device, dtype),)
    else:
        # Heads with the same pattern object share one layout.
        by_pattern: dict[int, list[int]] = {}
        for h, p in enumerate(pattern.heads):
            by_pattern.setdefault(id(p), []).append(h)
        heads = tuple(
            _head_layout(pattern.heads[hs[0]], tuple(hs), hs[0], n, block, device, dtype) for hs in by_pattern.values()
        )
    return BlockLayout(n=n, block=block, n_blocks=-(-n // block), heads=heads)


def _head_layout(pattern: Pattern, heads, h: int, n: int, block: int, device, dtype) -> HeadLayout:
    n_blocks = -(-n // block)
    lo = torch.arange(n_blocks, device=device) * block
    hi = torch.clamp(lo + block - 1, max=n - 1)
    any_rows, full_rows = [], []
    for r0 in range(0, n_blocks, _GRID_ROWS):
        r1 = min(r0 + _GRID_ROWS, n_blocks)
        a, f = pattern.block_mod(h, lo[r0:r1, None], hi[r0:r1, None], lo[None, :], hi[None, :])
        any_rows.append(a.expand(r1 - r0, n_blocks))
        full_rows.append(f.expand(r1 - r0, n_blocks) & a.expand(r1 - r0, n_blocks))
    any_blocks, full_blocks = torch.cat(any_rows), torch.cat(full_rows)

    counts = any_blocks.sum(dim=1)
    groups = []
    for count in torch.unique(counts).tolist():
        if count == 0:
            continue  # query blocks with no key at all: output stays zero
        rows = torch.nonzero(counts == count).flatten()
        cols = torch.nonzero(any_blocks[rows])[:, 1].reshape(len(rows), count)
        groups.append(_group(pattern, h, rows, cols, n, block, dtype))
    return HeadLayout(heads, tuple(groups), any_blocks, full_blocks)


def _group(pattern: Pattern, h: int, rows: Tensor, cols: Tensor, n: int, block: int, dtype) -> BlockGroup:
    offsets = torch.arange(block, device=rows.device)
    q_pos = rows[:, None] * block + offsets  # [R, block]
    kv_pos = (cols[:, :, None] * block + offsets).flatten(1)  # [R, S * block]
    # Positions past N (the last block's padding) are clamped for table-based predicates, then masked.
    q_in, kv_in = q_pos.clamp(max=n - 1), kv_pos.clamp(max=n - 1)
    allowed = pattern.mask_mod(0, h, q_in[:, :, None], kv_in[:, None, :]) & (kv_pos < n)[:, None, :]
    bias = torch.zeros(allowed.shape, dtype=dtype, device=rows.device).masked_fill_(~allowed, float("-inf"))
    return BlockGroup(rows=rows, cols=cols, bias=bias, kv_pos=kv_pos)
