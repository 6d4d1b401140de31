"""Stride (dilated) attention: query i sees keys j with (i - j) mod stride = 0, optionally bounded.

Child et al. 2019's stride head (arxiv.org/abs/1904.10509); with ``window`` it is Longformer's
dilated sliding window (Beltagy et al. 2020, arxiv.org/abs/2004.05150): ``window`` taps each side,
``stride`` apart. b batch, h heads, n positions, d head dim.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from torch import Tensor

from attnzoo.core.checks import check_int
from attnzoo.core.info import MechanismInfo
from attnzoo.core.masks import Pattern, residue
from attnzoo.sparse.attention import Backend, sparse_attention
from attnzoo.sparse.core import KernelOptions, PatternCore


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
        Bounded (dilated window): O(N · window · stride · D) on the blocked kernel, since a key block
        holds taps of many queries. Unbounded: every block is touched, O(N² D / block-level), so use
        it inside a union (sparse_transformer) or with a window.
    """
    return sparse_attention(
        q, k, v, strided_pattern(stride, window), mask=mask, causal=causal, scale=scale, dropout_p=dropout_p, backend=backend, block=block
    )


class Strided(PatternCore):
    info = MechanismInfo(
        paper="Child et al. 2019, arxiv.org/abs/1904.10509; dilation: Beltagy et al. 2020, arxiv.org/abs/2004.05150",
        complexity="O(N·w·s·D) bounded (dilated window); O(N²·D) unbounded on contiguous blocks",
        causal=True,
        mask=True,
    )

    def __init__(self, config: StridedConfig, **kw):
        super().__init__(config, **kw)
        strided_pattern(config.stride, config.window)

    def pattern(self, n, heads, device):
        return strided_pattern(self.config.stride, self.config.window)
