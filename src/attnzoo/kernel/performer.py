"""Performer: FAVOR+ (Choromanski et al. 2021, "Rethinking Attention with Performers",
arxiv.org/abs/2009.14794).

exp(q·k · scale) is estimated without bias by φ(q)·φ(k) with positive orthogonal random features,
so softmax attention becomes φ(Q)(φ(K)ᵀV) / φ(Q)(φ(K)ᵀ1). Two more variants, both runnable and
named: ``trig`` (the sin/cos features the paper shows to be unstable) and ``relu`` (generalized
attention, φ(x) = relu(W x) + ε); with ``features="deterministic"``, φ(x) = relu(x) + ε, which is
what the Long Range Arena code runs as "Performer".
b batch, h heads, n positions, d head dim, m random features, e value dim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from attnzoo.core.checks import check_int, check_mask, check_qkv, resolve_scale
from attnzoo.core.info import MechanismInfo
from attnzoo.kernel.core import RandomFeatureCore
from attnzoo.kernel.feature_attention import KernelState, feature_attention, feature_inputs
from attnzoo.kernel.features import check_projection, relu_kernel_features, softmax_kernel_features, trig_kernel_features

Kernel = Literal["softmax", "trig", "relu"]
Features = Literal["orthogonal", "iid", "deterministic"]


@dataclass
class PerformerConfig:
    nb_features: int | None = None  # M random features; None = round(D · ln D)
    kernel: Kernel = "softmax"  # "softmax" (FAVOR+), "trig" (sin/cos), "relu" (generalized)
    features: Features = "orthogonal"  # "orthogonal" | "iid" | "deterministic" (relu only: no projection, LRA's Performer)
    redraw_every: int = 0  # in training, draw new features every k forward passes; 0 = never (see redraw())
    epsilon: float = 1e-3  # relu kernel: added to every feature (as in the LRA code)
    scale: float | None = None  # softmax / trig estimate exp(scale · q·k); None = 1/sqrt(D)
    chunk: int = 64  # causal prefix sums: positions per chunk
    seed: int | None = None  # feature draws; None = from torch's global generator


def favor_features(q: Tensor, k: Tensor, projection: Tensor, *, scale: float) -> tuple[Tensor, Tensor]:
    """FAVOR+ positive features of q, k [..., D] with projection [M, D] -> [..., M] each."""
    s = math.sqrt(scale)  # φ(√s q)·φ(√s k) estimates exp(s q·k)
    return softmax_kernel_features(q * s, projection, role="query"), softmax_kernel_features(k * s, projection, role="key")


def trig_features(q: Tensor, k: Tensor, projection: Tensor, *, scale: float) -> tuple[Tensor, Tensor]:
    """FAVOR sin/cos features -> [..., 2M] each."""
    s = math.sqrt(scale)
    return trig_kernel_features(q * s, projection, role="query"), trig_kernel_features(k * s, projection, role="key")


def relu_features(q: Tensor, k: Tensor, projection: Tensor | None, *, epsilon: float) -> tuple[Tensor, Tensor]:
    """Generalized ReLU features (no scale, as in the LRA code) -> [..., M or D] each."""
    return relu_kernel_features(q, projection, epsilon=epsilon), relu_kernel_features(k, projection, epsilon=epsilon)


def _attend(where, phi, q, k, v, mask, causal, chunk, initial_state, return_state):
    check_qkv(q, k, v, where)
    check_mask(mask, q, where)
    phi_q, phi_k = phi(feature_inputs(q, mask), feature_inputs(k, mask))
    return feature_attention(
        phi_q, phi_k, v, mask=mask, causal=causal, chunk=chunk, initial_state=initial_state, return_state=return_state
    )


def performer_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    projection: Tensor,
    *,
    mask: Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    chunk: int = 64,
    initial_state: KernelState | None = None,
    return_state: bool = False,
) -> Tensor | tuple[Tensor, KernelState]:
    """FAVOR+. q, k: [B, H, N, D]; v: [B, H, N, E]; projection: [M, D]. Returns [B, H, N, E].

    Equivalent to: A_ij = φ(q_i)·φ(k_j) ≈ exp(scale · q_i·k_j) with
    φ(x) = exp(w·x − |x|²/2)/√M on x·√scale; out = A v / (A 1), padded (and future) keys excluded.
    As M grows the output tends to softmax attention.

    Note:
        Stable without looking at other keys: each key's features are bounded by 1, and each
        query's largest exponent cancels in the normalization (see softmax_kernel_features).
    """
    check_projection(projection, q.shape[-1], "performer_attention")
    s = resolve_scale(scale, q.shape[-1], "performer_attention")
    return _attend(
        "performer_attention", lambda a, b: favor_features(a, b, projection, scale=s), q, k, v, mask, causal, chunk, initial_state, return_state
    )


def performer_trig_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    projection: Tensor,
    *,
    mask: Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    chunk: int = 64,
    initial_state: KernelState | None = None,
    return_state: bool = False,
) -> Tensor | tuple[Tensor, KernelState]:
    """FAVOR with sin/cos features. Shapes as ``performer_attention``.

    Equivalent to: A_ij = φ(q_i)·φ(k_j) with φ(x) = exp(|x|²/2)/√M · [sin(w·x), cos(w·x)];
    out = A v / (A 1). Unbiased too, but A can be negative and the normalizer can cross zero.
    """
    check_projection(projection, q.shape[-1], "performer_trig_attention")
    s = resolve_scale(scale, q.shape[-1], "performer_trig_attention")
    return _attend(
        "performer_trig_attention", lambda a, b: trig_features(a, b, projection, scale=s), q, k, v, mask, causal, chunk, initial_state, return_state
    )


def performer_relu_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    projection: Tensor | None,
    *,
    epsilon: float = 1e-3,
    mask: Tensor | None = None,
    causal: bool = False,
    chunk: int = 64,
    initial_state: KernelState | None = None,
    return_state: bool = False,
) -> Tensor | tuple[Tensor, KernelState]:
    """Generalized attention with ReLU features. projection: [M, D], or None for φ(x) = relu(x) + ε.

    Equivalent to: A_ij = (relu(W q_i) + ε)·(relu(W k_j) + ε); out = A v / (A 1).
    """
    if projection is not None:
        check_projection(projection, q.shape[-1], "performer_relu_attention")
    if not (isinstance(epsilon, (int, float)) and epsilon >= 0):
        raise ValueError(f"performer_relu_attention: epsilon must be a float >= 0, got {epsilon!r}")
    return _attend(
        "performer_relu_attention", lambda a, b: relu_features(a, b, projection, epsilon=epsilon), q, k, v, mask, causal, chunk, initial_state, return_state
    )


class Performer(RandomFeatureCore):
    """Owns the random projection [M, D] (a buffer, shared by the heads); ``redraw()`` draws a new one."""

    info = MechanismInfo(
        paper="Choromanski et al. 2021, arxiv.org/abs/2009.14794",
        complexity="O(N·M·E) time, O(N·(M + E)) memory, M = D·ln D features (causal: chunked prefix sums)",
        causal=True,
        mask=True,
    )

    def __init__(self, config: PerformerConfig, *, heads: int, head_dim: int, causal: bool, max_len: int | None):
        if config.kernel not in ("softmax", "trig", "relu"):
            raise ValueError(f"performer: kernel must be 'softmax' (FAVOR+), 'trig' or 'relu', got {config.kernel!r}")
        if config.features not in ("orthogonal", "iid", "deterministic"):
            raise ValueError(f"performer: features must be 'orthogonal', 'iid' or 'deterministic', got {config.features!r}")
        if config.features == "deterministic" and config.kernel != "relu":
            raise ValueError("performer: features='deterministic' (no projection) exists for kernel='relu' only")
        if config.features == "deterministic" and config.nb_features is not None:
            raise ValueError("performer: deterministic features are relu(x) + ε on the D head dims; drop nb_features")
        check_int(config.chunk, "chunk", minimum=1, where="performer")
        if not (isinstance(config.epsilon, (int, float)) and config.epsilon >= 0):
            raise ValueError(f"performer: epsilon must be a float >= 0, got {config.epsilon!r}")
        super().__init__(
            causal=causal, head_dim=head_dim, nb_features=config.nb_features, orthogonal=config.features == "orthogonal",
            redraw_every=config.redraw_every, seed=config.seed, where="performer", draw=config.features != "deterministic",
        )
        self.config = config
        self.scale = resolve_scale(config.scale, head_dim, "performer")

    def features(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        c = self.config
        if c.kernel == "softmax":
            return favor_features(q, k, self.projection, scale=self.scale)
        if c.kernel == "trig":
            return trig_features(q, k, self.projection, scale=self.scale)
        return relu_features(q, k, self.projection, epsilon=c.epsilon)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        self.count_pass()
        return _attend("performer", self.features, q, k, v, mask, self.causal, self.config.chunk, None, False)
