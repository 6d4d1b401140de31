"""Sparse Transformer factorised patterns (Child et al. 2019, arxiv.org/abs/1904.10509), merged into one head.

strided: local |i - j| < stride  ∪  (i - j) mod stride = 0.
fixed:   same chunk ⌊i / stride⌋ = ⌊j / stride⌋  ∪  summary keys j mod stride >= stride - summary.
The paper's decoder form is causal=True; without it both parts are mirrored (encoder form).
b batch, h heads, n positions, d head dim, l stride, c summary.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from attnzoo.core.checks import check_int
from attnzoo.core.info import MechanismInfo
from attnzoo.core.masks import Pattern, difference_band, or_masks, position_columns, residue, same_chunk
from attnzoo.sparse.attention import Backend, sparse_attention
from attnzoo.sparse.core import KernelOptions, PatternCore


@dataclass
class SparseTransformerConfig(KernelOptions):
    mode: Literal["strided", "fixed"] = "strided"
    stride: int = 64  # l: window / chunk length; the paper takes l ≈ sqrt(N)
    summary: int = 8  # c: summary positions at the end of each chunk (fixed mode)


@functools.lru_cache(maxsize=64, typed=True)
def sparse_transformer_pattern(mode: str, stride: int, summary: int, n: int, device=None) -> Pattern:
    check_int(stride, "stride", minimum=1, where="sparse_transformer")
    if mode == "strided":
        return or_masks(difference_band(-(stride - 1), stride - 1, f"local(<{stride})"), residue(stride, float("inf"), f"stride({stride})"))
    if mode == "fixed":
        check_int(summary, "summary", minimum=1, where="sparse_transformer")
        if summary > stride:
            raise ValueError(f"sparse_transformer: summary ({summary}) must be <= stride ({stride}); lower summary")
        table = torch.arange(n, device=device) % stride >= stride - summary
        return or_masks(same_chunk(stride, f"chunk({stride})"), position_columns(table, f"summary({summary})"))
    raise ValueError(f"sparse_transformer: mode must be 'strided' or 'fixed', got {mode!r}")


def sparse_transformer_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    mode: Literal["strided", "fixed"] = "strided",
    stride: int,
    summary: int = 8,
    mask: Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    backend: Backend = "auto",
    block: int = 64,
) -> Tensor:
    """q, k, v: [B, H, N, D]; mask: [B, N] bool. Returns [B, H, N, D].

    Equivalent to: full attention with scores -inf outside the union of the two factorised patterns.

    Note:
        On contiguous blocks the stride / summary parts touch every key block (their keys are spread
        out), so time is O(N²·D / stride)-ish at block granularity; the memory stays O(N · block).
    """
    pattern = sparse_transformer_pattern(mode, stride, summary, q.shape[2], q.device)
    return sparse_attention(q, k, v, pattern, mask=mask, causal=causal, scale=scale, dropout_p=dropout_p, backend=backend, block=block)


class SparseTransformer(PatternCore):
    info = MechanismInfo(
        paper="Child et al. 2019, arxiv.org/abs/1904.10509",
        complexity="O(N·√N·D) in pairs (l = √N); contiguous blocks touch more (see docstring)",
        causal=True,
        mask=True,
    )

    def __init__(self, config: SparseTransformerConfig, **kw):
        super().__init__(config, **kw)
        sparse_transformer_pattern(config.mode, config.stride, config.summary, max(config.stride, 1))

    def pattern(self, n, heads, device):
        c = self.config
        return sparse_transformer_pattern(c.mode, c.stride, c.summary, n, device)
