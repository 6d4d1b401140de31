"""Random block attention: each query block attends to ``num_blocks`` key blocks drawn at random.

The random component of BigBird (Zaheer et al. 2020, arxiv.org/abs/2007.14062), which draws
blocks rather than single keys so the kernel touches only those blocks. Seeded: the same
seed, N and block size give the same pattern. b batch, h heads, n positions, d head dim.
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


@dataclass
class RandomConfig(KernelOptions):
    num_blocks: int = 3  # random key blocks per query block
    block_size: int = 64  # positions per random block
    seed: int = 0


def random_blocks(n_blocks: int, num_blocks: int, seed: int, *, causal: bool, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """[n_blocks, n_blocks] bool with ``num_blocks`` random True per row (fewer if not enough candidates).

    Candidates exclude ``exclude`` [n_blocks, n_blocks] and, if causal, key blocks after the query block.
    """
    gen = torch.Generator().manual_seed(seed)
    candidates = torch.ones(n_blocks, n_blocks, dtype=torch.bool)
    if causal:
        candidates = candidates.tril()
    if exclude is not None:
        candidates &= ~exclude.cpu()
    # Random keys on candidates, -1 elsewhere; the top num_blocks keys per row are the draw.
    keys = torch.rand(n_blocks, n_blocks, generator=gen).masked_fill(~candidates, -1.0)
    top = keys.topk(min(num_blocks, n_blocks), dim=1)
    table = torch.zeros(n_blocks, n_blocks, dtype=torch.bool)
    table.scatter_(1, top.indices, top.values >= 0)
    return table


@functools.lru_cache(maxsize=64, typed=True)
def random_pattern(n: int, num_blocks: int, block_size: int, seed: int, causal: bool = False, device=None) -> Pattern:
    check_int(num_blocks, "num_blocks", minimum=0, where="random")
    check_int(block_size, "block_size", minimum=1, where="random")
    table = random_blocks(-(-n // block_size), num_blocks, seed, causal=causal)
    return block_table(table.to(device), block_size, f"random(r={num_blocks}, b={block_size})")


def random_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    num_blocks: int,
    block_size: int = 64,
    seed: int = 0,
    mask: Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    backend: Backend = "auto",
    block: int = 64,
) -> Tensor:
    """q, k, v: [B, H, N, D]; mask: [B, N] bool. Returns [B, H, N, D].

    Equivalent to: full attention with scores -inf unless key block j // block_size is one of the
    blocks drawn for query block i // block_size (draws respect causality when causal).
    """
    pattern = random_pattern(q.shape[2], num_blocks, block_size, seed, causal, q.device)
    return sparse_attention(q, k, v, pattern, mask=mask, causal=causal, scale=scale, dropout_p=dropout_p, backend=backend, block=block)


class Random(PatternCore):
    info = MechanismInfo(
        paper="Zaheer et al. 2020 (BigBird random blocks), arxiv.org/abs/2007.14062",
        complexity="O(N·r·b·D) time, O(N·r·b) memory",
        causal=True,
        mask=True,
        distance=True,
    )

    def __init__(self, config: RandomConfig, **kw):
        super().__init__(config, **kw)
        check_int(config.num_blocks, "num_blocks", minimum=1, where="random")
        check_int(config.block_size, "block_size", minimum=1, where="random")

    def pattern(self, n, heads, device):
        c = self.config
        return random_pattern(n, c.num_blocks, c.block_size, c.seed, self.causal, device)
