"""What every kernel mechanism's module shares: the recurrent step on its own features, the
implied pairs for pictures, and (for random features) the projection, its draws and redraws.

b batch, h heads, n positions, d head dim, m features, e value dim.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from attnzoo.core.checks import check_int
from attnzoo.core.implied import implied_by_identity
from attnzoo.kernel.feature_attention import KernelState, feature_attention_step
from attnzoo.kernel.features import gaussian_projection


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

        Every kernel mechanism is linear in v, so running it on v = I_N returns that matrix's rows;
        it runs in eval mode (no feature redraw) and the core's mode is put back.
        """
        return implied_by_identity(self, q, k, mask)

    def computed_pairs(self, n: int) -> Tensor:
        """Bool [1, N, N]: every pair is in the implied map (lower triangle if causal), none computed one by one."""
        pairs = torch.ones(1, n, n, dtype=torch.bool)
        return pairs.tril() if self.causal else pairs


class RandomFeatureCore(FeatureCore):
    """A kernel core that owns a random projection [M, D] (a buffer shared by the heads, so it is
    saved with the model). Draws come from its own generator, seeded by ``seed`` or else from
    torch's global one; in training they are renewed every ``redraw_every`` forward passes
    (0 = never), and on ``redraw()``. ``draw=False`` keeps no projection (deterministic features)."""

    def __init__(
        self, *, causal: bool, head_dim: int, nb_features: int | None, orthogonal: bool, redraw_every: int,
        seed: int | None, where: str, draw: bool = True,
    ):
        super().__init__(causal=causal)
        if nb_features is not None:
            check_int(nb_features, "nb_features", minimum=1, where=where)
        check_int(redraw_every, "redraw_every", minimum=0, where=where)
        if seed is not None:
            check_int(seed, "seed", minimum=0, where=where)
        self.head_dim, self.orthogonal, self.redraw_every = head_dim, orthogonal, redraw_every
        self.nb_features = nb_features or max(1, round(head_dim * math.log(head_dim)))  # default D · ln D
        seed = seed if seed is not None else int(torch.randint(0, 2**62, (1,)))
        self.generator = torch.Generator().manual_seed(seed)
        self.forward_calls = 0
        self.register_buffer("projection", self._draw() if draw else None)

    def _draw(self) -> Tensor:
        return gaussian_projection(self.nb_features, self.head_dim, orthogonal=self.orthogonal, generator=self.generator)

    def get_extra_state(self) -> dict:
        """Saved with the weights, so a restored model goes on drawing the features it would have drawn."""
        return {"generator": self.generator.get_state(), "forward_calls": self.forward_calls}

    def set_extra_state(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.forward_calls = int(state["forward_calls"])

    @torch.no_grad()
    def redraw(self) -> None:
        """Draw new random features (a no-op without a projection)."""
        if self.projection is not None:
            self.projection.copy_(self._draw())

    def count_pass(self) -> None:
        """Call at the start of ``forward``: in training, redraw before every ``redraw_every``-th pass after the first."""
        if self.training:
            if self.redraw_every and self.forward_calls and self.forward_calls % self.redraw_every == 0:
                self.redraw()
            self.forward_calls += 1
