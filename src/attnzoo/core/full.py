"""Exact softmax attention (Vaswani et al., 2017. arxiv.org/abs/1706.03762), and the additive score
of Bahdanau et al. (2015. arxiv.org/abs/1409.0473).

b batch, h heads, i query positions, j key positions, d head dim, e additive hidden width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import einsum
from torch import Tensor, nn

from attnzoo.core.checks import check_dropout, check_mask, check_qkv, resolve_scale
from attnzoo.core.info import MechanismInfo
from attnzoo.core.masks import visible_keys
from attnzoo.core.reference import reference_attention, safe_softmax


@dataclass
class FullConfig:
    score: Literal["dot", "additive"] = "dot"  # q·k (Vaswani) or vᵀ tanh(W q + U k) (Bahdanau)
    scale: float | None = None  # None = 1/sqrt(D); 1.0 = plain dot-product attention
    dropout_p: float = 0.0


def full_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    mask: Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    bias: Tensor | None = None,
    dropout_p: float = 0.0,
    return_weights: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Exact attention through torch SDPA. q, k, v: [B, H, N, D]; mask: [B, N] bool; bias: float,
    broadcastable to [B, H, N, N] (relative positions, ALiBi). Returns [B, H, N, D].

    Equivalent to: softmax(q @ kᵀ · scale + bias, masked to visible keys) @ v, with zeros for a
    query that sees no key.

    ``return_weights=True`` takes the dense reference path instead and also returns [B, H, N, N].

    Note:
        SDPA itself returns NaN for a row with no visible key (all padding, or causal with the
        first keys padded); those rows are given one dummy key and then zeroed, so outputs and
        gradients are finite.
    """
    check_qkv(q, k, v, "full_attention")
    check_mask(mask, q, "full_attention")
    check_dropout(dropout_p, "full_attention")
    scale = resolve_scale(scale, q.shape[-1], "full_attention")
    n = q.shape[2]
    if bias is not None:
        _check_bias(bias, q, "full_attention")
    if return_weights:
        allowed = visible_keys(mask, _causal_dense(n, q.device) if causal else None)
        return reference_attention(q, k, v, allowed=allowed, scale=scale, bias=bias, dropout_p=dropout_p, return_weights=True)
    if mask is None and bias is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=causal, scale=scale)
    allowed = visible_keys(mask, _causal_dense(n, q.device) if causal else None)
    if allowed is None:  # a bias alone: every row has keys
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), dropout_p=dropout_p, scale=scale)
    has_key = allowed.any(dim=-1, keepdim=True)  # [B, 1, N or 1, 1]
    allowed = allowed | ~has_key
    if bias is not None:  # one float mask: the bias where visible, -inf elsewhere
        allowed = torch.zeros((), dtype=q.dtype, device=q.device).masked_fill(~allowed, float("-inf")) + bias.to(q.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout_p, scale=scale)
    return out * has_key if not bool(has_key.all()) else out


def _check_bias(bias, q: Tensor, where: str) -> None:
    b, h, n, _ = q.shape
    ok = isinstance(bias, Tensor) and bias.is_floating_point() and bias.dim() == 4 and bias.shape[-2:] == (n, n)
    if not ok or any(s not in (1, t) for s, t in zip(bias.shape[:2], (b, h))):
        got = tuple(bias.shape) if isinstance(bias, Tensor) else type(bias).__name__
        raise ValueError(f"{where}: bias must be a float tensor broadcastable to [B, H, N, N] = [{b}, {h}, {n}, {n}], got {got}")


def additive_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    w_q: Tensor,
    w_k: Tensor,
    w_out: Tensor,
    *,
    mask: Tensor | None = None,
    causal: bool = False,
    bias: Tensor | None = None,
    dropout_p: float = 0.0,
    return_weights: bool = False,
    chunk: int = 128,
) -> Tensor | tuple[Tensor, Tensor]:
    """Additive (Bahdanau) attention. q, k, v: [B, H, N, D]; w_q, w_k: [H, D, E]; w_out: [H, E];
    bias: float, broadcastable to [B, H, N, N], added to the scores (positions).

    Equivalent to: softmax_j(w_outᵀ tanh(q_i W_q + k_j W_k) + bias_ij) @ v.

    Note:
        The score needs an [N, N, E] intermediate per head; queries are processed ``chunk`` at a
        time so memory stays O(chunk · N · E). Time is O(N² E): this is a reference mechanism.
    """
    check_qkv(q, k, v, "additive_attention")
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"additive_attention: chunk must be a positive int (queries per step), got {chunk!r}")
    check_mask(mask, q, "additive_attention")
    check_dropout(dropout_p, "additive_attention")
    n = q.shape[2]
    qe = einsum(q, w_q, "b h i d, h d e -> b h i e")
    ke = einsum(k, w_k, "b h j d, h d e -> b h j e")
    scores = torch.cat(
        [
            einsum(torch.tanh(qe[:, :, s : s + chunk, None, :] + ke[:, :, None, :, :]), w_out, "b h i j e, h e -> b h i j")
            for s in range(0, n, chunk)
        ],
        dim=2,
    )
    if bias is not None:
        _check_bias(bias, q, "additive_attention")
        scores = scores + bias
    allowed = visible_keys(mask, _causal_dense(n, q.device) if causal else None)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    weights = safe_softmax(scores)
    dropped = F.dropout(weights, dropout_p) if dropout_p > 0 else weights
    out = einsum(dropped, v, "b h i j, b h j d -> b h i d")
    return (out, weights) if return_weights else out


