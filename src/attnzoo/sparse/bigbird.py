"""BigBird (Zaheer et al. 2020, arxiv.org/abs/2007.14062): sliding blocks + global blocks + random blocks.

Everything is on blocks of ``block_size`` positions (BigBird-ITC): query block a sees key block c
if |a - c| <= window_blocks // 2, or a or c is one of the first ``global_blocks``, or c is one of
``random_blocks`` blocks drawn for a (seeded; drawn among earlier blocks when causal).
b batch, h heads, n positions, d head dim.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from attnzoo.core.checks import check_int
from attnzoo.core.info import MechanismInfo
from attnzoo.core.masks import Pattern, block_table
from attnzoo.sparse.attention import Backend, sparse_attention
from attnzoo.sparse.core import KernelOptions, PatternCore
from attnzoo.sparse.random import random_blocks


@dataclass
class BigBirdConfig(KernelOptions):
    block_size: int = 64
    window_blocks: int = 3  # odd: the block itself and (window_blocks - 1) / 2 on each side
    global_blocks: int = 2  # the first blocks are global
    random_blocks: int = 3  # random key blocks per query block
    seed: int = 0


def bigbird_table(n_blocks: int, window_blocks: int, global_blocks: int, num_random: int, seed: int, causal: bool) -> torch.Tensor:
    """[n_blocks, n_blocks] bool block pattern."""
    idx = torch.arange(n_blocks)
    fixed = (idx[:, None] - idx[None, :]).abs() <= window_blocks // 2
    fixed |= (idx[:, None] < global_blocks) | (idx[None, :] < global_blocks)
    return fixed | random_blocks(n_blocks, num_random, seed, causal=causal, exclude=fixed)


@functools.lru_cache(maxsize=64, typed=True)
def bigbird_pattern(n: int, block_size: int, window_blocks: int, global_blocks: int, random_blocks_: int, seed: int, causal: bool = False, device=None) -> Pattern:
    check_int(block_size, "block_size", minimum=1, where="bigbird")
    check_int(window_blocks, "window_blocks", minimum=1, where="bigbird")
    if window_blocks % 2 == 0:
        raise ValueError(f"bigbird: window_blocks must be odd (the block plus equal neighbours each side), got {window_blocks}")
    check_int(global_blocks, "global_blocks", minimum=0, where="bigbird")
    check_int(random_blocks_, "random_blocks", minimum=0, where="bigbird")
    table = bigbird_table(-(-n // block_size), window_blocks, global_blocks, random_blocks_, seed, causal)
    return block_table(table.to(device), block_size, f"bigbird(b={block_size}, w={window_blocks}, g={global_blocks}, r={random_blocks_})")


def bigbird_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    block_size: int = 64,
    window_blocks: int = 3,
    global_blocks: int = 2,
    random_blocks: int = 3,
    seed: int = 0,
    mask: Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    backend: Backend = "auto",
    block: int = 64,
) -> Tensor:
    """q, k, v: [B, H, N, D]; mask: [B, N] bool. Returns [B, H, N, D].

    Equivalent to: full attention with scores -inf unless bigbird_table(...)[i // block_size,
    j // block_size] (and j <= i if causal).
    """
    pattern = bigbird_pattern(q.shape[2], block_size, window_blocks, global_blocks, random_blocks, seed, causal, q.device)
    return sparse_attention(q, k, v, pattern, mask=mask, causal=causal, scale=scale, dropout_p=dropout_p, backend=backend, block=block)


class BigBird(PatternCore):
    info = MechanismInfo(
        paper="Zaheer et al. 2020, arxiv.org/abs/2007.14062",
        complexity="O(N·(w + g + r)·b·D) time, O(N·(w + g + r)·b) memory",
        causal=True,
        mask=True,
        distance=True,
    )

    def __init__(self, config: BigBirdConfig, **kw):
        super().__init__(config, **kw)
        c = config
        bigbird_pattern(1, c.block_size, c.window_blocks, c.global_blocks, c.random_blocks, c.seed)

    def pattern(self, n, heads, device):
        c = self.config
        return bigbird_pattern(n, c.block_size, c.window_blocks, c.global_blocks, c.random_blocks, c.seed, self.causal, device)
