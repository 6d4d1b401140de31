"""Learned absolute positions (Gehring et al. 2017, arxiv.org/abs/1705.03122). n positions, c width."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LearnedPosition(nn.Module):
    """x [B, N, C] -> x + table[:N]; N must not exceed max_len. ``mask`` is accepted (the input-level
    signature) and ignored: positions are indices 0..N-1, padding included."""

    level = "input"
    paper = "Gehring et al. 2017, Convolutional Sequence to Sequence Learning, arxiv.org/abs/1705.03122"

    def __init__(self, dim: int, max_len: int | None):
        super().__init__()
        if not isinstance(max_len, int) or max_len < 1:
            raise ValueError(f"learned positions need max_len (a positive int), got {max_len!r}")
        self.max_len = max_len
        self.table = nn.Parameter(torch.randn(max_len, dim) * 0.02)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if x.shape[1] > self.max_len:
            raise ValueError(f"learned positions: N={x.shape[1]} > max_len={self.max_len}; build with max_len>={x.shape[1]}")
        return x + self.table[: x.shape[1]].to(x.dtype)
