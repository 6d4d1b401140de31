"""Rotary position embedding, RoPE (Su et al. 2021, RoFormer). arxiv.org/abs/2104.09864

Queries and keys are rotated by their position before the dot product: pair i of a row at position
n, (x[2i], x[2i+1]) read as the complex number x[2i] + 1j·x[2i+1], is multiplied by
e^{1j·n·θ_i}, θ_i = base^(−2i/D). Then rotary(q)_m · rotary(k)_n depends on m − n only, so q·k
carries relative position, and rotations keep norms. Pairing: interleaved, adjacent channels
(2i, 2i+1), as in the paper's eq. 34 (GPT-NeoX / LLaMA's "rotate_half" pairs i with i + D/2 instead;
the two are a fixed permutation of channels apart, not interchangeable for pretrained weights).
b batch, h heads, n positions, d head dim, i rotation pairs (D/2).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from attnzoo.core.checks import check_int


def _check_base(base: float, where: str) -> None:
    if isinstance(base, bool) or not isinstance(base, (int, float)) or not math.isfinite(base) or base <= 1.0:
        raise ValueError(f"{where}: base must be a finite number > 1 (RoFormer uses 10000.0), got {base!r}")


def _check_head_dim(d: int, where: str) -> None:
    if d % 2:
        raise ValueError(
            f"{where}: rotary rotates channel pairs, so the head dim D must be even, got D={d}; "
            f"choose dim and heads so that dim / heads is even (e.g. D={d + 1})"
        )


def rotary_angles(n: int, head_dim: int, *, base: float = 10000.0, offset: int = 0, device=None) -> Tensor:
    """float64 [N, D/2]: angle of pair i at row n.

    Equivalent to: angles[n, i] = (n + offset) · base^(−2i/D). Kept in float64 so positions in the
    millions keep their sub-radian accuracy (a float32 angle at 10^6 is off by up to 0.03 rad).
    """
    pos = torch.arange(offset, offset + n, device=device, dtype=torch.float64)
    inv_freq = torch.exp(-math.log(base) * torch.arange(0, head_dim, 2, device=device, dtype=torch.float64) / head_dim)
    return pos[:, None] * inv_freq[None, :]


def rotary(x: Tensor, *, base: float = 10000.0, offset: int = 0) -> Tensor:
    """x [..., N, D] (typically [B, H, N, D]), D even -> same shape and dtype, row n rotated to position n + offset.

    Equivalent to: z = x[..., 0::2] + 1j·x[..., 1::2]; z·exp(1j·(n + offset)·base^(−2i/D)) back to
    interleaved real pairs, i.e. out[2i] = x[2i]·cos − x[2i+1]·sin, out[2i+1] = x[2i]·sin + x[2i+1]·cos.
    """
    if not isinstance(x, Tensor) or x.dim() < 2 or not x.is_floating_point():
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"rotary: x must be a floating tensor [..., N, D], got {got}")
    _check_head_dim(x.shape[-1], "rotary")
    _check_base(base, "rotary")
    check_int(offset, "offset", minimum=0, where="rotary")
    angles = rotary_angles(x.shape[-2], x.shape[-1], base=base, offset=offset, device=x.device)  # [N, D/2] float64
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    even, odd = x[..., 0::2], x[..., 1::2]  # [..., N, D/2]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)


class Rotary(nn.Module):
    """Rotary-level encoding: ``forward(q, k)`` rotates both [B, H, N, D] by positions 0..N-1.
    No parameters, any N.

    Args:
        head_dim: D, must be even.
        base: θ_i = base^(−2i/D); RoFormer's 10000.
    """

    level = "rotary"
    paper = "Su, Lu, Pan, Murtadha, Wen & Liu 2021, RoFormer: Enhanced Transformer with Rotary Position Embedding, arxiv.org/abs/2104.09864"

    def __init__(self, head_dim: int, *, base: float = 10000.0):
        super().__init__()
        check_int(head_dim, "head_dim", minimum=2, where="rotary")
        _check_head_dim(head_dim, "rotary")
        _check_base(base, "rotary")
        self.head_dim, self.base = head_dim, float(base)

    def forward(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """q, k [B, H, N, D] -> (rotary(q), rotary(k)), rows at positions 0..N-1."""
        for name, t in (("q", q), ("k", k)):
            if not isinstance(t, Tensor) or t.dim() != 4:
                got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(f"rotary: {name} must be [B, H, N, D] (4 dims), got {got}")
            if t.shape[-1] != self.head_dim:
                raise ValueError(
                    f"rotary: built for head_dim={self.head_dim}, got {name} with D={t.shape[-1]}; build it with head_dim={t.shape[-1]}"
                )
        return rotary(q, base=self.base), rotary(k, base=self.base)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, base={self.base}"
