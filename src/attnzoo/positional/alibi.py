"""ALiBi, attention with linear biases (Press, Smith & Lewis 2022, "Train Short, Test Long").
arxiv.org/abs/2108.12409

No position embeddings: head h adds −m_h · distance to its attention scores, a fixed per-head slope
m_h (a geometric sequence) times how far the key is from the query. Nothing is learned; any N.
The paper is causal (bias −m_h·(i − j), j ≤ i); for encoders this module uses the symmetric
−m_h·|i − j|, which equals the paper's bias wherever a causal mask lets a query look (j ≤ i).
h heads, i query positions, j key positions.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from attnzoo.core.checks import check_int


def alibi_slopes(heads: int, *, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
    """[H] slopes m_h, the paper's rule (its reference ``get_slopes``).

    Equivalent to: H a power of two: m_h = 2^(−8(h+1)/H), h = 0..H−1. Otherwise, with P the largest
    power of two below H: the P slopes for P, then slopes 0, 2, 4, ... of the 2P slopes for 2P
    (those not already present), the first H − P of them.
    """
    check_int(heads, "heads", minimum=1, where="alibi_slopes")

    def power_of_two(p: int) -> list[float]:
        return [2.0 ** (-8.0 * (h + 1) / p) for h in range(p)]

    below = 2 ** int(math.floor(math.log2(heads)))
    slopes = power_of_two(below) + power_of_two(2 * below)[0::2][: heads - below]
    return torch.tensor(slopes, dtype=dtype, device=device)


def alibi_bias(n: int, slopes: Tensor) -> Tensor:
    """slopes [H] -> [H, N, N] in slopes' dtype and device.

    Equivalent to: bias[h, i, j] = −slopes[h] · |i − j|.
    """
    check_int(n, "n", minimum=1, where="alibi_bias")
    pos = torch.arange(n, device=slopes.device, dtype=slopes.dtype)
    return -slopes[:, None, None] * (pos[None, :] - pos[:, None]).abs()


class ALiBi(nn.Module):
    """Score-level encoding: ``bias(q, k, scale)`` -> [1, H, N, N], −m_h·|i − j| in q's dtype and device.

    Args:
        heads: H, one slope per head (``alibi_slopes``).
        head_dim: D, checked against q only (ALiBi has no per-channel part).
        max_len: accepted for the common signature and ignored: ALiBi needs no table, any N works.

    Note:
        The bias is added after scaling, as in the paper (softmax(scale·q kᵀ + bias)): ``scale`` is not
        applied to it. It does not depend on causality; the attention layer adds causal and padding masks.
        There is no value term (``has_value_term`` is False).
    """

    level = "distance"  # a bias that depends on |i − j| alone: wherever scores are formed, blocked ones included
    paper = "Press, Smith & Lewis 2022, Train Short, Test Long: Attention with Linear Biases, arxiv.org/abs/2108.12409"
    has_value_term = False

    def __init__(self, heads: int, head_dim: int, *, max_len: int | None = None):
        super().__init__()
        check_int(heads, "heads", minimum=1, where="alibi")
        check_int(head_dim, "head_dim", minimum=1, where="alibi")
        if max_len is not None:
            check_int(max_len, "max_len", minimum=1, where="alibi")
        self.heads, self.head_dim = heads, head_dim
        # [H] float64 on the CPU, a plain attribute rather than a buffer so .float()/.half() never round it:
        # each call casts it once to the working dtype on q's device (H numbers)
        self.slopes = alibi_slopes(heads)

    def bias(self, q: Tensor, k: Tensor, scale: float) -> Tensor:
        """q, k [B, H, N, D] -> [1, H, N, N]; only their shape, dtype and device are used."""
        for name, t in (("q", q), ("k", k)):
            if not isinstance(t, Tensor) or t.dim() != 4:
                got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(f"alibi: {name} must be [B, H, N, D] (4 dims), got {got}")
        if q.shape != k.shape:
            raise ValueError(f"alibi: q and k must have the same shape [B, H, N, D], got {tuple(q.shape)} and {tuple(k.shape)}")
        if q.shape[1] != self.heads:
            raise ValueError(f"alibi: built for heads={self.heads}, got q with H={q.shape[1]}; build it with heads={q.shape[1]}")
        # distances·slopes in at least float32 (bf16 cannot even hold the distances past 256), then q's dtype
        work = torch.promote_types(q.dtype, torch.float32)
        return alibi_bias(q.shape[2], self.slopes.to(device=q.device, dtype=work)).to(q.dtype)[None]

    def value_term(self, weights: Tensor) -> Tensor:
        raise ValueError("alibi has no value term (has_value_term is False); add only its bias to the scores")

    def extra_repr(self) -> str:
        return f"heads={self.heads}"
