"""Linear attention: softmax(q·k) replaced by φ(q)·φ(k), so the product can be taken as φ(Q)(φ(K)ᵀV).

Katharopoulos et al. 2020, "Transformers are RNNs", arxiv.org/abs/2006.16236 (φ = elu + 1).
With φ = identity there is no softmax at all and the output is exactly (QKᵀ)V, computed in the
cheap order: the multiplication-order lesson (``attnzoo show linear --cost``).
b batch, h heads, n positions, d head dim, m features, e value dim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import Tensor

from attnzoo.core.checks import check_int, check_mask, check_qkv
from attnzoo.core.info import MechanismInfo
from attnzoo.kernel.core import FeatureCore
from attnzoo.kernel.feature_attention import KernelState, feature_attention, feature_inputs
from attnzoo.kernel.features import FEATURE_MAPS, FeatureMap


@dataclass
class LinearConfig:
    feature_map: str | Callable[[Tensor], Tensor] = "elu"  # "elu" (elu + 1), "relu", "identity" (exactly (QKᵀ)V), or a function
    normalize: bool | None = None  # divide by φ(q)·Σφ(k); None = yes, except for "identity"
    chunk: int = 64  # causal prefix sums: positions per chunk


def resolve_feature_map(feature_map: str | Callable[[Tensor], Tensor], where: str) -> FeatureMap:
    if callable(feature_map):
        return feature_map
    if feature_map not in FEATURE_MAPS:
        raise ValueError(f"{where}: feature_map must be one of {sorted(FEATURE_MAPS)} or a function Tensor -> Tensor, got {feature_map!r}")
    return FEATURE_MAPS[feature_map]


def _normalize_default(feature_map, normalize: bool | None) -> bool:
    return (feature_map != "identity") if normalize is None else bool(normalize)


def linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    feature_map: str | Callable[[Tensor], Tensor] = "elu",
    normalize: bool | None = None,
    mask: Tensor | None = None,
    causal: bool = False,
    chunk: int = 64,
    initial_state: KernelState | None = None,
    return_state: bool = False,
) -> Tensor | tuple[Tensor, KernelState]:
    """q, k: [B, H, N, D]; v: [B, H, N, E]; mask: [B, N] bool. Returns [B, H, N, E] (and the state).

    Equivalent to: A = φ(q) φ(k)ᵀ with padded (and, if causal, future) keys zeroed;
    out = A v / (A 1) when normalized, A v otherwise. identity φ: out = (q kᵀ) v exactly.

    Args:
        feature_map: "elu" (elu + 1, positive), "relu", "identity", or any function applied to
            the last axis ([..., D] -> [..., M]).
        normalize: None = True for every map but "identity" (whose normalizer can be 0 or negative).
        chunk: causal prefix sums run ``chunk`` positions at a time (memory O(N·D), not O(N·D²)).
        initial_state, return_state: the RNN view; see ``feature_attention``.

    Note:
        No ``scale``: the feature map sees q and k as given (scale them first if you want). No
        dropout: the N×N weights it would drop never exist.
    """
    check_qkv(q, k, v, "linear_attention")
    check_mask(mask, q, "linear_attention")
    phi = resolve_feature_map(feature_map, "linear_attention")
    phi_q, phi_k = phi(feature_inputs(q, mask)), phi(feature_inputs(k, mask))
    return feature_attention(
        phi_q,
        phi_k,
        v,
        mask=mask,
        causal=causal,
        normalize=_normalize_default(feature_map, normalize),
        chunk=chunk,
        initial_state=initial_state,
        return_state=return_state,
    )


class Linear(FeatureCore):
    """Linear attention core; ``step`` decodes one token at constant memory (causal only)."""

    info = MechanismInfo(
        paper="Katharopoulos et al. 2020, arxiv.org/abs/2006.16236",
        complexity="O(N·D·E) time, O(N·(D + E)) memory (causal: chunked prefix sums)",
        causal=True,
        mask=True,
    )

    def __init__(self, config: LinearConfig, *, heads: int, head_dim: int, causal: bool, max_len: int | None):
        super().__init__(causal=causal)
        self.phi = resolve_feature_map(config.feature_map, "linear")
        if config.normalize is not None and not isinstance(config.normalize, bool):
            raise ValueError(f"linear: normalize must be True, False or None, got {config.normalize!r}")
        check_int(config.chunk, "chunk", minimum=1, where="linear")
        self.config = config
        self.normalize = _normalize_default(config.feature_map, config.normalize)

    def features(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        return self.phi(q), self.phi(k)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        return linear_attention(
            q, k, v, feature_map=self.phi, normalize=self.normalize, mask=mask, causal=self.causal, chunk=self.config.chunk
        )
