"""What every kernel mechanism's module shares: the recurrent step on its own features, and the
implied pairs for pictures.

b batch, h heads, n positions, d head dim, m features, e value dim.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnzoo.kernel.feature_attention import KernelState, feature_attention_step


class FeatureCore(nn.Module):
    """A kernel attention core. Subclasses set ``info`` and implement ``forward`` (calling their
    function) and ``features(q, k) -> (φ(q), φ(k))`` on [..., D] (the same features, so that
    ``step`` equals the parallel form); gated ones also ``log_decay(k)``."""

    normalize: bool = True

    def __init__(self, *, causal: bool):
        super().__init__()
        self.causal = causal

    def features(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def log_decay(self, k: Tensor) -> Tensor | None:
        return None

    def step(self, q: Tensor, k: Tensor, v: Tensor, state: KernelState | None) -> tuple[Tensor, KernelState]:
        """One causal token at constant memory: q, k [B, H, D], v [B, H, E] -> (out [B, H, E], state)."""
        if not self.causal:
            raise ValueError(f"{type(self).__name__.lower()}: step decodes causal attention; build the layer with causal=True")
        phi_q, phi_k = self.features(q, k)
        return feature_attention_step(phi_q, phi_k, v, state, normalize=self.normalize, log_decay=self.log_decay(k))

    def computed_pairs(self, n: int) -> Tensor:
        """Bool [1, N, N]: every pair is in the implied map (lower triangle if causal), none computed one by one."""
        pairs = torch.ones(1, n, n, dtype=torch.bool)
        return pairs.tril() if self.causal else pairs
