"""RFA: Random Feature Attention (Peng et al. 2021, arxiv.org/abs/2103.02143).

For unit vectors, exp(q̂·k̂ / σ²) = exp(1/σ²) · exp(−|q̂ − k̂|² / 2σ²), and the Gaussian kernel has
random Fourier features; so on l2-normalized queries and keys, softmax attention with temperature
σ² becomes φ(Q)(φ(K)ᵀV) / φ(Q)(φ(K)ᵀ1). RFA-Gate (causal) lets a learned gate g_t ∈ (0, 1) forget:
S_t = g_t S_{t−1} + (1 − g_t) φ(k_t) v_tᵀ.
b batch, h heads, n positions, d head dim, m random frequencies (2m features), e value dim.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import einsum
from torch import Tensor, nn

from attnzoo.core.checks import check_int, check_mask, check_qkv
from attnzoo.core.info import MechanismInfo
from attnzoo.kernel.core import RandomFeatureCore
from attnzoo.kernel.feature_attention import KernelState, feature_attention, feature_inputs
from attnzoo.kernel.features import check_projection


@dataclass
class RFAConfig:
    nb_features: int | None = None  # M random frequencies (2M features); None = round(D · ln D)
    sigma: float = 1.0  # kernel width: approximates softmax(q̂·k̂ / σ²) on unit q̂, k̂
    gated: bool = False  # RFA-Gate: a learned per-head gate decays the state (causal only)
    orthogonal: bool = True  # orthogonal random frequencies (lower variance)
    redraw_every: int = 0  # in training, draw new frequencies every k forward passes; 0 = never
    chunk: int = 64  # causal prefix sums: positions per chunk
    seed: int | None = None  # frequency draws; None = from torch's global generator


def rfa_features(q: Tensor, k: Tensor, projection: Tensor, *, sigma: float) -> tuple[Tensor, Tensor]:
    """Random Fourier features of l2-normalized q, k [..., D] with frequencies projection / σ -> [..., 2M].

    Equivalent to: fourier_features(q̂, projection / σ), and the same for k̂, without the constant
    1/√M (it cancels in the normalized output).
    """
    w = (projection / sigma).to(q.dtype)

    def phi(x: Tensor) -> Tensor:
        proj = F.normalize(x, dim=-1) @ w.T
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)

    return phi(q), phi(k)


def rfa_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    projection: Tensor,
    *,
    sigma: float = 1.0,
    gate_logits: Tensor | None = None,
    mask: Tensor | None = None,
    causal: bool = False,
    chunk: int = 64,
    initial_state: KernelState | None = None,
    return_state: bool = False,
) -> Tensor | tuple[Tensor, KernelState]:
    """q, k: [B, H, N, D]; v: [B, H, N, E]; projection: [M, D] drawn N(0, I);
    gate_logits: [B, H, N], the gate g = sigmoid(gate_logits) (causal only).

    Returns [B, H, N, E] (and the final state).

    Equivalent to: A_ij = φ(q̂_i)·φ(k̂_j) ≈ exp(−|q̂_i − k̂_j|²/2σ²) (∝ exp(q̂_i·k̂_j/σ²));
    out = A v / (A 1). With a gate (causal only), A_ij is multiplied by (1 − g_j) Π_{j<t≤i} g_t.

    Note:
        The features are sign-indefinite: the normalizer is positive only in expectation (an exact
        0 gives a zero output). A padded position neither adds to the state nor decays it.
    """
    check_qkv(q, k, v, "rfa_attention")
    check_mask(mask, q, "rfa_attention")
    check_projection(projection, q.shape[-1], "rfa_attention")
    if not (isinstance(sigma, (int, float)) and sigma > 0):
        raise ValueError(f"rfa_attention: sigma must be a float > 0, got {sigma!r}")
    phi_q, phi_k = rfa_features(feature_inputs(q, mask), feature_inputs(k, mask), projection, sigma=sigma)
    log_decay = None
    if gate_logits is not None:
        if not causal:
            raise ValueError("rfa_attention: the gate is for causal attention (RFA-Gate); pass causal=True or drop gate_logits")
        if tuple(gate_logits.shape) != tuple(q.shape[:3]):
            raise ValueError(f"rfa_attention: gate_logits must be [B, H, N] = {list(q.shape[:3])}, got {tuple(gate_logits.shape)}")
        phi_k = phi_k * torch.sigmoid(-gate_logits)[..., None]  # 1 − g
        log_decay = F.logsigmoid(gate_logits)  # log g, finite even where g rounds to 0
    return feature_attention(
        phi_q, phi_k, v, mask=mask, causal=causal, log_decay=log_decay, chunk=chunk, initial_state=initial_state, return_state=return_state
    )


class RFA(RandomFeatureCore):
    """Owns the random frequencies [M, D] (a buffer, shared by heads) and, gated, the gate's
    per-head weights: g_t = sigmoid(k_t · w_h + b_h)."""

    info = MechanismInfo(
        paper="Peng et al. 2021, arxiv.org/abs/2103.02143",
        complexity="O(N·M·E) time, O(N·(M + E)) memory (causal: chunked prefix sums; gated: one state step per chunk)",
        causal=True,
        mask=True,
    )

    def __init__(self, config: RFAConfig, *, heads: int, head_dim: int, causal: bool, max_len: int | None):
        if not (isinstance(config.sigma, (int, float)) and config.sigma > 0):
            raise ValueError(f"rfa: sigma must be a float > 0, got {config.sigma!r}")
        if config.gated and not causal:
            raise ValueError("rfa: gated=True is RFA-Gate, a causal recurrence; build with causal=True or gated=False")
        check_int(config.chunk, "chunk", minimum=1, where="rfa")
        super().__init__(
            causal=causal, head_dim=head_dim, nb_features=config.nb_features, orthogonal=config.orthogonal,
            redraw_every=config.redraw_every, seed=config.seed, where="rfa",
        )
        self.config = config
        if config.gated:
            self.gate_weight = nn.Parameter(torch.zeros(heads, head_dim))
            self.gate_bias = nn.Parameter(torch.zeros(heads))

    def gate_logits(self, k: Tensor) -> Tensor | None:
        """[B, H, N] (or [B, H] for one token [B, H, D]) gate logits from the keys; None if not gated."""
        if not self.config.gated:
            return None
        if k.dim() == 3:
            return einsum(k, self.gate_weight, "b h d, h d -> b h") + self.gate_bias
        return einsum(k, self.gate_weight, "b h n d, h d -> b h n") + self.gate_bias[:, None]

    def features(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        phi_q, phi_k = rfa_features(q, k, self.projection, sigma=self.config.sigma)
        logits = self.gate_logits(k)
        return phi_q, (phi_k if logits is None else phi_k * torch.sigmoid(-logits)[..., None])

    def log_decay(self, k: Tensor) -> Tensor | None:
        logits = self.gate_logits(k)
        return None if logits is None else F.logsigmoid(logits)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        self.count_pass()
        return rfa_attention(
            q, k, v, self.projection, sigma=self.config.sigma, gate_logits=self.gate_logits(k), mask=mask, causal=self.causal, chunk=self.config.chunk
        )
