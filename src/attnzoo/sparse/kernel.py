"""The blocked sparse kernel: softmax attention computed only on the blocks a layout allows.

b batch, h heads, r query blocks of a chunk, s key-block slots, i query in block, j gathered key
(s · block of them), d head dim.

Forward gathers, per chunk of query blocks, the key/value blocks each one touches and runs two
batched matmuls; it keeps only the output and the log-sum-exp per query (O(N·D) memory).
Backward recomputes the probabilities chunk by chunk from that log-sum-exp (as FlashAttention
does) and scatter-adds key/value gradients. Working memory is one chunk, bounded by
``_CHUNK_ELEMENTS`` scores; nothing of size N×N is ever formed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attnzoo.sparse.layout import BlockGroup, BlockLayout

_CHUNK_ELEMENTS = 1 << 21  # scores per chunk, over all batch and heads: ~8 MB in float32


def blocked_attention(
    q: Tensor, k: Tensor, v: Tensor, layout: BlockLayout, *, key_valid: Tensor | None, scale: float, dropout_p: float
) -> Tensor:
    """q, k, v: [B, H, N, D]; key_valid: [B, N] bool or None. Returns [B, H, N, D].

    Equivalent to: reference_attention(q, k, v, allowed=pattern & key_valid, scale=scale), with
    zeros for a query that sees no key.
    """
    n, block = q.shape[2], layout.block
    pad = layout.n_blocks * block - n
    if pad:
        q, k, v = (torch.nn.functional.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    key_bias = None
    if key_valid is not None:
        key_valid = torch.nn.functional.pad(key_valid, (0, pad), value=False)
        key_bias = torch.zeros(key_valid.shape, dtype=q.dtype, device=q.device).masked_fill_(~key_valid, float("-inf"))
    seed = int(torch.randint(0, 2**62, (1,)).item()) if dropout_p > 0 else 0
    out = _BlockedAttention.apply(q, k, v, key_bias, layout, scale, dropout_p, seed)
    return out[:, :, :n] if pad else out


class _BlockedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, key_bias, layout: BlockLayout, scale: float, dropout_p: float, seed: int):
        block = layout.block
        out = torch.zeros_like(q)
        # +inf marks a query with no visible key: exp(s - inf) = 0 in backward, never NaN.
        lse = torch.full(q.shape[:3], float("inf"), dtype=_stat_dtype(q), device=q.device)
        for heads, groups in _head_groups(layout):
            qb, kb, vb = (_blocks(t, heads, block) for t in (q * scale, k, v))
            for group, chunk, gen in _chunks(groups, qb.shape, block, dropout_p, seed, heads):
                rows, cols = group.rows[chunk], group.cols[chunk]
                k_sel, v_sel = kb[:, :, cols].flatten(3, 4), vb[:, :, cols].flatten(3, 4)
                p, lse_c = _probs(qb[:, :, rows], k_sel, group, chunk, key_bias)
                if dropout_p:
                    p = p * _keep(p, gen, dropout_p)
                _put(out, heads, rows, p @ v_sel, block)  # [B, h, R, block, D]
                _put(lse, heads, rows, lse_c, block)
        ctx.save_for_backward(q, k, v, key_bias, out, lse)
        ctx.layout, ctx.scale, ctx.dropout_p, ctx.seed = layout, scale, dropout_p, seed
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, key_bias, out, lse = ctx.saved_tensors
        layout, scale, dropout_p, block = ctx.layout, ctx.scale, ctx.dropout_p, ctx.layout.block
        grad_out = grad_out.contiguous()
        dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        delta = (grad_out * out).sum(-1).to(_stat_dtype(q))  # [B, H, N]: rowsum(dO ∘ O) = Σ_j P_ij dP_ij
        for heads, groups in _head_groups(layout):
            qb, kb, vb, gb = (_blocks(t, heads, block) for t in (q * scale, k, v, grad_out))
            lse_b, delta_b = _blocks(lse, heads, block), _blocks(delta, heads, block)
            for group, chunk, gen in _chunks(groups, qb.shape, block, dropout_p, ctx.seed, heads):
                rows, cols = group.rows[chunk], group.cols[chunk]
                q_sel, do = qb[:, :, rows], gb[:, :, rows]
                k_sel, v_sel = kb[:, :, cols].flatten(3, 4), vb[:, :, cols].flatten(3, 4)
                p = _scores(q_sel, k_sel, group, chunk, key_bias)
                p.sub_(lse_b[:, :, rows, :, None]).exp_()  # [B, h, R, block, S·block]
                dp = do @ v_sel.transpose(-1, -2)
                p_used = p
                if dropout_p:
                    keep = _keep(p, gen, dropout_p)
                    p_used = p * keep
                    dp.mul_(keep)
                dv_sel = p_used.transpose(-1, -2) @ do  # [B, h, R, S·block, D]
                ds = dp.sub_(delta_b[:, :, rows, :, None]).mul_(p)
                # q_sel is already scaled, so dK needs no extra factor; dQ does.
                _put(dq, heads, rows, (ds @ k_sel) * scale, block)
                _add(dk, heads, cols, ds.transpose(-1, -2) @ q_sel, block)
                _add(dv, heads, cols, dv_sel, block)
        return dq, dk, dv, None, None, None, None, None


def _head_groups(layout: BlockLayout):
    for hl in layout.heads:
        yield hl.heads, hl.groups


def _chunks(groups, shape, block: int, dropout_p: float, seed: int, heads):
    """Yield (group, row slice, dropout generator) in a fixed order, the same in forward and backward."""
    b, h = shape[0], shape[1]
    counter = (heads[0] if heads else 0) * 7_919
    for group in groups:
        per_row = b * h * block * group.cols.shape[1] * block
        step = max(1, _CHUNK_ELEMENTS // per_row)
        for r0 in range(0, len(group.rows), step):
            gen = None
            if dropout_p:
                gen = torch.Generator(device=group.rows.device).manual_seed((seed + 1_000_003 * counter) % 2**63)
            counter += 1
            yield group, slice(r0, r0 + step), gen


def _scores(q_sel: Tensor, k_sel: Tensor, group: BlockGroup, chunk: slice, key_bias: Tensor | None) -> Tensor:
    """Masked scores [B, h, R, block, S·block] (q already scaled)."""
    s = q_sel @ k_sel.transpose(-1, -2)
    s.add_(group.bias[chunk])
    if key_bias is not None:
        s.add_(key_bias[:, group.kv_pos[chunk]][:, None, :, None, :])  # [B, 1, R, 1, S·block]
    return s


def _probs(q_sel, k_sel, group, chunk, key_bias) -> tuple[Tensor, Tensor]:
    """Softmax probabilities (in place over the scores) and their log-sum-exp [B, h, R, block]."""
    s = _scores(q_sel, k_sel, group, chunk, key_bias)
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    s.sub_(m).exp_()
    total = s.sum(dim=-1, keepdim=True)
    s.div_(torch.where(total > 0, total, torch.ones_like(total)))
    lse = (m + total.log()).squeeze(-1).to(_stat_dtype(s))
    return s, torch.where(total.squeeze(-1) > 0, lse, torch.full_like(lse, float("inf")))


def _stat_dtype(t: Tensor) -> torch.dtype:
    """Softmax statistics in at least float32 (bf16/fp16 inputs), float64 for float64."""
    return torch.promote_types(t.dtype, torch.float32)


def _keep(p: Tensor, gen: torch.Generator, dropout_p: float) -> Tensor:
    """Dropout keep-mask scaled by 1/(1-p), regenerated identically in backward from the chunk's seed."""
    keep = torch.rand(p.shape, generator=gen, device=p.device, dtype=p.dtype) >= dropout_p
    return keep.to(p.dtype) / (1.0 - dropout_p)


