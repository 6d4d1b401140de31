"""Linformer: Self-Attention with Linear Complexity (Wang et al., 2020). arxiv.org/abs/2006.04768

Keys and values are projected along the sequence axis, n -> k, by learned matrices E and F
before softmax attention: every query attends to k projected keys, so time and memory are
O(N·k·D) instead of O(N²·D). Sharing (the paper's "parameter sharing"): one E, F per head ("none"), one E, F shared by
the heads ("headwise"), one matrix for keys and values ("kv"), and across layers (pass the same
``projection`` to every layer).
b batch, h heads, n positions, k projected length, d head dim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from attnzoo.core.checks import check_dropout, check_int, check_mask, check_qkv, resolve_scale
from attnzoo.core.info import MechanismInfo

Sharing = Literal["none", "headwise", "kv"]
SHARINGS = ("none", "headwise", "kv")
DEFAULT_K = 256  # the paper's k for its long-sequence experiments
CAUSAL_MESSAGE = (
    "causal=True is not supported: every projected key mixes all positions, the future included (a naive "
    "causal Linformer leaks the future); for causal attention use compressed (causal-safe) or a kernel "
    "mechanism such as linear"
)


@dataclass
class LinformerConfig:
    k: int | None = None  # projected length; None = min(256, max_len)
    sharing: Sharing = "headwise"  # "none" (E, F per head), "headwise" (E, F shared by heads), "kv" (E = F)
    projection: nn.Parameter | None = None  # layerwise sharing: one [max_len, k] E = F given to every layer (sharing="kv")
    scale: float | None = None  # None = 1/sqrt(D)
    dropout_p: float = 0.0  # on the [N, k] attention weights


def linformer_projection(max_len: int, k: int, *, heads: int | None = None) -> nn.Parameter:
    """A fresh projection [max_len, k] (or per head [heads, max_len, k]), initialised as the authors'
    fairseq code does: Xavier-uniform with gain 1/√2, i.e. uniform ±sqrt(3 / (max_len + k)).

    For layerwise sharing make one and pass it to every layer::

        shared = linformer_projection(512, 64)
        layers = [attnzoo.build("linformer", dim=256, heads=4, max_len=512, k=64, sharing="kv", projection=shared)
                  for _ in range(6)]
    """
    check_int(max_len, "max_len", minimum=1, where="linformer_projection")
    check_int(k, "k", minimum=1, where="linformer_projection")
    if heads is not None:
        check_int(heads, "heads", minimum=1, where="linformer_projection")
    shape = (max_len, k) if heads is None else (heads, max_len, k)
    bound = math.sqrt(3.0 / (max_len + k))
    return nn.Parameter(torch.empty(shape).uniform_(-bound, bound))


def _check_projection(proj, name: str, heads: int, n: int) -> None:
    where = "linformer_attention"
    if not isinstance(proj, Tensor) or not proj.is_floating_point():
        raise ValueError(f"{where}: {name} must be a floating-point tensor [N_max, K] or [H, N_max, K], got {type(proj).__name__}")
    if proj.dim() not in (2, 3) or (proj.dim() == 3 and proj.shape[0] != heads):
        raise ValueError(
            f"{where}: {name} must be [N_max, K] (shared by heads) or [H={heads}, N_max, K] (per head), got {tuple(proj.shape)}"
        )
    if proj.shape[-2] < n:
        raise ValueError(
            f"linformer needs max_len >= N: got N={n}, max_len={proj.shape[-2]} ({name} has {proj.shape[-2]} rows); "
            f"build it with max_len={n}"
        )


def _project(x: Tensor, proj: Tensor) -> Tensor:
    """[B, H, N, D] -> [B, H, K, D] with the first N rows of proj [N_max, K] or [H, N_max, K]."""
    n, proj = x.shape[2], proj.to(x.dtype)
    return proj[..., :n, :].transpose(-1, -2) @ x  # [K, N] or [H, K, N] @ [B, H, N, D]: no copy of x (einsum makes one)


def linformer_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    proj_k: Tensor,
    proj_v: Tensor,
    *,
    mask: Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
) -> Tensor:
    """Linformer attention. q, k, v: [B, H, N, D]; proj_k, proj_v: [N_max, K] or per head
    [H, N_max, K] (N_max >= N; the first N rows are used); mask: [B, N] bool. Returns [B, H, N, D].

    Equivalent to: E = proj_k[:N], F = proj_v[:N], padded rows of k and v zeroed, then
    softmax(q @ (Eᵀ k)ᵀ · scale) @ (Fᵀ v), with dropout on those [N, K] weights.

    Note:
        Padding is removed by zeroing its rows before the projection, so padded content never
        reaches a real query; the K projected keys stay, each a mix of the real positions only.
        Passing the same tensor as proj_k and proj_v is key-value sharing. ``causal=True`` raises:
        every projected key mixes all positions, the future included.
    """
    if causal:
        raise ValueError(f"linformer_attention: {CAUSAL_MESSAGE}")
    check_qkv(q, k, v, "linformer_attention")
    check_mask(mask, q, "linformer_attention")
    check_dropout(dropout_p, "linformer_attention")
    scale = resolve_scale(scale, q.shape[-1], "linformer_attention")
    heads, n = q.shape[1], q.shape[2]
    _check_projection(proj_k, "proj_k", heads, n)
    _check_projection(proj_v, "proj_v", heads, n)
    if proj_k.shape[-1] != proj_v.shape[-1]:
        raise ValueError(
            f"linformer_attention: proj_k and proj_v must project to the same length K, got {proj_k.shape[-1]} and {proj_v.shape[-1]}"
        )
    if proj_k.device != q.device or proj_v.device != q.device:
        raise ValueError(f"linformer_attention: projections are on {proj_k.device}, {proj_v.device} but q is on {q.device}; move them")
    if mask is not None:
        keep = mask[:, None, :, None].to(k.dtype)  # [B, 1, N, 1]
        k, v = k * keep, v * keep
    k_proj, v_proj = _project(k, proj_k), _project(v, proj_v)  # [B, H, K, D]
    return F.scaled_dot_product_attention(q, k_proj, v_proj, dropout_p=dropout_p, scale=scale)


class Linformer(nn.Module):
    """Linformer core: owns the sequence projections (proj_k, proj_v; or proj when sharing="kv")."""

    info = MechanismInfo(
        paper="Wang et al. 2020, arxiv.org/abs/2006.04768",
        complexity="O(N·k·D) time, O(N·D + N·k) memory (the projections), k = projected length",
        causal=False,
        mask=True,
        variable_length=False,
    )

    def __init__(self, config: LinformerConfig, *, heads: int, head_dim: int, causal: bool, max_len: int | None):
        super().__init__()
        if causal:
            raise ValueError(f"linformer: {CAUSAL_MESSAGE}")
        if max_len is None:
            raise ValueError("linformer needs max_len (its projections have one row per position); build it with max_len=, e.g. max_len=512")
        check_int(max_len, "max_len", minimum=1, where="linformer")
        if config.sharing not in SHARINGS:
            raise ValueError(f"linformer: sharing must be one of {SHARINGS}, got {config.sharing!r}")
        if config.k is not None:
            check_int(config.k, "k", minimum=1, where="linformer")
        check_dropout(config.dropout_p, "linformer")
        resolve_scale(config.scale, head_dim, "linformer")
        self.config = config
        self.k = config.k if config.k is not None else min(DEFAULT_K, max_len)
        if config.projection is not None:
            self.proj = self._shared_projection(config, max_len)
        elif config.sharing == "kv":
            self.proj = linformer_projection(max_len, self.k)
        else:
            per_head = heads if config.sharing == "none" else None
            self.proj_k = linformer_projection(max_len, self.k, heads=per_head)
            self.proj_v = linformer_projection(max_len, self.k, heads=per_head)

    def _shared_projection(self, config: LinformerConfig, max_len: int) -> nn.Parameter:
        p = config.projection
        if config.sharing != "kv":
            raise ValueError(
                "linformer: projection= is layerwise sharing, one matrix for keys, values, heads and layers; "
                f"build with sharing='kv' (got sharing={config.sharing!r}) or drop projection="
            )
        if not isinstance(p, nn.Parameter):
            raise ValueError(
                f"linformer: projection must be an nn.Parameter (make one with linformer_projection(max_len, k)), got {type(p).__name__}"
            )
        if tuple(p.shape) != (max_len, self.k):
            raise ValueError(
                f"linformer: projection must be [max_len, k] = [{max_len}, {self.k}], got {tuple(p.shape)}; "
                f"build every layer with max_len={p.shape[0]}, k={p.shape[-1]}, or make it with linformer_projection({max_len}, {self.k})"
            )
        return p

    def projections(self) -> tuple[Tensor, Tensor]:
        """(proj_k, proj_v) as the function takes them."""
        if self.config.projection is not None or self.config.sharing == "kv":
            return self.proj, self.proj
        return self.proj_k, self.proj_v

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        p = self.config.dropout_p if self.training else 0.0
        proj_k, proj_v = self.projections()
        return linformer_attention(q, k, v, proj_k, proj_v, mask=mask, scale=self.config.scale, dropout_p=p)

    def from_input(self, x: Tensor, qkv: nn.Linear, heads: int, mask: Tensor | None = None) -> Tensor | None:
        """The layer's attention straight from its input x [B, N, C] and its q/k/v projection
        ``qkv`` (C -> 3C): [B, H, N, D]; None with per-head E, F (then the usual order is cheaper).

        Equivalent to: forward(q, k, v, mask) on q, k, v = qkv(x) split into heads. With E shared by
        the heads, projecting along the sequence first is cheaper, Eᵀ(X W + 1 bᵀ) = (Eᵀ X) W + (Eᵀ 1) bᵀ:
        K·N·C + K·C² instead of N·C² + K·N·C for each of k and v (and Eᵀ X is made once for k and v
        when sharing="kv"), so the k and v projections of every position are never formed.
        """
        proj_k, proj_v = self.projections()
        if proj_k.dim() == 3 or proj_v.dim() == 3:
            return None
        n = x.shape[1]
        w_q, w_k, w_v = qkv.weight.chunk(3)
        b_q, b_k, b_v = (None, None, None) if qkv.bias is None else qkv.bias.chunk(3)
        q = rearrange(F.linear(x, w_q, b_q), "b n (h d) -> b h n d", h=heads)
        check_mask(mask, q, "linformer")
        for name, proj in (("proj_k", proj_k), ("proj_v", proj_v)):
            _check_projection(proj, name, heads, n)
        keep = None if mask is None else mask.to(x.dtype).unsqueeze(-1)  # [B, N, 1]: padded rows count as 0
        x = x if keep is None else x * keep

        def pooled(proj: Tensor) -> tuple[Tensor, Tensor]:  # Eᵀ X [B, K, C] and Eᵀ 1 [K, 1] or [B, K, 1]
            e = proj[:n].to(x.dtype).transpose(0, 1)  # [K, N]
            return e @ x, (e.sum(-1, keepdim=True) if keep is None else e @ keep)

        def projected(pool: tuple[Tensor, Tensor], w: Tensor, b: Tensor | None) -> Tensor:  # -> [B, H, K, D]
            ex, ones = pool
            out = F.linear(ex, w) if b is None else torch.addcmul(F.linear(ex, w), ones, b)
            return rearrange(out, "b k (h d) -> b h k d", h=heads)

        pool_k = pooled(proj_k)
        pool_v = pool_k if proj_v is proj_k else pooled(proj_v)
        p = self.config.dropout_p if self.training else 0.0
        scale = resolve_scale(self.config.scale, q.shape[-1], "linformer")
        return F.scaled_dot_product_attention(q, projected(pool_k, w_k, b_k), projected(pool_v, w_v, b_v), dropout_p=p, scale=scale)

    @torch.no_grad()
    def implied_weights(self, q: Tensor, k: Tensor, mask: Tensor | None = None) -> Tensor:
        """[B, H, N, N]: softmax(q (Eᵀk)ᵀ · scale) Fᵀ, the map the mechanism implies (small N).

        Linear in v, so it is the output for v = I_N. Rows need not sum to 1 (F mixes positions
        with any signs); padded keys get no weight.
        """
        b, h, n, _ = q.shape
        eye = torch.eye(n, dtype=q.dtype, device=q.device).expand(b, h, n, n)
        proj_k, proj_v = self.projections()
        return linformer_attention(q, k, eye, proj_k, proj_v, mask=mask, scale=self.config.scale)

    def computed_pairs(self, n: int) -> Tensor:
        """Bool [1, N, N]: every pair is in the implied map (through the projection)."""
        return torch.ones(1, n, n, dtype=torch.bool)
