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
from attnzoo.core.masks import (
    Pattern,
    and_masks,
    difference_band,
    or_masks,
    permuted,
    position_columns,
    residue,
    same_chunk,
    segments,
)
from attnzoo.core.masks import causal as causal_pattern
from attnzoo.sparse.attention import Backend, sparse_attention
from attnzoo.sparse.core import KernelOptions, PatternCore
from attnzoo.sparse.strided import residue_order
from attnzoo.sparse.union import Part


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


@functools.lru_cache(maxsize=64, typed=True)
def sparse_transformer_parts(mode: str, stride: int, summary: int, n: int, device=None) -> tuple:
    """Disjoint parts for the blocked kernel, each block-sparse in its own order.

    strided: the local band (natural order) + the stride classes minus the diagonal (residue order).
    fixed:   the chunks (natural order) + summary keys outside the query's chunk (summary-first order,
             where the summary keys are the first contiguous blocks, shared by every query).
    """
    sparse_transformer_pattern(mode, stride, summary, n, device)  # validates
    if mode == "strided":
        local = Part(difference_band(-(stride - 1), stride - 1, f"local(<{stride})"), causal_pattern)
        perm, seg = residue_order(n, stride, device)
        off_diagonal = or_masks(difference_band(1, float("inf"), "after"), difference_band(float("-inf"), -1, "before"))
        # Same class and not the same position: in residue order that is |i - j| >= stride, disjoint from local.
        return local, Part(and_masks(segments(seg, f"stride-class({stride})"), off_diagonal), causal_pattern, perm)
    idx = torch.arange(n, device=device)
    is_summary = idx % stride >= stride - summary
    perm = torch.cat([idx[is_summary], idx[~is_summary]])
    first = torch.arange(n, device=device) < int(is_summary.sum())
    def other_chunk(b, h, q_idx, kv_idx):
        return (q_idx // stride) != (kv_idx // stride)

    columns = and_masks(position_columns(first, f"summary({summary})"), permuted(other_chunk, perm, "other-chunk"))
    return Part(same_chunk(stride, f"chunk({stride})"), causal_pattern), Part(columns, permuted(causal_pattern, perm, "causal"), perm)


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
        The blocked kernel computes the two parts in the position orders where each is block-sparse
        (stride classes contiguous; summary keys first) and merges them by log-sum-exp, so time is
        O(N · (stride + N / stride) · D) for strided and O(N · (stride + N · summary / stride) · D) for
        fixed: O(N √N D) at stride ≈ √N, as in the paper.
    """
    pattern = sparse_transformer_pattern(mode, stride, summary, q.shape[2], q.device)
    parts = sparse_transformer_parts(mode, stride, summary, q.shape[2], q.device)
    return sparse_attention(
        q, k, v, pattern, mask=mask, causal=causal, scale=scale, dropout_p=dropout_p, backend=backend, block=block, parts=parts
    )


class SparseTransformer(PatternCore):
    info = MechanismInfo(
        paper="Child et al. 2019, arxiv.org/abs/1904.10509",
        complexity="O(N·√N·D) time at stride ≈ √N (two parts, each block-sparse in its own order), O(N) memory",
        causal=True,
        mask=True,
        distance=True,
    )

    def __init__(self, config: SparseTransformerConfig, **kw):
        super().__init__(config, **kw)
        sparse_transformer_pattern(config.mode, config.stride, config.summary, max(config.stride, 1))

    def pattern(self, n, heads, device):
        c = self.config
        return sparse_transformer_pattern(c.mode, c.stride, c.summary, n, device)

    def parts(self, n, device):
        c = self.config
        return sparse_transformer_parts(c.mode, c.stride, c.summary, n, device)
