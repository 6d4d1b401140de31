"""The N×N picture of a data-dependent mechanism (small N): its weights on v = I, and the pairs
that carry weight for a seeded random input.

b batch, h heads, n positions, d head dim.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from attnzoo.core.modes import eval_mode


@torch.no_grad()
def implied_by_identity(core: nn.Module, q: Tensor, k: Tensor, mask: Tensor | None) -> Tensor:
    """[B, H, N, N] for a core whose output is linear in v once q and k are fixed: its output on v = I,
    in eval mode (no dropout or noise, no centroid updates; the core's mode is put back)."""
    b, h, n, _ = q.shape
    eye = torch.eye(n, dtype=q.dtype, device=q.device).expand(b, h, n, n)
    with eval_mode(core):
        return core(q, k, eye, mask=mask)


def pairs_on_random_input(core: nn.Module, n: int) -> Tensor:
    """Bool [H, N, N]: pairs with weight for q, k ~ N(0, 1) (seed 0), in eval mode (no noise, no updates)."""
    heads = getattr(core, "heads", 1)
    generator = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 1, heads, n, core.head_dim, generator=generator, dtype=torch.float64)
    return core.implied_weights(q, k)[0] > 1e-12 * math.sqrt(n)
