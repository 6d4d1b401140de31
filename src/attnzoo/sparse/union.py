"""Attention over a union of disjoint patterns, each computed in the position order where it is block-sparse.

b batch, h heads, n positions, d head dim.

Some patterns are sparse but scattered in the natural order: a stride (i - j) mod l = 0 touches
every key block, as do Sparse Transformer's summary columns. Reordering positions gathers them:
sorted by (i mod l, i // l), stride classes become contiguous segments; with summary positions
first, summary keys become a few contiguous blocks. Each part runs on the blocked kernel in its
own order; the parts' outputs are merged with their log-sum-exps, exactly as one softmax over the
union (the parts' key sets must be disjoint).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from attnzoo.core.masks import Pattern, and_masks
from attnzoo.sparse.kernel import blocked_attention, merge_by_lse
from attnzoo.sparse.layout import build_layout


@dataclass(frozen=True, eq=False)
class Part:
    """One piece of a union: a pattern in its own position order, and causality in that order."""

    pattern: Pattern  # allowed pairs, in this part's order
    causal: Pattern  # "key not after query", in this part's order
    perm: Tensor | None = None  # [N]: original position of each position in this order; None = natural


def union_attention(
    q: Tensor, k: Tensor, v: Tensor, parts: tuple[Part, ...], *, mask: Tensor | None, causal: bool, scale: float, dropout_p: float, block: int,
    alibi_slopes: Tensor | None = None,
) -> Tensor:
    """q, k, v: [B, H, N, D]; mask: [B, N] bool; alibi_slopes: [H] or None. Returns [B, H, N, D].

    Equivalent to: sparse_attention(q, k, v, or_masks(*patterns in natural order)), when the parts
    are disjoint. Inputs are validated by the caller.
    """
    n, heads = q.shape[2], q.shape[1]
    outs, lses = [], []
    if len(parts) == 1 and parts[0].perm is None:
        pattern = and_masks(parts[0].pattern, parts[0].causal) if causal else parts[0].pattern
        layout = build_layout(pattern, n, block, heads, q.device)
        return blocked_attention(q, k, v, layout, key_valid=mask, scale=scale, dropout_p=dropout_p, alibi_slopes=alibi_slopes)
    for part in parts:
        qq, kk, vv, mm = q, k, v, mask
        if part.perm is not None:
            qq, kk, vv = (t.index_select(2, part.perm) for t in (q, k, v))
            mm = None if mask is None else mask.index_select(1, part.perm)
        pattern = and_masks(part.pattern, part.causal) if causal else part.pattern
        layout = build_layout(pattern, n, block, heads, q.device)
        # ALiBi measures distance between original positions, whatever this part's order
        out, lse = blocked_attention(qq, kk, vv, layout, key_valid=mm, scale=scale, dropout_p=dropout_p, return_lse=True,
                                     alibi_slopes=alibi_slopes, positions=part.perm)
        if part.perm is not None:
            inverse = torch.argsort(part.perm)
            out, lse = out.index_select(2, inverse), lse.index_select(2, inverse)
        outs.append(out)
        lses.append(lse)
    return outs[0] if len(parts) == 1 else merge_by_lse(outs, lses)[0]
