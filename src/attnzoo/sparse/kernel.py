"""The blocked sparse kernel: softmax attention computed only on the blocks a layout allows.

b batch, h heads, r query blocks of a chunk, i query in block, j key of the chunk's slots, d head dim.

Two parts, as the layout splits them (see layout.py):
- band: per (batch, head), a chunk of query blocks reads its key windows as a strided view of the
  keys and values, so nothing is copied (a chunk at the sequence edge reads a small zero-padded
  copy); only the band slots that are partial in that chunk are masked.
- groups: the remaining key blocks are gathered per chunk of query blocks, batched over b and h;
  a group whose rows share their key blocks (global columns) runs as one matmul over all rows.
A query's softmax spans both parts: forward merges them by log-sum-exp; backward needs no merge,
since each part's probabilities are exp(s - lse) with the saved total lse.

Scores are in base 2 (q pre-scaled by scale · log2 e), so the softmax uses exp2, which is ~10x
faster than exp on CPU (FlashAttention does the same). Forward keeps only the output and lse per
query (O(N·D) memory); backward recomputes probabilities chunk by chunk. Working memory is one
chunk of scores; nothing of size N×N is ever formed.
"""

from __future__ import annotations

import zlib

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from attnzoo.sparse.layout import Band, BlockGroup, BlockLayout

_GROUP_ELEMENTS = 1 << 21  # scores per gathered chunk over all batch and heads: 8 MB in float32
_LOG2E = 1.4426950408889634


def blocked_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    layout: BlockLayout,
    *,
    key_valid: Tensor | None,
    scale: float,
    dropout_p: float,
    return_lse: bool = False,
    alibi_slopes: Tensor | None = None,
    positions: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """q, k, v: [B, H, N, D]; key_valid: [B, N] bool or None. Returns [B, H, N, D] (and lse [B, H, N]).

    Equivalent to: reference_attention(q, k, v, allowed=pattern & key_valid, scale=scale, bias=−m_h·|p_i − p_j|),
    with zeros for a query that sees no key. The ALiBi bias is there only with ``alibi_slopes`` [H]
    (m_h); p is ``positions`` [N] (the original position of each row when the caller permuted them),
    or the row index. ``return_lse`` also returns the base-2 log-sum-exp of the
    scaled scores per query (-inf for a query that sees no key), differentiable, so partial
    attentions over disjoint key sets can be merged exactly (see union_attention).

    Note:
        float16 / bfloat16 inputs are computed in float32 (statistics, accumulators) and the
        output cast back. Backward is once-differentiable (no double backward).
    """
    if q.dtype in (torch.float16, torch.bfloat16):
        # Scores, softmax statistics and the dk/dv accumulators need float32: compute there, return q.dtype.
        res = blocked_attention(
            q.float(), k.float(), v.float(), layout, key_valid=key_valid, scale=scale, dropout_p=dropout_p, return_lse=return_lse,
            alibi_slopes=alibi_slopes, positions=positions,
        )
        return (res[0].to(q.dtype), res[1]) if return_lse else res.to(q.dtype)
    n, block = q.shape[2], layout.block
    pad = layout.n_blocks * block - n
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    key_bias = None
    if key_valid is not None:
        key_valid = F.pad(key_valid, (0, pad), value=False)
        key_bias = torch.zeros(key_valid.shape, dtype=q.dtype, device=q.device).masked_fill_(~key_valid, float("-inf"))
    seed = int(torch.randint(0, 2**62, (1,)).item()) if dropout_p > 0 else 0
    distance = None if alibi_slopes is None else Distance.of(alibi_slopes, positions, n + pad, q.dtype, q.device)
    out, lse = _BlockedAttention.apply(q.contiguous(), k.contiguous(), v.contiguous(), key_bias, layout, scale, dropout_p, seed, distance)
    if pad:
        out, lse = out[:, :, :n], lse[:, :, :n]
    return (out, lse) if return_lse else out


