"""Efficient attention (Shen et al. 2018/2021, "Efficient Attention: Attention with Linear
Complexities", arxiv.org/abs/1812.01243).

Softmax over each query's features times softmax over the keys' positions:
E(Q, K, V) = ρ_q(Q) (ρ_k(K)ᵀ V), with ρ_q = softmax along d and ρ_k = softmax along n.
Causal: the key softmax runs over positions j ≤ i only.
b batch, h heads, n positions, d head dim (= the features), e value dim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import einsum
from torch import Tensor

from attnzoo.core.checks import check_int, check_mask, check_qkv
from attnzoo.core.info import MechanismInfo
from attnzoo.kernel.core import FeatureCore
from attnzoo.kernel.feature_attention import KernelState, feature_attention, feature_inputs, work_dtype


@dataclass
class EfficientConfig:
    chunk: int = 64  # causal prefix sums: positions per chunk


class EfficientState(NamedTuple):
    """The causal state: per feature d, Σ_j exp(k_jd) v_j and Σ_j exp(k_jd), kept relative to ``ref``."""

    kv: Tensor  # [B, H, D, E]  Σ_j exp(k_jd − ref_d) v_j
    log_z: Tensor  # [B, H, D]  log Σ_j exp(k_jd)
    ref: Tensor  # [B, H, D]


def efficient_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    mask: Tensor | None = None,
    causal: bool = False,
    chunk: int = 64,
    initial_state: EfficientState | None = None,
    return_state: bool = False,
) -> Tensor | tuple[Tensor, EfficientState]:
    """q, k: [B, H, N, D]; v: [B, H, N, E]; mask: [B, N] bool. Returns [B, H, N, E] (and the state).

    Equivalent to: out_i = Σ_d softmax_d(q_i)_d · Σ_{j visible} softmax_{j visible}(k_{·d})_j v_j,
    visible = real keys (and j ≤ i if causal).

    Note:
        Causal: the per-feature normalizer z_i = Σ_{j≤i} exp(k_jd − ref_d), ref_d the largest key of
        feature d, is a prefix sum folded into the query side (softmax(q)_d / z_id); the rest is an
        unnormalized causal linear attention on exp(k − ref) ≤ 1. Exact unless, within one
        feature, a later key exceeds every key an earlier query sees by more than ~87 (float32
        underflow of exp(k − ref): that query then sees nothing through that feature).
    """
    check_qkv(q, k, v, "efficient_attention")
    check_mask(mask, q, "efficient_attention")
    check_int(chunk, "chunk", minimum=1, where="efficient_attention")
    work = work_dtype(v.dtype)
    rho_q = torch.softmax(feature_inputs(q, mask), dim=-1)
    k = k.to(work)
    if mask is not None:
        k = k.masked_fill(~mask[:, None, :, None], float("-inf"))  # padded keys leave every softmax over positions
    ref = k.amax(2).detach()  # [B, H, D]; cancels exactly, only keeps exp in range
    if initial_state is not None:
        ref = torch.maximum(ref, initial_state.ref.to(work))
    ref = torch.where(torch.isfinite(ref), ref, torch.zeros_like(ref))
    phi_k = torch.exp(k - ref[:, :, None])  # [B, H, N, D], 0 at padding
    # z_i = Σ_{j≤i} exp(k_j − ref): the key softmax's normalizer per feature, relative to ref
    z = _cumsum_positions(phi_k, chunk) if causal else phi_k.sum(2, keepdim=True)
    kv0 = None
    if initial_state is not None:
        z = z + torch.exp(initial_state.log_z.to(work) - ref)[:, :, None]
        kv0 = KernelState(initial_state.kv.to(work) * torch.exp(initial_state.ref.to(work) - ref)[..., None], None)
    seen = z > 0  # False where a query sees no key yet: it gets zeros
    phi_q = rho_q * seen / torch.where(seen, z, torch.ones_like(z))
    out, state = feature_attention(phi_q, phi_k, v, causal=causal, normalize=False, chunk=chunk, initial_state=kv0, return_state=True)
    if not return_state:
        return out
    return out, EfficientState(state.kv, torch.log(z[:, :, -1]) + ref, ref)


def _cumsum_positions(x: Tensor, chunk: int) -> Tensor:
    """Inclusive cumsum along n of [B, H, N, D], in two cache-sized levels (chunks, then chunk totals)."""
    b, h, n, d = x.shape
    pad = (-n) % chunk
    blocks = (F.pad(x, (0, 0, 0, pad)) if pad else x).view(b, h, (n + pad) // chunk, chunk, d)
    inner = blocks.cumsum(3)
    totals = inner[:, :, :, -1]  # [B, H, C, D]
    before = totals.cumsum(2) - totals  # exclusive over chunks; exact 0 for the first
    return (inner + before[:, :, :, None]).view(b, h, n + pad, d)[:, :, :n]


def efficient_step(q: Tensor, k: Tensor, v: Tensor, state: EfficientState | None) -> tuple[Tensor, EfficientState]:
    """One causal token: q, k [B, H, D], v [B, H, E] -> (out [B, H, E], state).

    Equivalent to: ref ← max(ref, k); kv ← kv·exp(ref_old − ref) + exp(k − ref) vᵀ;
    log z ← logaddexp(log z, k); out = Σ_d softmax(q)_d exp(ref_d − log z_d) kv_d.
    """
    out_dtype, work = v.dtype, work_dtype(v.dtype)
    q, k, v = q.to(work), k.to(work), v.to(work)
    if state is None:
        ref, kv, log_z = k.detach(), torch.zeros(k.shape + v.shape[-1:], dtype=work, device=v.device), k
    else:
        ref = torch.maximum(state.ref, k).detach()
        kv, log_z = state.kv * torch.exp(state.ref - ref)[..., None], torch.logaddexp(state.log_z, k)
    kv = kv + einsum(torch.exp(k - ref), v, "b h d, b h e -> b h d e")
    out = einsum(torch.softmax(q, dim=-1) * torch.exp(ref - log_z), kv, "b h d, b h d e -> b h e")
    return out.to(out_dtype), EfficientState(kv, log_z, ref)


class Efficient(FeatureCore):
    info = MechanismInfo(
        paper="Shen et al. 2021, arxiv.org/abs/1812.01243",
        complexity="O(N·D·E) time, O(N·(D + E)) memory (causal: chunked prefix sums)",
        causal=True,
        mask=True,
    )

    def __init__(self, config: EfficientConfig, *, heads: int, head_dim: int, causal: bool, max_len: int | None):
        super().__init__(causal=causal)
        check_int(config.chunk, "chunk", minimum=1, where="efficient")
        self.config = config

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        return efficient_attention(q, k, v, mask=mask, causal=self.causal, chunk=self.config.chunk)

    def feature_dim(self, head_dim: int) -> int:
        return head_dim  # the softmax over q's features keeps all D of them

    def step(self, q: Tensor, k: Tensor, v: Tensor, state: EfficientState | None) -> tuple[Tensor, EfficientState]:
        if not self.causal:
            raise ValueError("efficient: step decodes causal attention; build the layer with causal=True")
        return efficient_step(q, k, v, state)
