"""Running a module in eval mode for a moment (pictures, implied maps) and putting its mode back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


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
