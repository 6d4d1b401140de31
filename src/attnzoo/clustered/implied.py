"""The pairs that carry weight in a data-dependent mechanism's N×N map, for a seeded random input
(the map itself: attnzoo.core.implied.implied_by_identity).

b batch, h heads, n positions, d head dim.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def pairs_on_random_input(core: nn.Module, n: int) -> Tensor:
    """Bool [H, N, N]: pairs with weight for q, k ~ N(0, 1) (seed 0), in eval mode (no noise, no updates)."""
    heads = getattr(core, "heads", 1)
    generator = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 1, heads, n, core.head_dim, generator=generator, dtype=torch.float64)
    return core.implied_weights(q, k)[0] > 1e-12 * math.sqrt(n)
