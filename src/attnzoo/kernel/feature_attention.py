"""Attention through features, φ(Q)(φ(K)ᵀV): the product every kernel mechanism shares, in three
forms that must agree: the masked quadratic reference, the parallel form (all keys at once, or
causal prefix sums chunk by chunk), and the recurrent step (Katharopoulos et al. 2020,
"Transformers are RNNs", arxiv.org/abs/2006.16236).

b batch, h heads, n positions (i queries, j keys), m features, e value dim, c chunks, l position
within a chunk.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import einsum, rearrange
from torch import Tensor

from attnzoo.core.checks import check_int


class KernelState(NamedTuple):
    """What a causal kernel attention carries from one token (or segment) to the next."""

    kv: Tensor  # [B, H, M, E]  Σ_j φ(k_j) v_jᵀ
    z: Tensor | None  # [B, H, M]  Σ_j φ(k_j); None for unnormalized attention


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half inputs are computed in float32 (feature exponentials and running sums need the range)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def feature_inputs(x: Tensor, mask: Tensor | None) -> Tensor:
    """x [B, H, N, ·] in the working precision with padded positions set to 0, so features of padding
    stay finite (and so do their gradients: a masked inf would still send 0·inf = NaN backwards)."""
    x = x.to(work_dtype(x.dtype))
    return x if mask is None else x.masked_fill(~mask[:, None, :, None], 0.0)


def feature_attention(
    phi_q: Tensor,
    phi_k: Tensor,
    v: Tensor,
    *,
    mask: Tensor | None = None,
    causal: bool = False,
    normalize: bool = True,
    log_decay: Tensor | None = None,
    chunk: int = 64,
    initial_state: KernelState | None = None,
    return_state: bool = False,
) -> Tensor | tuple[Tensor, KernelState]:
    """φ(Q)(φ(K)ᵀV) in O(N·M·E) time and O(N·(M + E)) memory.

    Args:
        phi_q, phi_k: [B, H, N, M] query and key features.
        v: [B, H, N, E].
        mask: [B, N] bool, True = real token; padded keys leave numerator and normalizer.
        causal: query i sees keys j ≤ i (prefix sums, ``chunk`` positions at a time).
        normalize: divide by φ(q_i)·Σ_j φ(k_j) (rows of the implied attention sum to one).
        log_decay: [B, H, N] log gates ≤ 0 (causal only): the state decays by exp(log_decay_t)
            before token t is added, as in gated RFA.
        initial_state: keys seen before this sequence (visible to every query).
        return_state: also return the state after the last position.

    Returns:
        [B, H, N, E], and the final KernelState if asked. Computed in float32 for half inputs.

    Equivalent to: ``reference_feature_attention`` (A = φ(Q)φ(K)ᵀ masked, out = A V / A 1).

    Note:
        A query whose normalizer is exactly 0 (no visible key) gets zeros. Causal memory is
        O(N·(M + E) + N·C + N·M·E / C): chunk states are kept per chunk, not per position.
    """
    check_int(chunk, "chunk", minimum=1, where="feature_attention")
    if log_decay is not None and not causal:
        raise ValueError("feature_attention: log_decay (gating) needs causal=True; a gate orders the sequence")
    out_dtype, work = v.dtype, work_dtype(v.dtype)
    phi_q, phi_k, v = phi_q.to(work), phi_k.to(work), v.to(work)
    if mask is not None:
        phi_k = phi_k.masked_fill(~mask[:, None, :, None], 0.0)
        if log_decay is not None:
            log_decay = log_decay.masked_fill(~mask[:, None, :], 0.0)  # padding neither adds nor decays
    e = v.shape[-1]
    if normalize:
        v = torch.cat([v, v.new_ones(v.shape[:-1] + (1,))], dim=-1)  # last column accumulates Σ φ(k)
    kv0 = None
    if initial_state is not None:
        kv0 = initial_state.kv.to(work)
        if normalize:
            if initial_state.z is None:
                raise ValueError("feature_attention: normalized attention needs initial_state.z (Σ φ(k)); got None")
            kv0 = torch.cat([kv0, initial_state.z.to(work)[..., None]], dim=-1)
    if causal:
        out, kv = _causal(phi_q, phi_k, v, chunk, log_decay, kv0)
    else:
        kv = einsum(phi_k, v, "b h n m, b h n e -> b h m e")
        if kv0 is not None:
            kv = kv + kv0
        out = einsum(phi_q, kv, "b h n m, b h m e -> b h n e")
    if normalize:
        out = _divide(out[..., :e], out[..., e:])
    out = out.to(out_dtype)
    if not return_state:
        return out
    state = KernelState(kv[..., :e], kv[..., e]) if normalize else KernelState(kv, None)
    return out, state


def _divide(num: Tensor, den: Tensor) -> Tensor:
    """num / den, with 0 where den is exactly 0 (a query that sees no key)."""
    return num / torch.where(den == 0, torch.ones_like(den), den)


def _causal(q: Tensor, k: Tensor, v: Tensor, chunk: int, log_decay: Tensor | None, kv0: Tensor | None):
    """Chunked prefix sums: within a chunk the masked [L, L] product, across chunks a running state."""
    b, h, n, m = q.shape
    pad = (-n) % chunk
    if pad:  # zero features at the end: they add nothing and read nothing
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        log_decay = None if log_decay is None else F.pad(log_decay, (0, pad))
    qc, kc, vc = (rearrange(t, "b h (c l) x -> b h c l x", l=chunk) for t in (q, k, v))
    scores = einsum(qc, kc, "b h c i m, b h c j m -> b h c i j")
    if log_decay is None:
        scores = scores.tril()
        kv_chunk = einsum(kc, vc, "b h c j m, b h c j e -> b h c m e")
        prior = _exclusive_prefix_sum(kv_chunk)  # prior[c] = Σ of the chunks before c
        if kv0 is not None:
            prior = prior + kv0[:, :, None]
        final = prior[:, :, -1] + kv_chunk[:, :, -1]
        inter = einsum(qc, prior, "b h c i m, b h c m e -> b h c i e")
    else:
        g = rearrange(log_decay, "b h (c l) -> b h c l", l=chunk).cumsum(-1)  # [B, H, C, L] log Π gates up to i
        causal_pairs = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()
        # decay from key j to query i is Π_{j<t≤i} gate_t = exp(g_i − g_j); -inf first so exp never overflows
        pair = (g[..., :, None] - g[..., None, :]).masked_fill(~causal_pairs, float("-inf"))
        scores = scores * torch.exp(pair)
        to_end = torch.exp(g[..., -1:] - g)  # [B, H, C, L] decay from key j to the chunk's end
        kv_chunk = einsum(kc * to_end[..., None], vc, "b h c j m, b h c j e -> b h c m e")
        chunk_decay = torch.exp(g[..., -1])  # [B, H, C]
        state = kv0 if kv0 is not None else q.new_zeros(b, h, m, v.shape[-1])
        priors = []
        for c in range(kv_chunk.shape[2]):  # the state recurrence, one step per chunk
            priors.append(state)
            state = chunk_decay[:, :, c, None, None] * state + kv_chunk[:, :, c]
        prior, final = torch.stack(priors, dim=2), state
        inter = einsum(qc * torch.exp(g)[..., None], prior, "b h c i m, b h c m e -> b h c i e")
    out = inter + einsum(scores, vc, "b h c i j, b h c j e -> b h c i e")
    return rearrange(out, "b h c l e -> b h (c l) e")[:, :, :n], final


def _exclusive_prefix_sum(x: Tensor, group: int = 32) -> Tensor:
    """[B, H, C, M, E] -> the sum of the entries before each c along dim 2 (0 for the first).

    Two levels: cumsum inside groups of ``group`` chunks, then across group totals. A single
    cumsum over thousands of chunks walks memory column by column (stride M·E), several times
    slower on CPU than these cache-sized scans.
    """
    b, h, c, m, e = x.shape
    pad = (-c) % group
    blocks = (F.pad(x, (0, 0, 0, 0, 0, pad)) if pad else x).view(b, h, (c + pad) // group, group, m, e)
    inner = blocks.cumsum(3)  # inclusive within each group
    totals = inner[:, :, :, -1]  # [B, H, G, M, E]
    before = torch.cat([torch.zeros_like(totals[:, :, :1]), totals[:, :, :-1].cumsum(2)], dim=2)  # exclusive over groups
    inclusive = (inner + before[:, :, :, None]).view(b, h, c + pad, m, e)[:, :, :c]
    # shifting by one (rather than subtracting x) keeps it exact, and measured lower in peak memory
    return torch.cat([torch.zeros_like(inclusive[:, :, :1]), inclusive[:, :, :-1]], dim=2)


def feature_attention_step(
    phi_q: Tensor,
    phi_k: Tensor,
    v: Tensor,
    state: KernelState | None,
    *,
    normalize: bool = True,
    log_decay: Tensor | None = None,
) -> tuple[Tensor, KernelState]:
    """One causal token as a recurrence: constant memory per step.

    Args:
        phi_q, phi_k: [B, H, M]; v: [B, H, E]; log_decay: [B, H] or None.
        state: the previous KernelState, or None at the first token.

    Returns:
        (out [B, H, E], the new state).

    Equivalent to: kv ← g·kv + φ(k) vᵀ; z ← g·z + φ(k); out = φ(q)·kv / φ(q)·z.
    """
    out_dtype, work = v.dtype, work_dtype(v.dtype)
    phi_q, phi_k, v = phi_q.to(work), phi_k.to(work), v.to(work)
    kv = einsum(phi_k, v, "b h m, b h e -> b h m e")
    z = phi_k if normalize else None
    if state is not None:
        gate = torch.ones(()) if log_decay is None else torch.exp(log_decay.to(work))  # [B, H] or scalar
        kv = kv + state.kv.to(work) * gate[..., None, None]
        if normalize:
            if state.z is None:
                raise ValueError("feature_attention_step: normalized attention needs state.z; got None")
            z = z + state.z.to(work) * gate[..., None]
    out = einsum(phi_q, kv, "b h m, b h m e -> b h e")
    if normalize:
        out = _divide(out, einsum(phi_q, z, "b h m, b h m -> b h")[..., None])
    return out.to(out_dtype), KernelState(kv, z)


def reference_feature_attention(
    phi_q: Tensor,
    phi_k: Tensor,
    v: Tensor,
    *,
    mask: Tensor | None = None,
    causal: bool = False,
    normalize: bool = True,
    log_decay: Tensor | None = None,
) -> Tensor:
    """The masked quadratic form, written out: O(N²) time and memory, for tests and pictures.

    A = φ(Q)φ(K)ᵀ [B, H, N, N], keys masked (padding, j > i if causal), pairs decayed by
    Π_{j<t≤i} exp(log_decay_t); out = A V, divided by A 1 if ``normalize``.
    """
    n = phi_q.shape[2]
    a = einsum(phi_q, phi_k, "b h i m, b h j m -> b h i j")
    if mask is not None:
        a = a.masked_fill(~mask[:, None, None, :], 0.0)
        if log_decay is not None:
            log_decay = log_decay.masked_fill(~mask[:, None, :], 0.0)
    if causal:
        a = a.masked_fill(~torch.ones(n, n, dtype=torch.bool, device=a.device).tril(), 0.0)
    if log_decay is not None:
        g = log_decay.cumsum(-1)
        a = a * torch.exp((g[..., :, None] - g[..., None, :]).clamp(max=0.0))  # j ≤ i only (causal)
    out = einsum(a, v, "b h i j, b h j e -> b h i e")
    if normalize:
        den = a.sum(-1, keepdim=True)
        out = out / torch.where(den == 0, torch.ones_like(den), den)
    return out
