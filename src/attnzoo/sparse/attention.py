"""Softmax attention restricted to a pattern, on the fastest path the device and direction allow.

b batch, h heads, n positions, d head dim.

Backends:
    "blocked": attnzoo's blocked kernel (any device, forward and backward).
    "flex":    compiled FlexAttention with a BlockMask from the pattern's layout at block 128
               (CUDA forward and backward; CPU forward only, compiled). ``block`` is ignored.
    "dense":   the masked reference, O(N²): for tests and pictures.
    "auto":    flex on CUDA (unless the pattern comes as parts), blocked everywhere else.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from attnzoo.core.checks import check_dropout, check_int, check_mask, check_qkv, resolve_scale
from attnzoo.core.masks import Pattern, and_masks, causal as causal_pattern, materialize_heads, visible_keys
from attnzoo.core.reference import reference_attention
from attnzoo.positional.alibi import alibi_bias
from attnzoo.sparse.flex import FLEX_BLOCK, flex_available, flex_sparse_attention
from attnzoo.sparse.kernel import blocked_attention
from attnzoo.sparse.layout import build_layout

Backend = Literal["auto", "blocked", "flex", "dense"]
BACKENDS = ("auto", "blocked", "flex", "dense")


def sparse_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    pattern: Pattern,
    *,
    mask: Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    backend: Backend = "auto",
    block: int = 64,
    parts: tuple | None = None,
    alibi_slopes: Tensor | None = None,
) -> Tensor:
    """q, k, v: [B, H, N, D]; pattern: a Pattern; mask: [B, N] bool; alibi_slopes: [H] or None.
    Returns [B, H, N, D].

    ``parts`` (optional, sparse.union.Part) is a decomposition of the same pattern into disjoint
    pieces, each block-sparse in its own position order; the blocked backend then runs those
    instead of ``pattern`` (strides, summary columns). Other backends use ``pattern``.

    Equivalent to: softmax(q @ kᵀ · scale − m_h·|i − j| where pattern(i, j) and mask[j] (and j <= i
    if causal), else -inf) @ v, with zeros for a query that sees no key; the ALiBi term −m_h·|i − j|
    (Press et al. 2022, arxiv.org/abs/2108.12409) only with ``alibi_slopes`` (m_h per head).
    """
    if not isinstance(pattern, Pattern):
        raise ValueError(
            f"sparse_attention needs an attnzoo Pattern (mask_mod + block structure), got {type(pattern).__name__}; "
            "build one with attnzoo.core.masks (difference_band, residue, position_rows, block_table, ...) or Pattern(mask_mod, block_mod)"
        )
    where = f"sparse attention ({pattern.name})"
    check_qkv(q, k, v, where)
    check_mask(mask, q, where)
    check_dropout(dropout_p, where)
    check_int(block, "block", minimum=1, where=where)
    scale = resolve_scale(scale, q.shape[-1], where)
    check_slopes(alibi_slopes, q.shape[1], where)
    if causal:
        pattern = and_masks(pattern, causal_pattern)
    backend = _choose_backend(backend, q, k, v, dropout_p, where, has_parts=parts is not None)
    n, heads = q.shape[2], q.shape[1]
    if backend == "dense":
        allowed = visible_keys(mask, materialize_heads(pattern, n, heads, device=q.device))
        # positions and distances in float32 at least: bf16 cannot count past 256
        exact = torch.promote_types(q.dtype, torch.float32)
        bias = None if alibi_slopes is None else alibi_bias(n, alibi_slopes.to(device=q.device, dtype=exact)).to(q.dtype)
        return reference_attention(q, k, v, allowed=allowed, scale=scale, bias=bias, dropout_p=dropout_p)
    if backend == "flex":
        # FlexAttention's kernels want their own block size; the layout is built for it.
        layout = build_layout(pattern, n, FLEX_BLOCK, heads, q.device)
        return flex_sparse_attention(q, k, v, layout, pattern, key_valid=mask, scale=scale, alibi_slopes=alibi_slopes)
    if parts is not None:
        from attnzoo.sparse.union import union_attention

        return union_attention(q, k, v, parts, mask=mask, causal=causal, scale=scale, dropout_p=dropout_p, block=block,
                               alibi_slopes=alibi_slopes)
    layout = build_layout(pattern, n, block, heads, q.device)
    return blocked_attention(q, k, v, layout, key_valid=mask, scale=scale, dropout_p=dropout_p, alibi_slopes=alibi_slopes)


def check_slopes(slopes: Tensor | None, heads: int, where: str) -> None:
    if slopes is None:
        return
    if not isinstance(slopes, Tensor) or slopes.shape != (heads,) or not slopes.is_floating_point():
        got = tuple(slopes.shape) if isinstance(slopes, Tensor) else type(slopes).__name__
        raise ValueError(f"{where}: alibi_slopes must be a float tensor [H={heads}], one slope per head (alibi_slopes(H)), got {got}")
    if not bool(torch.isfinite(slopes).all()):
        raise ValueError(f"{where}: alibi_slopes must be finite, got {slopes.tolist()}")
    if slopes.requires_grad:  # the blocked kernel treats them as constants, as ALiBi does
        raise ValueError(f"{where}: alibi_slopes are fixed per head (ALiBi learns none); pass them detached")


def _choose_backend(backend: str, q: Tensor, k: Tensor, v: Tensor, dropout_p: float, where: str, has_parts: bool) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"{where}: backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        # Patterns given as parts are block-sparse only in their own orders; flex sees the natural one.
        return "flex" if q.is_cuda and flex_available() and dropout_p == 0 and not has_parts else "blocked"
    if backend == "flex":
        if not flex_available():
            raise ValueError(f"{where}: this torch ({torch.__version__}) has no FlexAttention; use backend='blocked'")
        if dropout_p:
            raise ValueError(f"{where}: FlexAttention has no attention dropout; use backend='blocked' or dropout_p=0")
        if not q.is_cuda and torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
            raise ValueError(
                f"{where}: FlexAttention has no backward on {q.device.type}; use backend='blocked' for training "
                "or run under torch.no_grad()"
            )
    return backend