def _causal_dense(n: int, device) -> Tensor:
    return torch.ones(n, n, dtype=torch.bool, device=device).tril()


class Full(nn.Module):
    """Exact attention core: SDPA for ``score="dot"``, learned Bahdanau scores for ``"additive"``."""

    info = MechanismInfo(
        paper="Vaswani et al. 2017, arxiv.org/abs/1706.03762 (additive: Bahdanau et al. 2015)",
        complexity="O(N² D) time; O(N) memory through SDPA (O(N²) bool mask with causal + padding); additive O(N² E)",
        causal=True,
        mask=True,
        scores=True,
    )

    def __init__(self, config: FullConfig, *, heads: int, head_dim: int, causal: bool, max_len: int | None):
        super().__init__()
        if config.score not in ("dot", "additive"):
            raise ValueError(f"full: score must be 'dot' or 'additive', got {config.score!r}")
        check_dropout(config.dropout_p, "full")
        resolve_scale(config.scale, head_dim, "full")
        if config.score == "additive" and config.scale is not None:
            raise ValueError("full: scale applies to dot-product scores only; drop scale= or use score='dot'")
        self.config, self.causal = config, causal
        if config.score == "additive":
            self.w_q = nn.Parameter(torch.randn(heads, head_dim, head_dim) / head_dim**0.5)
            self.w_k = nn.Parameter(torch.randn(heads, head_dim, head_dim) / head_dim**0.5)
            self.w_out = nn.Parameter(torch.randn(heads, head_dim) / head_dim**0.5)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, position: nn.Module | None = None) -> Tensor:
        """position: a score-level encoding (relative, ALiBi): its ``bias`` joins the scores and,
        where it has one, its ``value_term`` of the (dropped-out) weights joins the output."""
        p = self.config.dropout_p if self.training else 0.0
        scale = resolve_scale(self.config.scale, q.shape[-1], "full")
        bias = None if position is None else position.bias(q, k, scale)
        if position is not None and position.has_value_term:
            return self._with_value_term(q, k, v, mask, scale, bias, position, p)
        if self.config.score == "additive":
            return additive_attention(q, k, v, self.w_q, self.w_k, self.w_out, mask=mask, causal=self.causal, bias=bias, dropout_p=p)
        return full_attention(q, k, v, mask=mask, causal=self.causal, scale=scale, bias=bias, dropout_p=p)

    def _with_value_term(self, q, k, v, mask, scale: float, bias, position, p: float) -> Tensor:
        """Shaw et al.'s z_i = Σ_j w_ij (v_j + a^V_ij): the weights are needed explicitly."""
        if self.config.score == "additive":
            out, weights = additive_attention(q, k, v, self.w_q, self.w_k, self.w_out, mask=mask, causal=self.causal, bias=bias,
                                              return_weights=True)
        else:
            out, weights = full_attention(q, k, v, mask=mask, causal=self.causal, scale=scale, bias=bias, return_weights=True)
        if p > 0:  # one dropout mask for both terms
            weights = F.dropout(weights, p)
            out = einsum(weights, v, "b h i j, b h j d -> b h i d")
        return out + position.value_term(weights)

    @torch.no_grad()
    def implied_weights(self, q: Tensor, k: Tensor, mask: Tensor | None = None) -> Tensor:
        """q, k [B, H, N, D] -> [B, H, N, N]: the softmax weights (no dropout, no position bias), from
        the dense reference path (pictures, small N)."""
        if self.config.score == "additive":
            return additive_attention(q, k, k, self.w_q, self.w_k, self.w_out, mask=mask, causal=self.causal, return_weights=True)[1]
        scale = resolve_scale(self.config.scale, q.shape[-1], "full")
        return full_attention(q, k, k, mask=mask, causal=self.causal, scale=scale, return_weights=True)[1]

    def computed_pairs(self, n: int) -> Tensor:
        """Bool [1, N, N]: every pair (the lower triangle if causal)."""
        pairs = torch.ones(1, n, n, dtype=torch.bool)
        return pairs.tril() if self.causal else pairs
