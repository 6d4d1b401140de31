"""Sinusoidal absolute positions (Vaswani et al. 2017, arxiv.org/abs/1706.03762). n positions, c width."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_positions(n: int, dim: int, *, base: float = 10000.0, device=None, dtype=torch.float32) -> Tensor:
    """[N, C]: even columns sin(p / base^(2i/C)), odd columns cos of the same angle."""
    if dim % 2:
        raise ValueError(f"sinusoidal positions need an even width, got dim={dim}")
    pos = torch.arange(n, device=device, dtype=torch.float64)[:, None]
    freq = torch.exp(-math.log(base) * torch.arange(0, dim, 2, device=device, dtype=torch.float64) / dim)
    out = torch.empty(n, dim, device=device, dtype=torch.float64)
    out[:, 0::2], out[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
    return out.to(dtype)


class SinusoidalPosition(nn.Module):
    """x [B, N, C] -> x + sinusoidal_positions(N, C). No parameters, any N. ``mask`` is accepted (the
    input-level signature) and ignored: positions are indices 0..N-1, padding included."""

    level = "input"
    paper = "Vaswani et al. 2017, Attention Is All You Need, arxiv.org/abs/1706.03762"

    def __init__(self, dim: int, max_len: int | None = None):
        super().__init__()
        if dim % 2:
            raise ValueError(f"sinusoidal positions need an even width, got dim={dim}")
        self.dim = dim

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return x + sinusoidal_positions(x.shape[1], self.dim, device=x.device, dtype=x.dtype)
