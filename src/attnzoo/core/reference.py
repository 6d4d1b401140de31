"""The dense reference: softmax(q kᵀ · scale + mask) v, written out. The oracle every mechanism is tested against.

b batch, h heads, i query positions, j key positions, d head dim.
O(N²) time and memory: for tests, pictures and small N only.
"""

from __future__ import annotations

import torch
from einops import einsum
from torch import Tensor


def reference_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    allowed: Tensor | None = None,
    scale: float,
    bias: Tensor | None = None,
    dropout_p: float = 0.0,
    return_weights: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Masked softmax attention, written out.

    Args:
        q, k, v: [B, H, N, D].
        allowed: bool, broadcastable to [B, H, N, N]; True where query i may see key j. None = all.
        scale: multiplies q·k before the softmax.
        bias: float, broadcastable to [B, H, N, N]; added to the scaled scores (positions). None = 0.
        dropout_p: dropout on the attention weights (training only; caller decides).
        return_weights: also return the [B, H, N, N] weights.

    Returns:
        [B, H, N, D], and the weights if asked. A query with no visible key gets zeros (and zero
        gradients), never NaN.
    """
    scores = einsum(q, k, "b h i d, b h j d -> b h i j") * scale
    if bias is not None:
        scores = scores + bias
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    weights = safe_softmax(scores)
    dropped = torch.nn.functional.dropout(weights, dropout_p) if dropout_p > 0 else weights
    out = einsum(dropped, v, "b h i j, b h j d -> b h i d")
    return (out, weights) if return_weights else out


def safe_softmax(scores: Tensor) -> Tensor:
    """softmax over the last axis where a row of all -inf gives zeros (and zero gradients), not NaN."""
    # Subtract 0 instead of -inf on empty rows, so exp gives 0 everywhere.
    row_max = scores.amax(dim=-1, keepdim=True).detach()
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    unnorm = torch.exp(scores - row_max)
    denom = unnorm.sum(dim=-1, keepdim=True)
    return unnorm / torch.where(denom > 0, denom, torch.ones_like(denom))