class _BlockedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, key_bias, layout: BlockLayout, scale: float, dropout_p: float, seed: int, distance):
        block = layout.block
        qs = q * (scale * _LOG2E)
        # The band covers every query row, so with a band in every head layout all rows get written.
        covered = all(hl.band is not None for hl in layout.heads)
        shape = (*q.shape[:3], v.shape[-1])  # values may be wider or narrower than queries and keys
        out = q.new_empty(shape) if covered else q.new_zeros(shape)
        lse = torch.full(q.shape[:3], float("-inf"), dtype=_stat_dtype(q), device=q.device)  # base 2
        for hl_index, hl in enumerate(layout.heads):
            heads = list(range(q.shape[1])) if hl.heads is None else list(hl.heads)
            if hl.band is not None:
                _band_forward(qs, k, v, key_bias, hl.band, heads, block, out, lse, dropout_p, seed, hl_index, distance)
            for g_index, group in enumerate(hl.groups):
                _group_forward(qs, k, v, key_bias, group, heads, block, out, lse, dropout_p, seed, (hl_index, g_index), distance)
        ctx.save_for_backward(q, k, v, key_bias, out, lse)
        ctx.layout, ctx.scale, ctx.dropout_p, ctx.seed, ctx.distance = layout, scale, dropout_p, seed, distance
        return out, lse

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_lse):
        q, k, v, key_bias, out, lse = ctx.saved_tensors
        layout, scale, dropout_p, seed, block, distance = ctx.layout, ctx.scale, ctx.dropout_p, ctx.seed, ctx.layout.block, ctx.distance
        grad_out = grad_out.contiguous()
        qs = q * (scale * _LOG2E)
        # Rows with no visible key: lse = +inf makes every recomputed probability exp2(s - inf) = 0.
        lse = torch.where(torch.isfinite(lse), lse, torch.full_like(lse, float("inf")))
        delta = (grad_out * out).sum(-1).to(lse.dtype)  # rowsum(dO ∘ O) = Σ_j P_ij dP_ij
        if grad_lse is not None:
            # lse₂ = log2 Σ_j 2^(s_j · log2 e): ∂lse₂/∂s_ij = P_ij · log2 e, which folds into delta.
            delta = delta - grad_lse.to(lse.dtype) * _LOG2E
        dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        for hl_index, hl in enumerate(layout.heads):
            heads = list(range(q.shape[1])) if hl.heads is None else list(hl.heads)
            if hl.band is not None:
                _band_backward(qs, k, v, key_bias, grad_out, lse, delta, hl.band, heads, block, dq, dk, dv, dropout_p, seed, hl_index,
                               distance)
            for g_index, group in enumerate(hl.groups):
                args = (qs, k, v, key_bias, grad_out, lse, delta, group, heads, block, dq, dk, dv, dropout_p, seed, (hl_index, g_index),
                        distance)
                _group_backward(*args)
        # dQ = dS K · scale; dK = dSᵀ Q · scale = dSᵀ qs / log2 e: applied once, not per chunk.
        return dq.mul_(scale), dk.div_(_LOG2E), dv, None, None, None, None, None, None


