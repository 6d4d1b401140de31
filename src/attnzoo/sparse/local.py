"""Local (truncated, sliding-window) attention: query i sees keys with |i - j| <= window.

Used for long speech and text ("truncated self-attention", e.g. Yeh et al. 2019,
arxiv.org/abs/1910.12977) and as the backbone of Longformer and BigBird.
b batch, h heads, n positions, d head dim, w window.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from torch import Tensor

from attnzoo.core.checks import check_int
from attnzoo.core.info import MechanismInfo
from attnzoo.core.masks import Pattern, difference_band
from attnzoo.sparse.attention import Backend, sparse_attention
from attnzoo.sparse.core import KernelOptions, PatternCore


@dataclass
class LocalConfig(KernelOptions):
    window: int = 64  # keys on each side: |i - j| <= window (inclusive; the diagonal is always in)


@functools.lru_cache(maxsize=64, typed=True)
def local_pattern(window: int) -> Pattern:
    """|q_idx - kv_idx| <= window."""
    check_int(window, "window", minimum=0, where="local")
    return difference_band(-window, window, f"local(w={window})")


def local_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    window: int,
    mask: Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    backend: Backend = "auto",
    block: int = 64,
    alibi_slopes: Tensor | None = None,
) -> Tensor:
    """q, k, v: [B, H, N, D]; mask: [B, N] bool; alibi_slopes: [H] or None. Returns [B, H, N, D].

    Equivalent to: full attention with scores -inf wherever |i - j| > window (and j > i if causal),
    and −m_h·|i − j| added to them with ``alibi_slopes`` (ALiBi with a sliding window).

    Note:
        The window is inclusive and counts keys per side: 2·window + 1 keys per query
        (window + 1 under causal). O(N · window · D) time, O(N · window) working memory.
    """
    return sparse_attention(
        q, k, v, local_pattern(window), mask=mask, causal=causal, scale=scale, dropout_p=dropout_p, backend=backend, block=block,
        alibi_slopes=alibi_slopes,
    )


class Local(PatternCore):
    info = MechanismInfo(
        paper="truncated / sliding-window self-attention, e.g. Yeh et al. 2019, arxiv.org/abs/1910.12977",
        complexity="O(N·w·D) time, O(N·w) memory",
        causal=True,
        mask=True,
        distance=True,
    )

    def __init__(self, config: LocalConfig, **kw):
        super().__init__(config, **kw)
        check_int(config.window, "window", minimum=0, where="local")

    def pattern(self, n, heads, device):
        return local_pattern(self.config.window)
