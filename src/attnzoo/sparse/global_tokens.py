"""Global attention: chosen positions attend to, and are attended by, every position.

Two forms (as in ETC, Ainslie et al. 2020, arxiv.org/abs/2004.08483, and Longformer):
in-sequence global positions ``global_idx``, or ``num_tokens`` extra learned tokens prepended to
the sequence inside the layer and dropped from its output. Every other query also sees a local
band |i - j| <= ``window`` (window=0: itself).
b batch, h heads, n positions, g global tokens, d head dim.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnzoo.core.checks import as_int_tuple, check_int
from attnzoo.core.info import MechanismInfo
from attnzoo.core.masks import Pattern, difference_band, or_masks, position_columns, position_rows
from attnzoo.sparse.attention import Backend, sparse_attention
from attnzoo.sparse.core import KernelOptions, PatternCore


@dataclass
class GlobalConfig(KernelOptions):
    global_idx: tuple[int, ...] = (0,)  # in-sequence global positions (negative counts from the end)
    num_tokens: int = 0  # extra learned global tokens prepended inside the layer
    window: int = 0  # every query also sees |i - j| <= window


def check_global_idx(global_idx, n: int, where: str) -> tuple[int, ...]:
    """Global positions as sorted non-negative ints < n (negative counts from the end)."""
    try:
        idx = tuple(int(i) for i in global_idx)
    except TypeError:
        raise ValueError(f"{where}: global_idx must be a sequence of ints, got {global_idx!r}") from None
    bad = [i for i in idx if not -n <= i < n]
    if bad:
        raise ValueError(f"{where}: global_idx {bad} out of range for N={n}; use positions in [-{n}, {n - 1}]")
    return tuple(sorted({i % n for i in idx}))


@functools.lru_cache(maxsize=64, typed=True)
def global_pattern(global_idx: tuple[int, ...], n: int, window: int = 0, device: torch.device | None = None) -> Pattern:
    """Rows and columns of ``global_idx`` plus the band |q_idx - kv_idx| <= window."""
    check_int(window, "window", minimum=0, where="global")
    idx = check_global_idx(global_idx, n, "global")
    table = torch.zeros(n, dtype=torch.bool, device=device)
    table[list(idx)] = True
    name = f"global({len(idx)})"
    return or_masks(position_rows(table, name), position_columns(table, name), difference_band(-window, window, f"local(w={window})"))


def global_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    global_idx: tuple[int, ...],
    window: int = 0,
    mask: Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    backend: Backend = "auto",
    block: int = 64,
) -> Tensor:
    """q, k, v: [B, H, N, D]; mask: [B, N] bool. Returns [B, H, N, D].

    Equivalent to: full attention with scores -inf unless i ∈ G or j ∈ G or |i - j| <= window
    (and j <= i if causal: a global key is visible from its position on).
    """
    n = q.shape[2]
    pattern = global_pattern(as_int_tuple(global_idx, "global_idx", "global"), n, window, q.device)
    return sparse_attention(q, k, v, pattern, mask=mask, causal=causal, scale=scale, dropout_p=dropout_p, backend=backend, block=block)


class Global(PatternCore):
    """Global attention core; with ``num_tokens`` > 0 it owns the learned tokens' per-head q, k, v."""

    info = MechanismInfo(
        paper="Ainslie et al. 2020 (ETC), arxiv.org/abs/2004.08483; Beltagy et al. 2020, arxiv.org/abs/2004.05150",
        complexity="O(N·(g + w)·D) time, O(N·(g + w)) memory",
        causal=True,
        mask=True,
        distance=True,
    )

    def __init__(self, config: GlobalConfig, *, heads: int, head_dim: int, **kw):
        super().__init__(config, heads=heads, head_dim=head_dim, **kw)
        check_int(config.num_tokens, "num_tokens", minimum=0, where="global")
        check_int(config.window, "window", minimum=0, where="global")
        self.global_idx = as_int_tuple(config.global_idx, "global_idx", "global")
        if not self.global_idx and not config.num_tokens:
            raise ValueError("global: give global_idx positions or num_tokens > 0 learned tokens (both are empty)")
        g = config.num_tokens
        self.tokens = nn.Parameter(torch.randn(3, heads, g, head_dim) * head_dim**-0.5) if g else None

    def pattern(self, n, heads, device):
        g = self.config.num_tokens
        # Learned tokens sit at positions 0..g-1; in-sequence positions shift by g.
        real = check_global_idx(self.global_idx, n - g, "global") if n > g else ()
        return global_pattern(tuple(range(g)) + tuple(i + g for i in real), n, self.config.window, device)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, position: nn.Module | None = None) -> Tensor:
        g = self.config.num_tokens
        if not g:
            return super().forward(q, k, v, mask, position)
        if position is not None:
            raise ValueError("global: learned global tokens have no position for ALiBi to measure from; "
                             "use in-sequence global_idx=(...) with alibi, or num_tokens without it")
        b = q.shape[0]
        q, k, v = (torch.cat([t.expand(b, -1, -1, -1).to(x.dtype), x], dim=2) for t, x in zip(self.tokens, (q, k, v)))
        if mask is not None:
            mask = torch.cat([torch.ones(b, g, dtype=torch.bool, device=mask.device), mask], dim=1)
        return super().forward(q, k, v, mask)[:, :, g:]

    @torch.no_grad()
    def implied_weights(self, q: Tensor, k: Tensor, mask: Tensor | None = None) -> Tensor:
        """[B, H, N, N]: the weights on the real keys; what a row lacks of 1 goes to the learned tokens."""
        g = self.config.num_tokens
        if not g:
            return super().implied_weights(q, k, mask)
        b, h, n, _ = q.shape
        q, k = (torch.cat([t.expand(b, -1, -1, -1).to(x.dtype), x], dim=2) for t, x in zip(self.tokens[:2], (q, k)))
        if mask is not None:
            mask = torch.cat([torch.ones(b, g, dtype=torch.bool, device=mask.device), mask], dim=1)
        eye = torch.eye(g + n, dtype=q.dtype, device=q.device).expand(b, h, g + n, g + n)
        options = {**self.kernel_options(mask), "dropout_p": 0.0}
        weights = sparse_attention(q, k, eye, self.pattern(g + n, h, q.device), parts=self.parts(g + n, q.device), **options)
        return weights[:, :, g:, g:]

    def computed_pairs(self, n: int) -> Tensor:
        """Pairs among the real positions and the g learned tokens (drawn first): [H or 1, g + N, g + N]."""
        return super().computed_pairs(n + self.config.num_tokens)
