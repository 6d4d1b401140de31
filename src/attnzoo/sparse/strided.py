"""Stride (dilated) attention: query i sees keys j with (i - j) mod stride = 0, optionally bounded.

Child et al. 2019's stride head (arxiv.org/abs/1904.10509); with ``window`` it is Longformer's
dilated sliding window (Beltagy et al. 2020, arxiv.org/abs/2004.05150): ``window`` taps each side,
``stride`` apart. b batch, h heads, n positions, d head dim.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from attnzoo.core.checks import check_int
from attnzoo.core.info import MechanismInfo
from attnzoo.core.masks import Pattern, and_masks, difference_band, residue, segments
from attnzoo.core.masks import causal as causal_pattern
from attnzoo.sparse.attention import Backend, sparse_attention
from attnzoo.sparse.core import KernelOptions, PatternCore
from attnzoo.sparse.union import Part


@dataclass
class StridedConfig(KernelOptions):
    stride: int = 8  # s: keys are s apart
    window: int | None = None  # taps per side: |i - j| <= window · stride; None = unbounded


@functools.lru_cache(maxsize=64, typed=True)
def strided_pattern(stride: int, window: int | None = None) -> Pattern:
    """(q_idx - kv_idx) mod stride == 0 and |q_idx - kv_idx| <= window · stride."""
    check_int(stride, "stride", minimum=1, where="strided")
    if window is not None:
        check_int(window, "window", minimum=0, where="strided")
    bound = float("inf") if window is None else window * stride
    return residue(stride, bound, f"strided(s={stride}, w={window})")


@functools.lru_cache(maxsize=64, typed=True)
def residue_order(n: int, stride: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """perm [N]: positions sorted by (i mod stride, i // stride); seg [N]: the class (i mod stride) of each.

    In that order, (i - j) mod stride = 0 means "same segment", and |i - j| = stride · |p_i - p_j|.
    """
    idx = torch.arange(n, device=device)
    perm = torch.argsort((idx % stride) * n + idx // stride)
    return perm, perm % stride


@functools.lru_cache(maxsize=64, typed=True)
def strided_parts(stride: int, window: int | None, n: int, device=None) -> tuple:
    """The stride pattern as one part in residue order: contiguous segments, a band if bounded."""
    perm, seg = residue_order(n, stride, device)
    pattern = segments(seg, f"stride-class({stride})")
    if window is not None:
        pattern = and_masks(pattern, difference_band(-window, window, f"taps({window})"))
    # Within a segment the order is monotone in the original position, so causality reads the same.
    return (Part(pattern, causal_pattern, perm),)


def strided_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    stride: int,
    window: int | None = None,
    mask: Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    backend: Backend = "auto",
    block: int = 64,
) -> Tensor:
    """q, k, v: [B, H, N, D]; mask: [B, N] bool. Returns [B, H, N, D].

    Equivalent to: full attention with scores -inf unless (i - j) % stride == 0 and
    |i - j| <= window · stride (and j <= i if causal).

    Note:
        The blocked kernel runs it in residue order (positions sorted by (i mod stride, i // stride)),
        where each stride class is a contiguous segment: O(N² D / stride) unbounded, O(N · window · D)
        bounded, never touching a block of another class.
    """
    pattern = strided_pattern(stride, window)
    parts = strided_parts(stride, window, q.shape[2], q.device)
    return sparse_attention(
        q, k, v, pattern, mask=mask, causal=causal, scale=scale, dropout_p=dropout_p, backend=backend, block=block, parts=parts
    )


class Strided(PatternCore):
    info = MechanismInfo(
        paper="Child et al. 2019, arxiv.org/abs/1904.10509; dilation: Beltagy et al. 2020, arxiv.org/abs/2004.05150",
        complexity="O(N²·D / s) unbounded, O(N·w·D) bounded (run in residue order)",
        causal=True,
        mask=True,
        distance=True,
    )

    def __init__(self, config: StridedConfig, **kw):
        super().__init__(config, **kw)
        strided_pattern(config.stride, config.window)

    def pattern(self, n, heads, device):
        return strided_pattern(self.config.stride, self.config.window)

    def parts(self, n, device):
        return strided_parts(self.config.stride, self.config.window, n, device)
