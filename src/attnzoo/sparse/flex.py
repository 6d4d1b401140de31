"""FlexAttention path: a BlockMask built directly from a layout's block tables, then compiled flex_attention.

b batch, h heads, r query blocks, s key-block slots. No N² predicate evaluation: the BlockMask's
kv_indices come from the layout (the pattern's block predicate); mask_mod only runs inside
partial blocks, in the fused kernel.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from attnzoo.core.masks import Pattern
from attnzoo.sparse.layout import BlockLayout

FLEX_BLOCK = 128  # flex_attention's default sparse block size; its kernels tile by it


def flex_available() -> bool:
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def block_mask_from_layout(layout: BlockLayout, pattern: Pattern, num_heads: int, key_valid: Tensor | None):
    """FlexAttention BlockMask with the layout's blocks; full blocks skip mask_mod unless there is padding."""
    from torch.nn.attention.flex_attention import BlockMask

    n, block = layout.n, layout.block
    any_blocks = torch.stack([_per_head(layout, h, "any_blocks") for h in range(num_heads)])  # [H, nb, nb]
    full_blocks = torch.stack([_per_head(layout, h, "full_blocks") for h in range(num_heads)])
    if key_valid is not None or n % block:
        # mask_mod must also see padding (and the ragged last block), so no block is skipped as full.
        full_blocks = torch.zeros_like(full_blocks)
    partial = any_blocks & ~full_blocks
    kv_num, kv_idx = _ordered(partial)
    full_num, full_idx = _ordered(full_blocks)

    def mask_mod(b, h, q_idx, kv_idx_):
        # Clamp so table-based predicates never index past N (the kernel may visit a ragged tail).
        q_in, kv_in = q_idx.clamp(max=n - 1), kv_idx_.clamp(max=n - 1)
        allowed = pattern.mask_mod(b, h, q_in, kv_in) & (kv_idx_ < n)
        return allowed & key_valid[b, kv_in] if key_valid is not None else allowed

    return BlockMask.from_kv_blocks(
        kv_num[None], kv_idx[None], full_num[None], full_idx[None], BLOCK_SIZE=block, mask_mod=mask_mod, seq_lengths=(n, n)
    )


def flex_sparse_attention(
    q: Tensor, k: Tensor, v: Tensor, layout: BlockLayout, pattern: Pattern, *, key_valid, scale: float, alibi_slopes: Tensor | None = None
) -> Tensor:
    """Compiled flex_attention over the layout's BlockMask. q, k, v: [B, H, N, D]; alibi_slopes: [H] or
    None (a score_mod adding −m_h·|i − j|). Returns [B, H, N, D].

    Note:
        A query with no visible key gets zeros here too: flex returns 0 for an empty row.
    """
    block_mask = block_mask_from_layout(layout, pattern, q.shape[1], key_valid)
    # the bias in float32, as flex's scores are, whatever q's dtype
    score_mod = None if alibi_slopes is None else _alibi_score_mod(alibi_slopes.to(device=q.device, dtype=torch.float32))
    return _compiled_flex()(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)


def _alibi_score_mod(slopes: Tensor):
    """FlexAttention's score_mod for ALiBi: score − m_h·|i − j| (slopes [H])."""

    def score_mod(score, b, h, q_idx, kv_idx):
        return score - slopes[h] * (q_idx - kv_idx).abs()

    return score_mod


def _per_head(layout: BlockLayout, h: int, field: str) -> Tensor:
    for hl in layout.heads:
        if hl.heads is None or h in hl.heads:
            return getattr(hl, field)
    raise ValueError(f"layout has no entry for head {h}")


def _ordered(blocks: Tensor) -> tuple[Tensor, Tensor]:
    """[H, R, S] bool -> (count [H, R] int32, indices [H, R, S] int32 with the allowed ones first)."""
    count = blocks.sum(-1, dtype=torch.int32)
    # Stable sort puts True (as -1) first, keeping ascending key-block order.
    order = torch.argsort((~blocks).to(torch.int8), dim=-1, stable=True)
    return count, order.to(torch.int32)
