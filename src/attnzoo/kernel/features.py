"""Feature maps φ for kernel attention (φ(q)·φ(k) stands in for exp(q·k)), and the random
projections the random-feature maps draw.

b batch, h heads, n positions, d head dim, m features (rows of the projection).
"""

from __future__ import annotations

import math
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

FeatureMap = Callable[[Tensor], Tensor]


def elu_plus_one(x: Tensor) -> Tensor:
    """elu(x) + 1 > 0 (Katharopoulos et al. 2020): positive, so the normalizer never vanishes."""
    return F.elu(x) + 1.0


FEATURE_MAPS: dict[str, FeatureMap] = {"identity": lambda x: x, "elu": elu_plus_one, "relu": F.relu}

Role = Literal["query", "key", "raw"]


def gaussian_projection(
    m: int, d: int, *, orthogonal: bool = True, generator: torch.Generator | None = None, dtype=torch.float32
) -> Tensor:
    """[M, D] rows w_i with Gaussian marginals w_i ~ N(0, I_D).

    ``orthogonal=True`` couples them (Choromanski et al. 2021, §2.4): blocks of D exactly
    orthogonal directions (Haar, from QR with the sign fix), each row given a chi(D) length so
    that it stays marginally Gaussian (the estimator stays unbiased) while the variance drops.
    """
    if not orthogonal:
        return torch.randn(m, d, generator=generator, dtype=torch.float64).to(dtype)
    blocks = []
    for _ in range(math.ceil(m / d)):
        q, r = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=torch.float64))
        blocks.append((q * torch.sign(torch.diagonal(r))).T)  # rows orthonormal, Haar-distributed
    directions = torch.cat(blocks)[:m]
    lengths = torch.randn(m, d, generator=generator, dtype=torch.float64).norm(dim=1, keepdim=True)
    return (directions * lengths).to(dtype)


def _affine(x: Tensor, w: Tensor, bias: Tensor) -> Tensor:
    """x [..., K] @ wᵀ [K, M] + bias [M] as one GEMM (the bias add fused into it) -> [..., M]."""
    return torch.addmm(bias, x.reshape(-1, x.shape[-1]), w.T).view(*x.shape[:-1], w.shape[0])


def check_projection(projection, d: int, where: str) -> None:
    """projection must be a [M, D] tensor (rows w_i for the head dim D)."""
    if not isinstance(projection, Tensor) or projection.dim() != 2 or projection.shape[1] != d:
        got = tuple(projection.shape) if isinstance(projection, Tensor) else type(projection).__name__
        raise ValueError(f"{where}: projection must be [M, D={d}] (e.g. gaussian_projection(M, D)), got {got}")


def softmax_kernel_features(x: Tensor, projection: Tensor, *, role: Role) -> Tensor:
    """FAVOR+ positive random features: E_w[φ(x)·φ(y)] = exp(x·y). x: [..., D]; projection: [M, D] -> [..., M].

    Equivalent to (role="raw"): φ(x)_i = exp(w_i·x − |x|²/2) / √M.

    Note:
        For normalized attention, query and key roles return φ up to factors that cancel: a
        constant, and for queries a per-query one. Keys get exp(w_i·k − |k|²/2 − |w_i|²/2) =
        exp(−|w_i − k|²/2) ≤ 1: no overflow, and no dependence on other keys (so causal attention
        cannot see the future through a stabilizer, and a recurrent state stays valid across
        calls). Queries get the matching exp(w_i·q + |w_i|²/2) less their largest exponent.
        Each is one GEMM (with the bias fused) and one exp over the [.., M] features.
    """
    m, w = projection.shape[0], projection.to(x.dtype)
    half_sq_w = w.square().sum(-1) / 2  # [M]
    if role == "raw":
        return torch.exp(x @ w.T - x.square().sum(-1, keepdim=True) / 2) / math.sqrt(m)
    if role == "key":
        # −|k|²/2 enters the same GEMM as an extra input column against a constant −1/2 row
        x_aug = torch.cat([x, x.square().sum(-1, keepdim=True)], dim=-1)
        w_aug = torch.cat([w, w.new_full((m, 1), -0.5)], dim=-1)
        return torch.exp(_affine(x_aug, w_aug, -half_sq_w))
    logits = _affine(x, w, half_sq_w)
    return torch.exp(logits - logits.amax(-1, keepdim=True).detach())


def trig_kernel_features(x: Tensor, projection: Tensor, *, role: Role) -> Tensor:
    """FAVOR (sin/cos) random features: E_w[φ(x)·φ(y)] = exp(x·y). x: [..., D] -> [..., 2M].

    Equivalent to (role="raw"): φ(x) = exp(|x|²/2) / √M · [sin(w_i·x), cos(w_i·x)]_i.

    Note:
        Sign-indefinite, so the normalizer can pass through zero: the instability FAVOR+ fixes.
        Query and key roles drop the constant 1/√M, and queries their exp(|q|²/2), which cancel
        in the normalized output; keys keep exp(|k|²/2) and overflow float32 for |k|² > ~176
        (after the scale).
    """
    proj = x @ projection.to(x.dtype).T
    feats = torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)
    if role == "query":
        return feats
    feats = feats * torch.exp(x.square().sum(-1, keepdim=True) / 2)
    return feats / math.sqrt(projection.shape[0]) if role == "raw" else feats


def relu_kernel_features(x: Tensor, projection: Tensor | None, *, epsilon: float) -> Tensor:
    """Generalized (ReLU) kernel features: relu(x Wᵀ) + ε, or relu(x) + ε with no projection
    (the "deterministic" features of the LRA Performer). x: [..., D] -> [..., M or D]."""
    return F.relu(x if projection is None else x @ projection.to(x.dtype).T) + epsilon


def fourier_features(x: Tensor, projection: Tensor) -> Tensor:
    """Random Fourier features (Rahimi & Recht 2007): E_w[φ(x)·φ(y)] = exp(−|x − y|²σ²/2) for
    rows w ~ N(0, σ² I). x: [..., D] -> [..., 2M].

    Equivalent to: φ(x) = [sin(w_i·x), cos(w_i·x)]_i / √M.
    """
    proj = x @ projection.to(x.dtype).T
    return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1) / math.sqrt(projection.shape[0])
