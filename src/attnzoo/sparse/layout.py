"""Block layouts: which (query block, key block) pairs a pattern touches, built from its block predicate.

r query blocks, s key-block slots, i query position inside a block, j key position inside the
gathered slots (s · block of them), o block offset (key block - query block).

A layout is computed once per (pattern, N, block, heads, device) and cached. The block predicate
is evaluated on the (N/block)² grid in row chunks (cheap comparisons, never N² predicate calls);
the allowed blocks are then split in two parts the kernel treats differently:

- the **band**: the widest run of block offsets o ∋ 0 such that every query block r touches key
  block r + o (sliding windows, BigBird's window blocks, the diagonal). The kernel reads it as a
  strided window over K and V, without copying.
- the **rest**, grouped by how many key blocks a query block touches, so each group is a dense
  [r, s] table of key-block indices with no padding slots (a global row touching every block and
  a row with three random blocks sit in different groups). The kernel gathers these.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from attnzoo.core.masks import Pattern, _check_head_count

_GRID_ROWS = 256  # query-block rows of the block grid evaluated at once (bounds layout-building memory)
BAND_ELEMENTS = 1 << 21  # scores per band chunk and (batch, head): 8 MB in float32
# Partial-block masks are stored while they fit this budget per head layout; past it (patterns that touch
# ~every block, e.g. unbounded strides) they are recomputed from mask_mod per chunk, keeping memory linear.
FORBID_BYTES = 256 << 20
EXTRA_KEYS = 512  # shared key columns up to this many are folded into the band (one softmax, no merge)


@dataclass(frozen=True, eq=False)
class Mask:
    """Where to get a partial-block mask: stored, or recomputed from the pattern (when storing would not fit)."""

    pattern: Pattern
    h: int
    n: int
    stored: Tensor | None = None  # [R, block, L] bool, True = forbidden

    def forbid(self, q_pos: Tensor, kv_pos: Tensor, rows: slice | None = None) -> Tensor:
        """[R, block, L] bool for q_pos [R, block], kv_pos [R, L] (``rows`` selects from the stored mask)."""
        if self.stored is not None:
            return self.stored if rows is None else self.stored[rows]
        return ~_allowed(self.pattern, self.h, q_pos, kv_pos, self.n)


@dataclass(frozen=True, eq=False)
class BandChunk:
    """Query blocks r0..r1-1 of the band; ``mask`` covers only the band slots that are partial here."""

    r0: int
    r1: int
    slots: tuple[int, ...]  # band slots (0..width-1) holding a forbidden pair for some row of the chunk
    mask: Mask | None  # None when every slot is full
    kv_pos: Tensor | None  # [r1 - r0, len(slots) · block] key positions of those slots


@dataclass(frozen=True, eq=False)
class Extras:
    """A few key positions every band row may also see (global columns), scored beside the band window."""

    pos: Tensor  # [X] key positions
    forbid: Tensor  # [n_blocks, block, X] bool, True = forbidden for that query


@dataclass(frozen=True, eq=False)
class Band:
    lo: int  # first block offset (<= 0); the band is offsets lo .. lo + width - 1
    width: int
    chunks: tuple[BandChunk, ...]
    extras: Extras | None = None


@dataclass(frozen=True, eq=False)
class BlockGroup:
    """Query blocks outside the band that touch the same number of further key blocks."""

    rows: Tensor  # [R] query-block indices
    cols: Tensor  # [R, S] key-block indices
    mask: Mask | None  # forbidden pairs of the gathered slots; None if every pair is allowed
    kv_pos: Tensor  # [R, S · block] key positions of the gathered slots
    shared: bool  # every row touches the same key blocks (global columns): one matmul over all rows

    def q_pos(self, chunk: slice, block: int) -> Tensor:
        return self.rows[chunk][:, None] * block + torch.arange(block, device=self.rows.device)


@dataclass(frozen=True, eq=False)
class HeadLayout:
    """The layout shared by ``heads`` (None: every head)."""

    heads: tuple[int, ...] | None
    band: Band | None
    groups: tuple[BlockGroup, ...]
    any_blocks: Tensor  # [n_blocks, n_blocks] bool: block (qb, kb) holds an allowed pair
    full_blocks: Tensor  # [n_blocks, n_blocks] bool: every pair of block (qb, kb) is allowed


@dataclass(frozen=True, eq=False)
class BlockLayout:
    n: int
    block: int
    n_blocks: int
    heads: tuple[HeadLayout, ...]

    def touched_pairs(self, num_heads: int) -> int:
        """(query, key) pairs the kernel computes, summed over heads (at block granularity)."""
        total = 0
        for hl in self.heads:
            pairs = sum(g.cols.numel() for g in hl.groups) * self.block * self.block
            if hl.band is not None:
                pairs += self.n_blocks * hl.band.width * self.block * self.block
                if hl.band.extras is not None:
                    pairs += self.n_blocks * self.block * len(hl.band.extras.pos)
            total += pairs * (num_heads if hl.heads is None else len(hl.heads))
        return total

    def allowed_block_pairs(self, num_heads: int) -> int:
        """(query, key) pairs in blocks holding an allowed pair, summed over heads: the FLOP-floor count."""
        return sum(
            int(hl.any_blocks.sum()) * self.block * self.block * (num_heads if hl.heads is None else len(hl.heads))
            for hl in self.heads
        )


@functools.lru_cache(maxsize=16)
def build_layout(pattern: Pattern, n: int, block: int, num_heads: int, device: torch.device) -> BlockLayout:
    """Layout of ``pattern`` at length ``n`` (cached; patterns come from cached factories)."""
    _check_head_count(pattern, num_heads)
    if pattern.heads is None:
        heads = (_head_layout(pattern, None, 0, n, block, device),)
    else:
        # Heads with the same pattern object share one layout.
        by_pattern: dict[int, list[int]] = {}
        for h, p in enumerate(pattern.heads):
            by_pattern.setdefault(id(p), []).append(h)
        heads = tuple(_head_layout(pattern.heads[hs[0]], tuple(hs), hs[0], n, block, device) for hs in by_pattern.values())
    return BlockLayout(n=n, block=block, n_blocks=-(-n // block), heads=heads)


def _head_layout(pattern: Pattern, heads, h: int, n: int, block: int, device) -> HeadLayout:
    nb = -(-n // block)
    any_blocks, full_blocks = _block_grid(pattern, h, n, block, device)
    band = _band(any_blocks)
    rest = any_blocks.clone()
    if band is not None:
        r = torch.arange(nb, device=device)
        for o in range(band[0], band[0] + band[1]):
            ok = (r + o >= 0) & (r + o < nb)
            rest[r[ok], r[ok] + o] = False
    # Store partial-block masks only if they fit the budget (one byte per (query, key) pair of partial blocks).
    partial_pairs = int((any_blocks & ~full_blocks).sum()) * block * block
    store = partial_pairs <= FORBID_BYTES
    counts = rest.sum(dim=1)
    groups = []
    for count in torch.unique(counts).tolist():
        if count == 0:
            continue  # no further key blocks: the band (or nothing) covers these rows
        rows = torch.nonzero(counts == count).flatten()
        cols = torch.nonzero(rest[rows])[:, 1].reshape(len(rows), count)
        groups.append(_group(pattern, h, rows, cols, full_blocks, n, block, store))
    band_obj = _band_chunks(pattern, h, band, full_blocks, n, block, device, store) if band is not None else None
    if band_obj is not None:
        groups, band_obj = _fold_shared_columns(pattern, h, groups, band_obj, n, block)
    return HeadLayout(heads, band_obj, tuple(groups), any_blocks, full_blocks)


def _fold_shared_columns(pattern: Pattern, h: int, groups: list, band: Band, n: int, block: int):
    """Move a group whose rows all touch the same key blocks into the band as extra key positions.

    Only the positions some query actually sees are kept (a global column is 1 key, not a block),
    and the band's softmax covers them, so no separate pass merges the group's output.
    """
    shared = [g for g in groups if g.shared]
    if not shared:
        return groups, band
    group = max(shared, key=lambda g: len(g.rows))
    if group.cols.shape[1] * block > 4 * EXTRA_KEYS:
        return groups, band  # too many candidate keys: leave it a group (and skip a large transient mask)
    offsets = torch.arange(block, device=group.rows.device)
    allowed = _allowed(pattern, h, group.rows[:, None] * block + offsets, group.kv_pos, n)  # [R, block, S · block]
    pos = group.kv_pos[0][allowed.any(dim=1).any(dim=0)]
    if len(pos) == 0 or len(pos) > EXTRA_KEYS:
        return groups, band
    nb = -(-n // block)
    in_group = torch.zeros(nb, dtype=torch.bool, device=pos.device)
    in_group[group.rows] = True
    q_pos = torch.arange(nb * block, device=pos.device).view(nb, block)
    # Rows outside the group see these keys through the band or another group already: forbidden here.
    ok = _allowed(pattern, h, q_pos, pos.expand(nb, -1), n) & in_group[:, None, None]
    rest = [g for g in groups if g is not group]
    return rest, Band(band.lo, band.width, band.chunks, Extras(pos, ~ok))


def _block_grid(pattern: Pattern, h: int, n: int, block: int, device) -> tuple[Tensor, Tensor]:
    """(any, full) over the [n_blocks, n_blocks] grid; a ragged last key block is never full."""
    nb = -(-n // block)
    lo = torch.arange(nb, device=device) * block
    hi = torch.clamp(lo + block - 1, max=n - 1)
    any_rows, full_rows = [], []
    for r0 in range(0, nb, _GRID_ROWS):
        r1 = min(r0 + _GRID_ROWS, nb)
        a, f = pattern.block_mod(h, lo[r0:r1, None], hi[r0:r1, None], lo[None, :], hi[None, :])
        a = a.expand(r1 - r0, nb)
        any_rows.append(a)
        full_rows.append(f.expand(r1 - r0, nb) & a)
    any_blocks, full_blocks = torch.cat(any_rows), torch.cat(full_rows)
    if n % block:
        full_blocks[:, -1] = False  # the padded tail of the last key block must be masked
    return any_blocks, full_blocks


def _band(any_blocks: Tensor) -> tuple[int, int] | None:
    """(lo, width): the run of offsets around 0 that every query block touches, or None.

    An offset o leaves |o| of the nb rows' windows outside the sequence (padding the kernel computes),
    so the band stops at |o| > nb / 4; what it leaves out goes to the gathered groups.
    """
    nb = any_blocks.shape[0]
    reach = max(1, nb // 4)

    def full_offset(o: int) -> bool:
        return abs(o) <= reach and -nb < o < nb and bool(torch.diagonal(any_blocks, offset=o).all())

    if not full_offset(0):
        return None
    lo, hi = 0, 0
    while full_offset(lo - 1):
        lo -= 1
    while full_offset(hi + 1):
        hi += 1
    return lo, hi - lo + 1


def _band_chunks(pattern: Pattern, h: int, band: tuple[int, int], full_blocks: Tensor, n: int, block: int, device, store: bool) -> Band:
    lo, width = band
    nb = full_blocks.shape[0]
    r = torch.arange(nb, device=device)
    cols = r[:, None] + lo + torch.arange(width, device=device)  # [nb, width], may fall outside [0, nb)
    inside = (cols >= 0) & (cols < nb)
    full = torch.zeros(nb, width, dtype=torch.bool, device=device)
    full[inside] = full_blocks[r[:, None].expand(nb, width)[inside], cols[inside]]
    rows_per_chunk = max(1, BAND_ELEMENTS // (block * width * block))
    offsets = torch.arange(block, device=device)
    chunks = []
    for r0 in range(0, nb, rows_per_chunk):
        r1 = min(r0 + rows_per_chunk, nb)
        slots = tuple(torch.nonzero(~full[r0:r1].all(dim=0)).flatten().tolist())
        mask = kv_pos = None
        if slots:
            kv_pos = (cols[r0:r1][:, list(slots), None] * block + offsets).flatten(1)  # [R, P · block]
            mask = Mask(pattern, h, n)
            if store:
                q_pos = r[r0:r1, None] * block + offsets
                mask = Mask(pattern, h, n, ~_allowed(pattern, h, q_pos, kv_pos, n))
        chunks.append(BandChunk(r0, r1, slots, mask, kv_pos))
    return Band(lo, width, tuple(chunks))


def _group(pattern: Pattern, h: int, rows: Tensor, cols: Tensor, full_blocks: Tensor, n: int, block: int, store: bool) -> BlockGroup:
    offsets = torch.arange(block, device=rows.device)
    kv_pos = (cols[:, :, None] * block + offsets).flatten(1)  # [R, S · block]
    mask = None
    if not bool(full_blocks[rows[:, None], cols].all()):
        mask = Mask(pattern, h, n)
        if store:
            mask = Mask(pattern, h, n, ~_allowed(pattern, h, rows[:, None] * block + offsets, kv_pos, n))
    return BlockGroup(rows=rows, cols=cols, mask=mask, kv_pos=kv_pos, shared=bool((cols == cols[:1]).all()))


def _allowed(pattern: Pattern, h: int, q_pos: Tensor, kv_pos: Tensor, n: int) -> Tensor:
    """[R, block, L] bool from q_pos [R, block], kv_pos [R, L]; positions outside [0, n) are not allowed."""
    # Clamped so table-based predicates can index; the out-of-range positions are masked after.
    q_in, kv_in = q_pos.clamp(0, n - 1), kv_pos.clamp(0, n - 1)
    allowed = pattern.mask_mod(0, h, q_in[:, :, None], kv_in[:, None, :])
    return allowed & ((kv_pos >= 0) & (kv_pos < n))[:, None, :]
