"""Longformer (Beltagy et al. 2020, arxiv.org/abs/2004.05150): sliding window, dilated per head, plus global tokens.

Head h uses dilation ``dilation[h % len(dilation)]``: keys |i - j| <= window · d with
(i - j) mod d = 0. Global positions attend to and are attended by every position.
b batch, h heads, n positions, d head dim, w window.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from torch import Tensor

from attnzoo.core.checks import as_int_tuple, check_int
from attnzoo.core.info import MechanismInfo
from attnzoo.core.masks import Pattern, or_masks, per_head
from attnzoo.sparse.attention import Backend, sparse_attention
from attnzoo.sparse.core import KernelOptions, PatternCore
from attnzoo.sparse.global_tokens import check_global_idx, global_pattern
from attnzoo.sparse.strided import strided_pattern


@dataclass
class LongformerConfig(KernelOptions):
    window: int = 64  # taps each side per head
    dilation: tuple[int, ...] = (1,)  # per head, cycled over heads; (1,) = plain sliding window
    global_idx: tuple[int, ...] = (0,)  # global positions (e.g. the CLS token)


@functools.lru_cache(maxsize=64, typed=True)
def longformer_pattern(window: int, dilation: tuple[int, ...], global_idx: tuple[int, ...], n: int, heads: int, device=None) -> Pattern:
    check_int(window, "window", minimum=0, where="longformer")
    if not dilation:
        raise ValueError("longformer: dilation needs at least one value, e.g. (1,) for no dilation")
    for d in dilation:
        check_int(d, "dilation", minimum=1, where="longformer")
    glob = global_pattern(check_global_idx(global_idx, n, "longformer"), n, 0, device) if global_idx else None
    per_dilation = {d: or_masks(strided_pattern(d, window), *([glob] if glob else [])) for d in set(dilation)}
    if len(per_dilation) == 1:
        return next(iter(per_dilation.values()))
    return per_head(tuple(per_dilation[dilation[h % len(dilation)]] for h in range(heads)), f"longformer(dilation={dilation})")


def longformer_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    window: int,
    dilation: tuple[int, ...] = (1,),
    global_idx: tuple[int, ...] = (0,),
    mask: Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    backend: Backend = "auto",
    block: int = 64,
) -> Tensor:
    """q, k, v: [B, H, N, D]; mask: [B, N] bool. Returns [B, H, N, D].

    Equivalent to: per head h with d = dilation[h % len], full attention with scores -inf unless
    (|i - j| <= window·d and (i - j) % d == 0) or i ∈ G or j ∈ G (and j <= i if causal).
    """
    dilation, global_idx = as_int_tuple(dilation, "dilation", "longformer"), as_int_tuple(global_idx, "global_idx", "longformer")
    pattern = longformer_pattern(window, dilation, global_idx, q.shape[2], q.shape[1], q.device)
    return sparse_attention(q, k, v, pattern, mask=mask, causal=causal, scale=scale, dropout_p=dropout_p, backend=backend, block=block)


class Longformer(PatternCore):
    info = MechanismInfo(
        paper="Beltagy et al. 2020, arxiv.org/abs/2004.05150",
        complexity="O(N·(w·d + g)·D) time, O(N·(w·d + g)) memory",
        causal=True,
        mask=True,
        distance=True,
    )

    def __init__(self, config: LongformerConfig, **kw):
        super().__init__(config, **kw)
        self.dilation = as_int_tuple(config.dilation, "dilation", "longformer")
        self.global_idx = as_int_tuple(config.global_idx, "global_idx", "longformer")
        longformer_pattern(config.window, self.dilation, (), 1, self.heads)

    def pattern(self, n, heads, device):
        return longformer_pattern(self.config.window, self.dilation, self.global_idx, n, heads, device)
