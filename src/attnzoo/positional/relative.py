"""Relative position representations (Shaw, Uszkoreit & Vaswani 2018). arxiv.org/abs/1803.02155

Attention between positions i and j sees their clipped distance r = clip(j − i, −K, K) through two
learned tables shared by the heads (as in the paper): a^K adds to the key, a^V to the value,

    e_ij = scale · q_i · (k_j + a^K_r),        z_i = Σ_j w_ij (v_j + a^V_r).

The score-level protocol splits these: ``bias`` is scale · q_i · a^K_r (added to scale · q kᵀ by the
attention layer) and ``value_term`` is Σ_j w_ij a^V_r (added to w v). Neither builds the [N, N, D]
tensor of the paper's naive form: q is multiplied with the 2K+1 table rows once ([B, H, N, 2K+1])
and then gathered (bias) or the weights are summed into 2K+1 distance buckets first (value term).
b batch, h heads, i query positions, j key positions, r distance buckets (2K+1), d head dim.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnzoo.core.checks import check_int

DEFAULT_MAX_DISTANCE = 16  # the clipping distance of the paper's main translation runs (its Table 3 varies it)


def relative_index(n: int, max_distance: int, *, device=None) -> Tensor:
    """LongTensor [N, N]: bucket of (query i, key j).

    Equivalent to: index[i, j] = clip(j − i, −K, K) + K, K = max_distance (values in 0..2K).
    """
    pos = torch.arange(n, device=device)
    return (pos[None, :] - pos[:, None]).clamp(-max_distance, max_distance) + max_distance


def relative_bias(q: Tensor, emb_k: Tensor, *, max_distance: int, scale: float) -> Tensor:
    """q [B, H, N, D], emb_k [2K+1, D] -> [B, H, N, N], the key term of Shaw's score.

    Equivalent to: bias[b, h, i, j] = scale · q[b, h, i] · emb_k[clip(j − i, −K, K) + K].
    Computed as (q @ emb_kᵀ) [B, H, N, 2K+1] gathered by ``relative_index``: O(N·K·D + N²), no [N, N, D].
    """
    b, h, n, _ = q.shape
    per_bucket = q @ emb_k.to(q.dtype).transpose(0, 1)  # [B, H, N, R]
    index = relative_index(n, max_distance, device=q.device).expand(b, h, n, n)
    return scale * per_bucket.gather(-1, index)


def relative_values(weights: Tensor, emb_v: Tensor, *, max_distance: int) -> Tensor:
    """weights [B, H, N, N], emb_v [2K+1, D] -> [B, H, N, D], the value term of Shaw's output.

    Equivalent to: out[b, h, i] = Σ_j weights[b, h, i, j] · emb_v[clip(j − i, −K, K) + K].
    Computed by summing the weights into 2K+1 buckets per query (scatter-add, [B, H, N, 2K+1]),
    then one product with emb_v: O(N² + N·K·D), no [N, N, D].
    """
    b, h, n, _ = weights.shape
    index = relative_index(n, max_distance, device=weights.device).expand(b, h, n, n)
    buckets = weights.new_zeros(b, h, n, 2 * max_distance + 1).scatter_add(-1, index, weights)  # [B, H, N, R]
    return buckets @ emb_v.to(weights.dtype)


def _check_qk(q: Tensor, k: Tensor, heads: int, head_dim: int, where: str) -> None:
    for name, t in (("q", q), ("k", k)):
        if not isinstance(t, Tensor) or t.dim() != 4:
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{where}: {name} must be [B, H, N, D] (4 dims), got {got}")
    if q.shape != k.shape:
        raise ValueError(
            f"{where}: q and k must have the same shape [B, H, N, D] (self-attention, positions 0..N-1 for both), "
            f"got q {tuple(q.shape)} and k {tuple(k.shape)}"
        )
    if q.shape[1] != heads or q.shape[3] != head_dim:
        raise ValueError(
            f"{where}: built for heads={heads}, head_dim={head_dim}, got q with H={q.shape[1]}, D={q.shape[3]}; "
            f"build it with heads={q.shape[1]}, head_dim={q.shape[3]}"
        )


class RelativePosition(nn.Module):
    """Shaw et al.'s relative positions as a score-level encoding (any N; no max_len needed).

    Args:
        heads: H, checked against q (the tables are shared by the heads, as in the paper).
        head_dim: D, the width of a^K and a^V.
        max_len: accepted for the common signature and ignored: clipping makes any N valid.
        max_distance: K, distances beyond ±K share the last table row (default 16).
        values: also learn a^V and add the value term (the paper's eq. 3); default False (keys only).

    Note:
        The paper does not state an initialisation; both tables start N(0, 0.02²), like this
        library's learned absolute positions. ``bias`` does not depend on causality: the attention
        layer adds causal and padding masks, so under a causal mask the keys past i are simply never seen.
    """

    level = "score"
    paper = "Shaw, Uszkoreit & Vaswani 2018, Self-Attention with Relative Position Representations, arxiv.org/abs/1803.02155"

    def __init__(
        self,
        heads: int,
        head_dim: int,
        *,
        max_len: int | None = None,
        max_distance: int = DEFAULT_MAX_DISTANCE,
        values: bool = False,
    ):
        super().__init__()
        check_int(heads, "heads", minimum=1, where="relative positions")
        check_int(head_dim, "head_dim", minimum=1, where="relative positions")
        check_int(max_distance, "max_distance", minimum=1, where="relative positions")
        if max_len is not None:
            check_int(max_len, "max_len", minimum=1, where="relative positions")
        if not isinstance(values, bool):
            raise ValueError(f"relative positions: values must be True or False, got {values!r}")
        self.heads, self.head_dim, self.max_distance = heads, head_dim, max_distance
        self.has_value_term = values
        self.emb_k = nn.Parameter(torch.randn(2 * max_distance + 1, head_dim) * 0.02)  # a^K, row r = distance r − K
        self.emb_v = nn.Parameter(torch.randn(2 * max_distance + 1, head_dim) * 0.02) if values else None  # a^V

    def bias(self, q: Tensor, k: Tensor, scale: float) -> Tensor:
        """q, k [B, H, N, D] -> [B, H, N, N] added to scale · q kᵀ (k only fixes the shape: a^K replaces
        nothing of k). See ``relative_bias``."""
        _check_qk(q, k, self.heads, self.head_dim, "relative positions")
        return relative_bias(q, self.emb_k, max_distance=self.max_distance, scale=scale)

    def value_term(self, weights: Tensor) -> Tensor:
        """weights [B, H, N, N] (after softmax and masks) -> [B, H, N, D] added to weights @ v.
        See ``relative_values``."""
        if not self.has_value_term:
            raise ValueError("relative positions: built with values=False, so there is no value term; build with values=True")
        if not isinstance(weights, Tensor) or weights.dim() != 4 or weights.shape[-1] != weights.shape[-2]:
            got = tuple(weights.shape) if isinstance(weights, Tensor) else type(weights).__name__
            raise ValueError(f"relative positions: value_term needs attention weights [B, H, N, N], got {got}")
        if weights.shape[1] != self.heads:
            raise ValueError(f"relative positions: built for heads={self.heads}, got weights with H={weights.shape[1]}")
        return relative_values(weights, self.emb_v, max_distance=self.max_distance)

    def extra_repr(self) -> str:
        return f"heads={self.heads}, head_dim={self.head_dim}, max_distance={self.max_distance}, values={self.has_value_term}"
