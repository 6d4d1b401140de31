"""The N×N map a mechanism implies (pictures, small N): its output on v = I, in eval mode.

b batch, h heads, n positions, d head dim.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode inside the block (no dropout, no sampling noise, no online updates such
    as routing's centroids), its own mode again after, exception or not."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


@torch.no_grad()
def implied_by_identity(core: nn.Module, q: Tensor, k: Tensor, mask: Tensor | None) -> Tensor:
    """[B, H, N, N] for a core whose output is linear in v once q and k are fixed: its output on v = I,
    in eval mode (no dropout or noise, no centroid updates; the core's mode is put back)."""
    b, h, n, _ = q.shape
    eye = torch.eye(n, dtype=q.dtype, device=q.device).expand(b, h, n, n)
    with eval_mode(core):
        return core(q, k, eye, mask=mask)
