"""Attention patterns as index predicates, and the padding / causal conventions.

A pattern is FlexAttention's ``mask_mod(b, h, q_idx, kv_idx) -> bool`` plus the one extra fact a
block-sparse kernel needs: for a rectangle of (query, key) positions, is *any* pair allowed, and are
*all* pairs allowed. That block predicate is answered analytically (interval arithmetic, prefix
sums), so a layout for N = 128K costs (N / block)² cheap comparisons, never N² predicate calls.

b batch, h heads, q/kv positions (query, key). ``lo``/``hi`` are inclusive position bounds of a block.

Conventions used everywhere in attnzoo:
    mask: BoolTensor[B, N], True marks a real token, False marks padding.
    causal: query i sees key j only if j <= i.
    Patterns never depend on b: padding is applied through ``mask``, not through the pattern.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

MaskMod = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
# (h, q_lo, q_hi, kv_lo, kv_hi) -> (any_allowed, all_allowed); bounds are broadcastable int tensors.
BlockMod = Callable[[int, Tensor, Tensor, Tensor, Tensor], "tuple[Tensor, Tensor]"]


@dataclass(frozen=True, eq=False)
class Pattern:
    """A mask_mod that also knows its block structure.

    Callable as a FlexAttention ``mask_mod``. ``heads`` is set for patterns that differ per head
    (Longformer dilation, the ``heads`` mechanism): ``heads[h]`` is the pattern of head h.

    Note:
        ``block_mod`` must never answer any=False for a block holding an allowed pair, nor
        all=True for a block holding a forbidden pair; it may be conservative the other way.
        A pattern that differs per head must say so through ``heads`` (see ``per_head``):
        kernels build one layout per distinct head pattern and evaluate others at h = 0.
    """

    mask_mod: MaskMod
    block_mod: BlockMod
    name: str = "pattern"
    heads: tuple["Pattern", ...] | None = None

    def __call__(self, b, h, q_idx, kv_idx):
        return self.mask_mod(b, h, q_idx, kv_idx)

    def __repr__(self) -> str:
        return f"Pattern({self.name})"


def _const_pattern(value: bool, name: str) -> Pattern:
    def mask_mod(b, h, q_idx, kv_idx):
        return torch.full_like(q_idx - kv_idx, value, dtype=torch.bool)

    def block_mod(h, q_lo, q_hi, kv_lo, kv_hi):
        out = torch.full_like(q_lo - kv_lo, value, dtype=torch.bool)
        return out, out

    return Pattern(mask_mod, block_mod, name)


dense = _const_pattern(True, "dense")


def difference_band(lo: float, hi: float, name: str) -> Pattern:
    """Allowed iff lo <= q_idx - kv_idx <= hi (use ±inf for an open side).

    causal is (0, inf); a symmetric window w is (-w, w); a causal window is (0, w).
    """

    def mask_mod(b, h, q_idx, kv_idx):
        diff = q_idx - kv_idx
        return (diff >= lo) & (diff <= hi)

    def block_mod(h, q_lo, q_hi, kv_lo, kv_hi):
        d_min, d_max = q_lo - kv_hi, q_hi - kv_lo
        return (d_max >= lo) & (d_min <= hi), (d_min >= lo) & (d_max <= hi)

    return Pattern(mask_mod, block_mod, name)


causal = difference_band(0, float("inf"), "causal")


@functools.lru_cache(maxsize=128)
def or_masks(*patterns: Pattern) -> Pattern:
    """Union: a pair is allowed if any pattern allows it."""
    _check_patterns(patterns, "or_masks")
    if len(patterns) == 1:
        return patterns[0]

    def mask_mod(b, h, q_idx, kv_idx):
        out = patterns[0].mask_mod(b, h, q_idx, kv_idx)
        for p in patterns[1:]:
            out = out | p.mask_mod(b, h, q_idx, kv_idx)
        return out

    def block_mod(h, q_lo, q_hi, kv_lo, kv_hi):
        any_, all_ = patterns[0].block_mod(h, q_lo, q_hi, kv_lo, kv_hi)
        for p in patterns[1:]:
            a, f = p.block_mod(h, q_lo, q_hi, kv_lo, kv_hi)
            any_, all_ = any_ | a, all_ | f
        return any_, all_

    return Pattern(mask_mod, block_mod, " | ".join(p.name for p in patterns), _combine_heads(or_masks, patterns))


@functools.lru_cache(maxsize=128)
def and_masks(*patterns: Pattern) -> Pattern:
    """Intersection: a pair is allowed if every pattern allows it."""
    _check_patterns(patterns, "and_masks")
    if len(patterns) == 1:
        return patterns[0]

    def mask_mod(b, h, q_idx, kv_idx):
        out = patterns[0].mask_mod(b, h, q_idx, kv_idx)
        for p in patterns[1:]:
            out = out & p.mask_mod(b, h, q_idx, kv_idx)
        return out

    def block_mod(h, q_lo, q_hi, kv_lo, kv_hi):
        # any(A & B) <= any(A) & any(B): conservative, the kernel masks inside partial blocks.
        any_, all_ = patterns[0].block_mod(h, q_lo, q_hi, kv_lo, kv_hi)
        for p in patterns[1:]:
            a, f = p.block_mod(h, q_lo, q_hi, kv_lo, kv_hi)
            any_, all_ = any_ & a, all_ & f
        return any_, all_

    return Pattern(mask_mod, block_mod, " & ".join(p.name for p in patterns), _combine_heads(and_masks, patterns))


def per_head(patterns: tuple[Pattern, ...], name: str = "heads") -> Pattern:
    """Head h uses ``patterns[h]``. Works for int h (kernels) and tensor h (FlexAttention's vmap)."""
    patterns = tuple(patterns)
    _check_patterns(patterns, "per_head")

    def mask_mod(b, h, q_idx, kv_idx):
        if isinstance(h, int):
            return patterns[h].mask_mod(b, h, q_idx, kv_idx)
        out = patterns[-1].mask_mod(b, h, q_idx, kv_idx)
        for i in range(len(patterns) - 2, -1, -1):
            out = torch.where(h == i, patterns[i].mask_mod(b, h, q_idx, kv_idx), out)
        return out

    def block_mod(h, q_lo, q_hi, kv_lo, kv_hi):
        return patterns[h].block_mod(h, q_lo, q_hi, kv_lo, kv_hi)

    for p in patterns:
        if p.heads is not None and len(p.heads) != len(patterns):
            raise ValueError(
                f"per_head: pattern {p.name!r} is itself per-head with {len(p.heads)} heads inside {len(patterns)} heads; "
                "give one single-head pattern per head (e.g. one dilation per longformer head)"
            )
    flat = tuple(p.heads[i] if p.heads is not None else p for i, p in enumerate(patterns))
    return Pattern(mask_mod, block_mod, name, flat)


def _combine_heads(combine, patterns: tuple[Pattern, ...]) -> tuple[Pattern, ...] | None:
    """Combining per-head patterns with anything stays per-head, head by head."""
    sizes = {len(p.heads) for p in patterns if p.heads is not None}
    if not sizes:
        return None
    if len(sizes) > 1:
        raise ValueError(
            f"cannot combine per-head patterns with different head counts {sorted(sizes)}; build every part for the same number of heads"
        )
    (n_heads,) = sizes
    return tuple(
        combine(*(p.heads[i] if p.heads is not None else p for p in patterns)) for i in range(n_heads)
    )


def _check_patterns(patterns, where: str) -> None:
    if not patterns:
        raise ValueError(f"{where} needs at least one pattern")
    for p in patterns:
        if not isinstance(p, Pattern):
            raise ValueError(
                f"{where} combines attnzoo Patterns (mask_mod + block structure), got {type(p).__name__}; "
                "wrap a plain predicate with attnzoo.core.masks.Pattern(mask_mod, block_mod)"
            )


def materialize(pattern: MaskMod, n: int, *, h: int = 0, device=None) -> Tensor:
    """The dense [N, N] bool of a predicate (for the reference path and pictures only)."""
    idx = torch.arange(n, device=device)
    out = pattern(0, h, idx[:, None], idx[None, :])
    return out.expand(n, n).clone()


def materialize_heads(pattern: Pattern, n: int, heads: int, *, device=None) -> Tensor:
    """[H, N, N] for a per-head pattern, [1, N, N] otherwise."""
    if pattern.heads is None:
        return materialize(pattern, n, device=device)[None]
    _check_head_count(pattern, heads)
    return torch.stack([materialize(pattern, n, h=i, device=device) for i in range(heads)])


def _check_head_count(pattern: Pattern, heads: int) -> None:
    if pattern.heads is not None and len(pattern.heads) != heads:
        raise ValueError(
            f"pattern {pattern.name!r} defines {len(pattern.heads)} heads but q has H={heads}; "
            f"give one pattern per head"
        )


def visible_keys(mask: Tensor | None, allowed: Tensor | None) -> Tensor | None:
    """Combine a [B, N] padding mask with an allowed [.., N, N] pattern into [B or 1, H or 1, N, N]."""
    out = None if allowed is None else allowed.reshape((1,) * (4 - allowed.dim()) + allowed.shape)
    if mask is not None:
        keys = mask[:, None, None, :]
        out = keys if out is None else out & keys
    return out


def residue(stride: int, bound: float, name: str) -> Pattern:
    """Allowed iff (q_idx - kv_idx) mod stride == 0 and |q_idx - kv_idx| <= bound (bound may be inf)."""
    big = 1 << 60  # stands in for an infinite bound in integer block arithmetic

    def mask_mod(b, h, q_idx, kv_idx):
        diff = q_idx - kv_idx
        return (torch.remainder(diff, stride) == 0) & (diff.abs() <= bound)

    def block_mod(h, q_lo, q_hi, kv_lo, kv_hi):
        lim = big if bound == float("inf") else int(bound)
        lo = torch.clamp(q_lo - kv_hi, min=-lim)
        hi = torch.clamp(q_hi - kv_lo, max=lim)
        # Some multiple of stride lies in [lo, hi].
        any_ = (lo <= hi) & (torch.div(hi, stride, rounding_mode="floor") * stride >= lo)
        all_ = (q_lo - kv_hi >= -lim) & (q_hi - kv_lo <= lim) & ((stride == 1) | ((q_lo == q_hi) & (kv_lo == kv_hi) & any_))
        return any_, all_

    return Pattern(mask_mod, block_mod, name)


def _interval_count(prefix: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """How many marked positions lie in [lo, hi], from prefix[k] = #marked positions < k."""
    return prefix[hi + 1] - prefix[lo]


def _prefix(table: Tensor) -> Tensor:
    return torch.nn.functional.pad(table.long().cumsum(0), (1, 0))


def position_rows(table: Tensor, name: str) -> Pattern:
    """Allowed iff the query is marked in table [N] (marked queries attend to every key)."""
    prefix = _prefix(table)

    def mask_mod(b, h, q_idx, kv_idx):
        return table[q_idx] & (kv_idx >= 0)

    def block_mod(h, q_lo, q_hi, kv_lo, kv_hi):
        count = _interval_count(prefix, q_lo, q_hi) + 0 * kv_lo
        return count > 0, count == q_hi - q_lo + 1

    return Pattern(mask_mod, block_mod, name)


def position_columns(table: Tensor, name: str) -> Pattern:
    """Allowed iff the key is marked in table [N] (every query attends to marked keys)."""
    prefix = _prefix(table)

    def mask_mod(b, h, q_idx, kv_idx):
        return table[kv_idx] & (q_idx >= 0)

    def block_mod(h, q_lo, q_hi, kv_lo, kv_hi):
        count = _interval_count(prefix, kv_lo, kv_hi) + 0 * q_lo
        return count > 0, count == kv_hi - kv_lo + 1

    return Pattern(mask_mod, block_mod, name)


def block_table(table: Tensor, size: int, name: str) -> Pattern:
    """Allowed iff table[q_idx // size, kv_idx // size]: a pattern defined on blocks of ``size`` positions.

    The kernel's blocks need not equal ``size``: block queries use a summed-area table of ``table``.
    """
    sat = torch.nn.functional.pad(table.long().cumsum(0).cumsum(1), (1, 0, 1, 0))
    last = table.shape[0] - 1

    def mask_mod(b, h, q_idx, kv_idx):
        return table[q_idx // size, kv_idx // size]

    def block_mod(h, q_lo, q_hi, kv_lo, kv_hi):
        r0, r1 = q_lo // size, torch.clamp(q_hi // size, max=last)
        c0, c1 = kv_lo // size, torch.clamp(kv_hi // size, max=last)
        count = sat[r1 + 1, c1 + 1] - sat[r0, c1 + 1] - sat[r1 + 1, c0] + sat[r0, c0]
        return count > 0, count == (r1 - r0 + 1) * (c1 - c0 + 1)

    return Pattern(mask_mod, block_mod, name)


def same_chunk(size: int, name: str) -> Pattern:
    """Allowed iff q_idx // size == kv_idx // size (Sparse Transformer's fixed pattern, first head)."""

    def mask_mod(b, h, q_idx, kv_idx):
        return (q_idx // size) == (kv_idx // size)

    def block_mod(h, q_lo, q_hi, kv_lo, kv_hi):
        q0, q1, k0, k1 = q_lo // size, q_hi // size, kv_lo // size, kv_hi // size
        return (q0 <= k1) & (k0 <= q1), (q0 == q1) & (k0 == k1) & (q0 == k0)

    return Pattern(mask_mod, block_mod, name)


def segments(seg: Tensor, name: str) -> Pattern:
    """Allowed iff seg[q_idx] == seg[kv_idx], for a nondecreasing segment-id table seg [N]."""

    def mask_mod(b, h, q_idx, kv_idx):
        return seg[q_idx] == seg[kv_idx]

    def block_mod(h, q_lo, q_hi, kv_lo, kv_hi):
        q0, q1, k0, k1 = seg[q_lo], seg[q_hi], seg[kv_lo], seg[kv_hi]
        return (q0 <= k1) & (k0 <= q1), (q0 == q1) & (k0 == k1) & (q0 == k0)

    return Pattern(mask_mod, block_mod, name)


def permuted(mask_mod: MaskMod, perm: Tensor, name: str) -> Pattern:
    """A predicate (any mask_mod, e.g. a Pattern) seen in a permuted order: position p stands for
    original position perm[p].

    The block predicate is conservative (any=True, all=False): combine it with and_masks and a
    pattern whose blocks are exact in the permuted order, which then decides the layout.
    """

    def in_order(b, h, q_idx, kv_idx):
        return mask_mod(b, h, perm[q_idx], perm[kv_idx])

    def block_mod(h, q_lo, q_hi, kv_lo, kv_hi):
        shape = torch.broadcast_shapes(q_lo.shape, kv_lo.shape)
        return torch.ones(shape, dtype=torch.bool, device=q_lo.device), torch.zeros(shape, dtype=torch.bool, device=q_lo.device)

    return Pattern(in_order, block_mod, name)
