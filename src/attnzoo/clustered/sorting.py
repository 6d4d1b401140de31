"""Shared plumbing of the sort-and-chunk mechanisms (Reformer's LSH buckets, causal routing): put
tokens in a content order, attend inside fixed-size chunks of that order and one chunk back,
then put the results back in sequence order.

b batch, h heads, r rounds (hash rounds or 1), n positions, t chunks, c chunk length, d head dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# A finite "minus infinity": a row whose keys are all masked stays finite (uniform, then ignored)
# instead of NaN, and its gradients stay finite too.
MASKED = -1e9


def pad_positions(x: Tensor, multiple: int, *, dim: int = 2, value: float | bool = 0) -> tuple[Tensor, int]:
    """Pad axis ``dim`` up to a multiple of ``multiple``; returns the padded tensor and the pad size."""
    pad = (-x.shape[dim]) % multiple
    if not pad:
        return x, 0
    widths = [0, 0] * (x.dim() - dim - 1) + [0, pad]
    return F.pad(x, widths, value=value), pad


def sort_by(key: Tensor) -> tuple[Tensor, Tensor]:
    """key [..., N] of distinct integers -> (order, inverse): x.gather(-1, order) is sorted by key and
    sorted.gather(-1, inverse) puts it back."""
    order = key.argsort(dim=-1)
    inverse = torch.empty_like(order).scatter_(-1, order, torch.arange(order.shape[-1], device=key.device).expand_as(order))
    return order, inverse


def gather_positions(x: Tensor, index: Tensor) -> Tensor:
    """x [B, H, N, D], index [B, H, M] of positions -> [B, H, M, D].

    Equivalent to x.gather(2, index expanded over D). It copies whole rows instead: gather reads an
    int64 index for every value and its backward scatters value by value, while index_select reads
    one index per row of D values and its backward adds rows.
    """
    b, h, n, d = x.shape
    return x.reshape(b * h * n, d).index_select(0, _rows(index, n)).view(b, h, -1, d)


def add_at_positions(src: Tensor, index: Tensor, n: int) -> Tensor:
    """src [B, H, M, D], index [B, H, M] of positions in [0, n) -> [B, H, n, D]: zeros with each src
    row added at its position (rows sharing a position add up). The inverse of gather_positions,
    row by row like it."""
    b, h, m, d = src.shape
    return src.new_zeros(b * h * n, d).index_add(0, _rows(index, n), src.reshape(b * h * m, d)).view(b, h, n, d)


def _rows(index: Tensor, n: int) -> Tensor:
    """[B·H·M]: the row of each (b, h, index[b, h, m]) in a [B·H·N, D] flattening."""
    b, h = index.shape[:2]
    return (index + torch.arange(b * h, device=index.device).view(b, h, 1) * n).flatten()


def with_previous_chunk(x: Tensor, chunk_axis: int) -> Tensor:
    """Concatenate every chunk with the one before it (the first with the last), along the axis after
    ``chunk_axis``: [..., T, C, ...] -> [..., T, 2C, ...]. A single chunk is returned as it is (its
    "previous chunk" would be itself, counted twice)."""
    if x.shape[chunk_axis] == 1:
        return x
    return torch.cat((x, x.roll(1, dims=chunk_axis)), dim=chunk_axis + 1)
