"""What every fixed-pattern mechanism shares: kernel options and the thin module that calls sparse_attention.

b batch, h heads, n positions, d head dim.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnzoo.core.checks import check_dropout, check_int, resolve_scale
from attnzoo.core.masks import Pattern, and_masks, causal as causal_pattern, materialize_heads
from attnzoo.core.implied import implied_by_identity
from attnzoo.sparse.attention import BACKENDS, Backend, sparse_attention


@dataclass
class KernelOptions:
    scale: float | None = None  # None = 1/sqrt(D)
    dropout_p: float = 0.0  # on the attention weights, in training
    backend: Backend = "auto"  # "auto" | "blocked" | "flex" | "dense"
    block: int = 64  # kernel block size (positions per block)


def alibi_slopes_of(position: nn.Module | None, where: str) -> Tensor | None:
    """The [H] slopes of an ALiBi encoding, None without one; any other encoding is refused."""
    if position is None:
        return None
    if getattr(position, "level", None) != "distance" or not isinstance(getattr(position, "slopes", None), Tensor):
        raise ValueError(f"{where}: the sparse kernel adds ALiBi's −m·|i − j| to its scores and no other bias; "
                         f"got {type(position).__name__} (use alibi, rotary or an input encoding)")
    return position.slopes


class PatternCore(nn.Module):
    """Core for one pattern mechanism: forward(q, k, v, mask) -> sparse_attention(q, k, v, self.pattern(...)).

    Subclasses set ``info`` and implement ``pattern(n, heads, device)``.
    """

    def __init__(self, config: KernelOptions, *, heads: int, head_dim: int, causal: bool, max_len: int | None):
        super().__init__()
        where = type(self).__name__.lower()
        if config.backend not in BACKENDS:
            raise ValueError(f"{where}: backend must be one of {BACKENDS}, got {config.backend!r}")
        check_dropout(config.dropout_p, where)
        check_int(config.block, "block", minimum=1, where=where)
        resolve_scale(config.scale, head_dim, where)
        self.config, self.heads, self.causal, self.max_len = config, heads, causal, max_len

    def pattern(self, n: int, heads: int, device: torch.device) -> Pattern:
        raise NotImplementedError

    def parts(self, n: int, device: torch.device):
        """An equivalent decomposition for the blocked kernel (sparse.union.Part), or None."""
        return None

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, position: nn.Module | None = None) -> Tensor:
        """position: ALiBi (or None), whose −m_h·|i − j| joins the scores the kernel forms."""
        n = q.shape[2]
        return sparse_attention(
            q, k, v, self.pattern(n, q.shape[1], q.device), parts=self.parts(n, q.device), **self.kernel_options(mask, position)
        )

    def kernel_options(self, mask: Tensor | None, position: nn.Module | None = None) -> dict:
        """The keyword arguments a kernel call takes from this core: mask, causality, the config's
        options and, with ALiBi, its slopes."""
        c = self.config
        return dict(mask=mask, causal=self.causal, scale=c.scale, dropout_p=c.dropout_p if self.training else 0.0,
                    backend=c.backend, block=c.block, alibi_slopes=alibi_slopes_of(position, type(self).__name__.lower()))

    @torch.no_grad()
    def implied_weights(self, q: Tensor, k: Tensor, mask: Tensor | None = None) -> Tensor:
        """[B, H, N, N]: the weights (no dropout) the pattern's softmax gives each key (pictures, small N).

        The attention is linear in v, so its output on v = I_N is that matrix's rows; pairs outside
        the pattern get exactly 0."""
        return implied_by_identity(self, q, k, mask)

    def computed_pairs(self, n: int) -> Tensor:
        """Bool [H or 1, N, N]: the (query, key) pairs this core computes (for pictures)."""
        pattern = self.pattern(n, self.heads, torch.device("cpu"))
        if self.causal:
            pattern = and_masks(pattern, causal_pattern)
        return materialize_heads(pattern, n, self.heads)