class Distance:
    """ALiBi's bias −m_h·|p_i − p_j| in the kernel's base-2 score units, for blocks of positions."""

    def __init__(self, slopes: Tensor, positions: Tensor):
        self.slopes, self.positions = slopes, positions  # [H] m_h · log2 e; [N padded] p as floats

    @staticmethod
    def of(slopes: Tensor, positions: Tensor | None, n: int, dtype: torch.dtype, device) -> "Distance":
        """slopes [H]; positions [N'] (N' <= n, the rest continue after it) or None for 0..n-1."""
        p = torch.arange(n, dtype=dtype, device=device)
        if positions is not None:
            p[: positions.shape[0]] = positions.to(dtype)
        return Distance(slopes.to(device=device, dtype=dtype) * _LOG2E, p)

    def at(self, heads: list[int] | int, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        """[h, R, block, L] for q_idx [R, block] and kv_idx [R, L] (rows of the padded sequence;
        indices outside it are clamped: the pattern masks those keys anyway); [R, block, L] for one head."""
        n = self.positions.shape[0]
        qp, kp = self.positions[q_idx.clamp(0, n - 1)], self.positions[kv_idx.clamp(0, n - 1)]
        dist = (qp[:, :, None] - kp[:, None, :]).abs_()
        if isinstance(heads, int):
            return dist.mul_(-self.slopes[heads])
        return dist[None] * -self.slopes[heads][:, None, None, None]


# ----------------------------------------------------------------------------------------------
# Band: per (batch, head), strided key windows; rows r0..r1 read key blocks r + lo .. r + lo + width - 1.


def _window_source(t: Tensor, r0: int, r1: int, band: Band, block: int) -> tuple[Tensor, int]:
    """(source, first block): rows r0..r1-1 read key blocks first + (r - r0) .. first + (r - r0) + width - 1 of source.

    t: [N, D] or [N] (one batch/head slice). Interior chunks read t itself; a chunk whose windows
    leave [0, N) reads a small copy of its key range, zero-padded (-inf for key biases).
    """
    nb = t.shape[0] // block
    first, last = r0 + band.lo, r1 - 1 + band.lo + band.width - 1  # key blocks the chunk touches
    if first >= 0 and last < nb:
        return t, first
    lo, hi = max(first, 0), min(last, nb - 1)
    before, after = (lo - first) * block, (last - hi) * block  # positions missing on each side
    piece = t[lo * block : (hi + 1) * block]
    pad = (before, after) if t.dim() == 1 else (0, 0, before, after)
    return F.pad(piece, pad, value=float("-inf") if t.dim() == 1 else 0.0), 0


def _windows(t: Tensor, r0: int, r1: int, band: Band, block: int) -> Tensor:
    """[R, width · block(, D)] strided view: row r's key window, for one (b, h) slice t [N(, D)]."""
    src, first = _window_source(t, r0, r1, band, block)
    row_stride = block * src.stride(0)
    size = (r1 - r0, band.width * block) + tuple(src.shape[1:])
    return src.as_strided(size, (row_stride,) + tuple(src.stride()), src.storage_offset() + first * row_stride)


def _band_scores(q_rows, k_win, chunk, key_win, bias=None) -> Tensor:
    s = torch.bmm(q_rows, k_win.transpose(1, 2))  # [R, block, width · block]
    if bias is not None:
        s.add_(bias)
    if chunk.mask is not None:
        block = q_rows.shape[1]
        q_pos = torch.arange(chunk.r0 * block, chunk.r1 * block, device=s.device).view(-1, block)
        forbid = chunk.mask.forbid(q_pos, chunk.kv_pos)
        by_slot = s.view(s.shape[0], block, -1, block)
        for i, slot in enumerate(chunk.slots):
            by_slot[:, :, slot].masked_fill_(forbid[:, :, i * block : (i + 1) * block], float("-inf"))
    if key_win is not None:
        s.add_(key_win[:, None, :])
    return s


def _band_bias(distance, band: Band, chunk, h: int, block: int) -> tuple[Tensor | None, Tensor | None]:
    """ALiBi for one chunk and head: (window [R, block, width · block], extras [R, block, X] or None)."""
    if distance is None:
        return None, None
    device = distance.positions.device
    rows = torch.arange(chunk.r0, chunk.r1, device=device)
    q_idx = rows[:, None] * block + torch.arange(block, device=device)
    kv_idx = (rows[:, None] + band.lo) * block + torch.arange(band.width * block, device=device)  # row r's window
    extras = None if band.extras is None else distance.at(h, q_idx, band.extras.pos.expand(len(rows), -1))
    return distance.at(h, q_idx, kv_idx), extras


def _band_forward(qs, k, v, key_bias, band: Band, heads, block, out, lse, dropout_p, seed, tag, distance=None):
    for b in range(qs.shape[0]):
        for h in heads:
            q_blocks = qs[b, h].unflatten(0, (-1, block))
            for c, chunk in enumerate(band.chunks):
                k_win, v_win = _windows(k[b, h], chunk.r0, chunk.r1, band, block), _windows(v[b, h], chunk.r0, chunk.r1, band, block)
                key_win = _windows(key_bias[b], chunk.r0, chunk.r1, band, block) if key_bias is not None else None
                q_rows = q_blocks[chunk.r0 : chunk.r1]
                window_bias, extras_bias = _band_bias(distance, band, chunk, h, block)
                parts = [_band_scores(q_rows, k_win, chunk, key_win, window_bias)]
                if band.extras is not None:
                    parts.append(_extra_scores(q_rows, k[b, h], key_bias, b, band.extras, chunk, extras_bias))
                parts, total, lse_c = _softmax_parts(*parts)
                if dropout_p:
                    gen = _generator(seed, ("band", tag, b, h, c), q_rows.device)
                    parts = [p * _keep(p, gen, dropout_p) for p in parts]
                rows = slice(chunk.r0 * block, chunk.r1 * block)
                o = out[b, h, rows].view(chunk.r1 - chunk.r0, block, -1)  # a view: bmm writes in place
                torch.bmm(parts[0], v_win, out=o)
                if band.extras is not None:
                    o += parts[1] @ v[b, h, band.extras.pos]
                o.div_(total)
                lse[b, h, rows] = lse_c.flatten()


def _band_backward(qs, k, v, key_bias, grad_out, lse, delta, band: Band, heads, block, dq, dk, dv, dropout_p, seed, tag, distance=None):
    nb = k.shape[2] // block
    for b in range(qs.shape[0]):
        for h in heads:
            q_blocks, do_blocks = qs[b, h].unflatten(0, (-1, block)), grad_out[b, h].unflatten(0, (-1, block))
            for c, chunk in enumerate(band.chunks):
                r0, r1 = chunk.r0, chunk.r1
                k_win, v_win = _windows(k[b, h], r0, r1, band, block), _windows(v[b, h], r0, r1, band, block)
                key_win = _windows(key_bias[b], r0, r1, band, block) if key_bias is not None else None
                q_rows, do = q_blocks[r0:r1], do_blocks[r0:r1]
                rows = slice(r0 * block, r1 * block)
                lse_rows, delta_rows = lse[b, h, rows].view(r1 - r0, block, 1), delta[b, h, rows].view(r1 - r0, block, 1)
                gen = _generator(seed, ("band", tag, b, h, c), q_rows.device) if dropout_p else None
                window_bias, extras_bias = _band_bias(distance, band, chunk, h, block)
                p = _band_scores(q_rows, k_win, chunk, key_win, window_bias)
                p.sub_(lse_rows).exp2_()
                dp = torch.bmm(do, v_win.transpose(1, 2))
                p_used = p
                if dropout_p:
                    keep = _keep(p, gen, dropout_p)
                    p_used = p * keep
                    dp.mul_(keep)
                dv_win = torch.bmm(p_used.transpose(1, 2), do)  # [R, width · block, D]
                ds = dp.sub_(delta_rows).mul_(p)
                dq[b, h, rows] += torch.bmm(ds, k_win).flatten(0, 1)
                if band.extras is not None:
                    _extra_backward(q_rows, do, k, v, key_bias, b, h, band.extras, chunk, lse_rows, delta_rows, gen, dropout_p, dq, dk, dv, rows,
                                    extras_bias)
                dk_win = torch.bmm(ds.transpose(1, 2), q_rows)
                # Windows overlap: add slot by slot; slot s of rows r0..r1-1 is key blocks r0+lo+s .. r1-1+lo+s.
                dk_blocks, dv_blocks = dk[b, h].unflatten(0, (-1, block)), dv[b, h].unflatten(0, (-1, block))
                for slot in range(band.width):
                    first = r0 + band.lo + slot
                    lo, hi = max(first, 0), min(first + (r1 - r0), nb)  # key blocks inside [0, nb)
                    if lo < hi:
                        keys = slice(slot * block, (slot + 1) * block)
                        dk_blocks[lo:hi] += dk_win[lo - first : hi - first, keys]
                        dv_blocks[lo:hi] += dv_win[lo - first : hi - first, keys]


# ----------------------------------------------------------------------------------------------
# Groups: gathered key blocks, batched over batch and heads.


def _group_chunks(group: BlockGroup, b: int, h: int, block: int):
    per_row = b * h * block * group.cols.shape[1] * block
    step = max(1, _GROUP_ELEMENTS // per_row)
    for r0 in range(0, len(group.rows), step):
        yield slice(r0, r0 + step)


def _group_scores(q_sel, k_sel, group: BlockGroup, chunk: slice, key_bias, distance=None, heads=None) -> Tensor:
    s = _rows_mm(q_sel, k_sel.transpose(-1, -2))  # [B, h, R, block, S · block]
    if distance is not None:
        s.add_(distance.at(heads, group.q_pos(chunk, s.shape[-2]), group.kv_pos[chunk])[None])
    if group.mask is not None:
        s.masked_fill_(group.mask.forbid(group.q_pos(chunk, s.shape[-2]), group.kv_pos[chunk], chunk), float("-inf"))
    if key_bias is not None:
        s.add_(key_bias[:, group.kv_pos[chunk]][:, None, :, None, :])
    return s


def _group_forward(qs, k, v, key_bias, group: BlockGroup, heads, block, out, lse, dropout_p, seed, tag, distance=None):
    sel = _heads(heads, qs.shape[1])
    qb, kb, vb = (_blocks(t, sel, block) for t in (qs, k, v))
    if group.shared:  # the same key blocks for every row: gather them once
        k_shared, v_shared = _gather(kb, group.cols[:1]), _gather(vb, group.cols[:1])  # [B, h, 1, S · block, D]
    for c, chunk in enumerate(_group_chunks(group, qs.shape[0], len(heads), block)):
        rows, cols = group.rows[chunk], group.cols[chunk]
        k_sel, v_sel = (k_shared, v_shared) if group.shared else (_gather(kb, cols), _gather(vb, cols))
        (p,), total, lse_c = _softmax_parts(_group_scores(_gather(qb, rows), k_sel, group, chunk, key_bias, distance, heads))
        if dropout_p:
            p = p * _keep(p, _generator(seed, ("group", tag, c), p.device), dropout_p)
        o = _rows_mm(p, v_sel).div_(total)  # [B, h, R, block, D]
        # Merge with what the band (or nothing) already wrote for these rows, by log-sum-exp.
        merged, lse_new = merge_by_lse([_take(out, sel, rows, block), o], [_take(lse, sel, rows, block), lse_c])
        _put(out, sel, rows, merged, block)
        _put(lse, sel, rows, lse_new, block)


def _group_backward(qs, k, v, key_bias, grad_out, lse, delta, group: BlockGroup, heads, block, dq, dk, dv, dropout_p, seed, tag, distance=None):
    sel = _heads(heads, qs.shape[1])
    qb, kb, vb, gb = (_blocks(t, sel, block) for t in (qs, k, v, grad_out))
    lse_b, delta_b = _blocks(lse, sel, block), _blocks(delta, sel, block)
    for c, chunk in enumerate(_group_chunks(group, qs.shape[0], len(heads), block)):
        rows = group.rows[chunk]
        cols = group.cols[:1] if group.shared else group.cols[chunk]  # shared: one row of key blocks for all
        q_sel, do = _gather(qb, rows), _gather(gb, rows)
        k_sel, v_sel = _gather(kb, cols), _gather(vb, cols)
        p = _group_scores(q_sel, k_sel, group, chunk, key_bias, distance, heads)
        p.sub_(_gather(lse_b, rows)[..., None]).exp2_()  # [B, h, R, block, S · block]
        dp = _rows_mm(do, v_sel.transpose(-1, -2))
        p_used = p
        if dropout_p:
            keep = _keep(p, _generator(seed, ("group", tag, c), p.device), dropout_p)
            p_used = p * keep
            dp.mul_(keep)
        ds = dp.sub_(_gather(delta_b, rows)[..., None]).mul_(p)
        _put(dq, sel, rows, _take(dq, sel, rows, block) + _rows_mm(ds, k_sel), block)
        _add(dk, sel, cols, _rows_tmm(ds, q_sel, group.shared), block)
        _add(dv, sel, cols, _rows_tmm(p_used, do, group.shared), block)


# ----------------------------------------------------------------------------------------------
# Shared pieces.


def merge_by_lse(outs: list[Tensor], lses: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Merge partial attentions over disjoint key sets: (Σ_c out_c · 2^(lse_c - lse), lse = log2 Σ_c 2^lse_c).

    outs: [..., D]; lses: [...] base 2, -inf where a part saw no key (its output is then 0). The
    merged lse is -inf where no part saw a key. Safe under autograd: -inf is replaced by a huge
    negative finite value, so neither the merge nor its gradient meets -inf - (-inf).
    """
    seen = torch.isfinite(lses[0])
    for x in lses[1:]:
        seen = seen | torch.isfinite(x)
    lses = [torch.where(torch.isfinite(x), x, torch.full_like(x, -1e30)) for x in lses]
    lse = lses[0]
    for other in lses[1:]:
        lse = torch.logaddexp2(lse, other)
    out = sum(o * torch.exp2(part - lse)[..., None].to(o.dtype) for o, part in zip(outs, lses))
    return out, torch.where(seen, lse, torch.full_like(lse, float("-inf")))


def _rows_mm(x: Tensor, y: Tensor) -> Tensor:
    """x [B, h, R, i, L] @ y [B, h, R or 1, L, D]; a shared y (R = 1) is one matmul over all R · i rows, no copies."""
    if y.shape[2] == 1 and x.shape[2] != 1:
        return (x.flatten(2, 3) @ y[:, :, 0]).unflatten(2, (x.shape[2], x.shape[3]))
    return x @ y


def _rows_tmm(x: Tensor, y: Tensor, shared: bool) -> Tensor:
    """xᵀ @ y per row [B, h, R, L, D]; shared: summed over rows in one matmul, [B, h, 1, L, D]."""
    if shared:
        return (x.flatten(2, 3).transpose(-1, -2) @ y.flatten(2, 3))[:, :, None]
    return x.transpose(-1, -2) @ y


def _softmax_parts(s: Tensor, *more: Tensor):
    """One softmax over the concatenated last axes of s (and ``more``), without concatenating.

    Returns the list of exp2(x - rowmax) per part (in place), the row sums (1 for empty rows) and
    the base-2 lse (-inf for empty rows).
    """
    parts = (s,) + more
    m = parts[0].amax(dim=-1, keepdim=True)
    for x in parts[1:]:
        m = torch.maximum(m, x.amax(dim=-1, keepdim=True))
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    total = 0
    for x in parts:
        total = total + x.sub_(m).exp2_().sum(dim=-1, keepdim=True)
    lse = (m + total.log2()).squeeze(-1).to(_stat_dtype(s))  # log2(0) = -inf for empty rows
    total = torch.where(total > 0, total, torch.ones_like(total))
    return list(parts), total, lse


def _extra_scores(q_rows: Tensor, k_bh: Tensor, key_bias, b: int, extras, chunk, bias=None) -> Tensor:
    """[R, block, X] scores of the chunk's queries against the band's extra key positions."""
    s = q_rows @ k_bh[extras.pos].T
    if bias is not None:
        s.add_(bias)
    s.masked_fill_(extras.forbid[chunk.r0 : chunk.r1], float("-inf"))
    if key_bias is not None:
        s.add_(key_bias[b, extras.pos])
    return s


def _extra_backward(q_rows, do, k, v, key_bias, b, h, extras, chunk, lse_rows, delta_rows, gen, dropout_p, dq, dk, dv, rows, bias=None):
    """Gradients through the band's extra key positions for one chunk (same recipe as the window)."""
    k_x, v_x = k[b, h, extras.pos], v[b, h, extras.pos]  # [X, D]
    p = _extra_scores(q_rows, k[b, h], key_bias, b, extras, chunk, bias)
    p.sub_(lse_rows).exp2_()
    dp = do @ v_x.T
    p_used = p
    if dropout_p:
        keep = _keep(p, gen, dropout_p)  # drawn right after the window's keep, as in forward
        p_used = p * keep
        dp.mul_(keep)
    ds = dp.sub_(delta_rows).mul_(p)
    dq[b, h, rows] += (ds @ k_x).flatten(0, 1)
    dk[b, h].index_add_(0, extras.pos, ds.flatten(0, 1).T @ q_rows.flatten(0, 1))
    dv[b, h].index_add_(0, extras.pos, p_used.flatten(0, 1).T @ do.flatten(0, 1))


def _stat_dtype(t: Tensor) -> torch.dtype:
    """Softmax statistics in at least float32 (bf16/fp16 inputs), float64 for float64."""
    return torch.promote_types(t.dtype, torch.float32)


def _generator(seed: int, tag, device) -> torch.Generator:
    """The same generator for the same chunk in forward and backward."""
    return torch.Generator(device=device).manual_seed((seed + zlib.crc32(repr(tag).encode())) % 2**63)


def _keep(p: Tensor, gen: torch.Generator, dropout_p: float) -> Tensor:
    """Dropout keep-mask scaled by 1/(1-p), regenerated identically in backward from the chunk's generator."""
    keep = torch.rand(p.shape, generator=gen, device=p.device, dtype=p.dtype) >= dropout_p
    return keep.to(p.dtype) / (1.0 - dropout_p)


def _heads(heads: list[int], total: int) -> list[int] | None:
    return None if heads == list(range(total)) else heads


def _blocks(t: Tensor, heads: list[int] | None, block: int) -> Tensor:
    """[B, H, N(, D)] -> [B, h, N / block, block(, D)] for the selected heads (a view when all heads)."""
    if heads is not None:
        t = t[:, heads]
    return t.unflatten(2, (-1, block))


def _gather(blocks: Tensor, idx: Tensor) -> Tensor:
    """blocks [B, h, n_blocks, block(, D)], idx [R] or [R, S] -> [B, h, R, block(, D)] or [B, h, R, S · block(, D)]."""
    flat = idx.flatten()
    if len(flat) > 1 and int(flat[-1] - flat[0]) == len(flat) - 1 and bool((flat.diff() == 1).all()):
        out = blocks[:, :, int(flat[0]) : int(flat[-1]) + 1]  # one contiguous run (e.g. a global row): a view
    else:
        out = blocks.index_select(2, flat)  # whole-block copies: much faster than advanced indexing
    return out.unflatten(2, idx.shape).flatten(3, 4) if idx.dim() == 2 else out


def _take(t: Tensor, heads, rows: Tensor, block: int) -> Tensor:
    """t[:, heads, rows] on the blocked view, copying only those rows."""
    view = t.unflatten(2, (-1, block))
    if heads is None:
        return view.index_select(2, rows)
    idx = torch.tensor(heads, device=t.device)
    return view[:, idx[:, None], rows[None, :]]


def _put(dst: Tensor, heads, rows: Tensor, src: Tensor, block: int) -> None:
    """dst[:, heads, rows] = src, on the blocked view."""
    view = dst.unflatten(2, (-1, block))
    if heads is None:
        view[:, :, rows] = src.to(dst.dtype)
    else:
        idx = torch.tensor(heads, device=dst.device)
        view[:, idx[:, None], rows[None, :]] = src.to(dst.dtype)


def _add(dst: Tensor, heads, cols: Tensor, src: Tensor, block: int) -> None:
    """dst[:, heads, cols] += src with repeats summed; src: [B, h, R, S · block, D]."""
    view = dst.unflatten(2, (-1, block))  # [B, H, n_blocks, block, D]
    src = src.unflatten(3, (cols.shape[1], block)).flatten(2, 3)  # [B, h, R · S, block, D]
    if heads is None:
        view.index_add_(2, cols.flatten(), src)
    else:
        for i, h in enumerate(heads):
            view[:, h].index_add_(1, cols.flatten(), src[:, i])