def _blocks(t: Tensor, heads: tuple[int, ...] | None, block: int) -> Tensor:
    """[B, H, N(, D)] -> [B, h, N / block, block(, D)] for the selected heads."""
    if heads is not None:
        t = t[:, list(heads)]
    return t.unflatten(2, (-1, block))


def _put(dst: Tensor, heads, rows: Tensor, src: Tensor, block: int) -> None:
    """dst[:, heads, rows] = src, on the blocked view."""
    view = dst.unflatten(2, (-1, block))
    if heads is None:
        view[:, :, rows] = src.to(dst.dtype)
    else:
        idx = torch.tensor(heads, device=dst.device)
        view[:, idx[:, None], rows[None, :]] = src.to(dst.dtype)


def _add(dst: Tensor, heads, cols: Tensor, src: Tensor, block: int) -> None:
    """dst[:, heads, cols] += src with repeats summed; src: [B, h, R, S·block, D]."""
    view = dst.unflatten(2, (-1, block))  # [B, H, n_blocks, block, D]
    src = src.unflatten(3, (cols.shape[1], block)).flatten(2, 3)  # [B, h, R·S, block, D]
    if heads is None:
        view.index_add_(2, cols.flatten(), src)
    else:
        for i, h in enumerate(heads):
            view[:, h].index_add_(1, cols.flatten(), src[:, i])
