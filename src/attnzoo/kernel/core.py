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

    def feature_dim(self, head_dim: int) -> int:
        """M: features per query/key."""
        x = torch.zeros(1, head_dim)
        return self.features(x, x)[0].shape[-1]

    def log_decay(self, k: Tensor) -> Tensor | None:
        return None

    def step(self, q: Tensor, k: Tensor, v: Tensor, state: KernelState | None) -> tuple[Tensor, KernelState]:
        """One causal token at constant memory: q, k [B, H, D], v [B, H, E] -> (out [B, H, E], state)."""
        if not self.causal:
            raise ValueError(f"{type(self).__name__.lower()}: step decodes causal attention; build the layer with causal=True")
        phi_q, phi_k = self.features(q, k)
        return feature_attention_step(phi_q, phi_k, v, state, normalize=self.normalize, log_decay=self.log_decay(k))

    @torch.no_grad()
    def implied_weights(self, q: Tensor, k: Tensor, mask: Tensor | None = None) -> Tensor:
        """[B, H, N, N]: the attention matrix the mechanism implies but never forms (for pictures, small N).

        Every kernel mechanism is linear in v, so running it on v = I_N returns that matrix's rows.
        """
        b, h, n, _ = q.shape
        eye = torch.eye(n, dtype=q.dtype, device=q.device).expand(b, h, n, n)
        return self(q, k, eye, mask=mask)

    def computed_pairs(self, n: int) -> Tensor:
        """Bool [1, N, N]: every pair is in the implied map (lower triangle if causal), none computed one by one."""
        pairs = torch.ones(1, n, n, dtype=torch.bool)
        return pairs.tril() if self.causal else pairs
