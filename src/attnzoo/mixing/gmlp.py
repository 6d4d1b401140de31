"""Pay Attention to MLPs: gMLP's spatial gating unit (Liu et al., 2021). arxiv.org/abs/2105.08050

The layer is proj_out(SGU(GELU(proj_in(x)))): proj_in widens C to 2F, the spatial gating unit
splits the channels into halves z1, z2 and gates z1 with a learned linear map across positions of
the normalised z2, SGU(z) = z1 ⊙ (W · LayerNorm(z2) + b), and proj_out maps F back to C. W starts
near zero and b at one, so at initialisation SGU(z) ≈ z1 and the layer is a plain channel MLP.
(The block's pre-norm and residual belong to the encoder block.) W has one row and column per
position, up to max_len; an input of N <= max_len uses W[:N, :N] and b[:N].
b batch, n/i/j positions, c channels, f gating channels (F = expansion·C), l max_len.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import einsum
from torch import Tensor, nn

from attnzoo.core.checks import check_int, check_layer_input, check_mask
from attnzoo.core.info import MechanismInfo


@dataclass
class GMLPConfig:
    expansion: int = 3  # F = expansion·C gating channels; proj_in makes 2F (the paper's d_ffn = 6·d_model)
    init_eps: float = 1e-3  # W starts uniform in ±init_eps / max_len (near zero: SGU(z) ≈ z1)


def spatial_gating(
    z: Tensor,
    weight: Tensor,
    bias: Tensor,
    norm_weight: Tensor,
    norm_bias: Tensor,
    *,
    mask: Tensor | None = None,
    causal: bool = False,
    eps: float = 1e-5,
) -> Tensor:
    """The spatial gating unit. z: [B, N, 2F]; weight: [L, L]; bias: [L] (L >= N; the first N
    positions are used); norm_weight, norm_bias: [F]; mask: [B, N] bool. Returns [B, N, F].

    Equivalent to: z1, z2 = z.chunk(2, -1); u = layer_norm(z2, norm_weight, norm_bias, eps) with
    padded rows set to 0; out[b, i] = z1[b, i] ⊙ (Σ_j W[i, j] u[b, j] + bias[i]), j < N
    (j <= i when causal).

    Note:
        Padded rows are zeroed after the norm, so padded content never reaches a real position; a
        sequence padded at its end gives its real positions what the unpadded sequence gives. The
        causal form masks W's upper triangle in every call (not only at initialisation).
    """
    if not isinstance(z, Tensor) or z.dim() != 3 or z.shape[-1] % 2 or not z.is_floating_point():
        got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
        raise ValueError(f"spatial_gating: z must be a float tensor [B, N, 2F] (an even channel count), got {got}")
    n, f = z.shape[1], z.shape[-1] // 2
    if n == 0:
        raise ValueError("spatial_gating: empty sequence (N=0); the unit needs at least one position")
    if weight.dim() != 2 or weight.shape[0] != weight.shape[1] or bias.shape != weight.shape[:1]:
        raise ValueError(f"spatial_gating: weight must be [L, L] and bias [L], got {tuple(weight.shape)} and {tuple(bias.shape)}")
    if weight.shape[0] < n:
        raise ValueError(f"spatial_gating: N={n} exceeds max_len={weight.shape[0]} (W has one row per position); build with max_len>={n}")
    if norm_weight.shape != (f,) or norm_bias.shape != (f,):
        got = f"{tuple(norm_weight.shape)} and {tuple(norm_bias.shape)}"
        raise ValueError(f"spatial_gating: norm_weight and norm_bias must be [F={f}], got {got}")
    check_mask(mask, z[:, None], "spatial_gating")
    z1, z2 = z.chunk(2, dim=-1)  # [B, N, F] each
    u = F.layer_norm(z2, (f,), norm_weight, norm_bias, eps)
    if mask is not None:
        u = u * mask[..., None].to(u.dtype)
    w = weight[:n, :n]
    if causal:
        w = w.tril()
    gate = einsum(w, u, "i j, b j f -> b i f") + bias[:n, None]
    return z1 * gate


class GMLP(nn.Module):
    """The gMLP layer x [B, N, C] -> proj_out(SGU(GELU(proj_in(x)))) [B, N, C].

    Owns ``proj_in`` Linear(C, 2F), ``norm`` LayerNorm(F), ``spatial_weight`` [L, L] (uniform
    ±init_eps / L), ``spatial_bias`` [L] (ones) and ``proj_out`` Linear(F, C). ``heads`` is accepted
    for a uniform build interface and ignored (the gating unit has one map for all channels).
    """

    is_layer = True
    info = MechanismInfo(
        paper="Liu et al. 2021, arxiv.org/abs/2105.08050",
        complexity="O(N²·F + N·C·F) time, O(N·F + L²) memory (the L×L spatial weight), F = expansion·C, L = max_len",
        causal=True,
        mask=True,
        variable_length=False,
        qk=False,
    )

    def __init__(self, config: GMLPConfig, *, dim: int, heads: int, causal: bool, max_len: int | None):
        super().__init__()
        check_int(dim, "dim", minimum=1, where="gmlp")
        check_int(config.expansion, "expansion", minimum=1, where="gmlp")
        if isinstance(config.init_eps, bool) or not isinstance(config.init_eps, (int, float)) or not 0 <= config.init_eps < float("inf"):
            raise ValueError(f"gmlp: init_eps must be a finite float >= 0 (the paper's 1e-3), got {config.init_eps!r}")
        if max_len is None:
            raise ValueError(
                "gmlp needs max_len (its token-mixing matrix has one row per position); build it with max_len=..., e.g. max_len=512"
            )
        check_int(max_len, "max_len", minimum=1, where="gmlp")
        self.config, self.dim, self.causal, self.max_len = config, dim, bool(causal), max_len
        f = config.expansion * dim
        self.proj_in = nn.Linear(dim, 2 * f)
        self.norm = nn.LayerNorm(f)
        bound = config.init_eps / max_len
        self.spatial_weight = nn.Parameter(torch.empty(max_len, max_len).uniform_(-bound, bound))
        self.spatial_bias = nn.Parameter(torch.ones(max_len))
        self.proj_out = nn.Linear(f, dim)

    def sgu(self, z: Tensor, mask: Tensor | None = None) -> Tensor:
        """The layer's spatial gating unit on z [B, N, 2F] -> [B, N, F]."""
        return spatial_gating(
            z, self.spatial_weight, self.spatial_bias, self.norm.weight, self.norm.bias, mask=mask, causal=self.causal, eps=self.norm.eps
        )

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        check_layer_input(x, mask, self.dim, self.max_len, "gmlp", " (its token-mixing matrix has one row per position)")
        return self.proj_out(self.sgu(F.gelu(self.proj_in(x)), mask))

    @torch.no_grad()
    def implied_weights(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """[B, 1, N, N]: the spatial weights of the gate (gate_i = Σ_j W_ij u_j + b_i, one map for every
        channel, whatever x holds); padded keys and, when causal, future keys get 0 (pictures)."""
        check_layer_input(x, mask, self.dim, self.max_len, "gmlp", " (its token-mixing matrix has one row per position)")
        b, n = x.shape[:2]
        w = self.spatial_weight[:n, :n].detach().to(x.dtype)
        w = (w.tril() if self.causal else w).expand(b, 1, n, n)
        return w if mask is None else w * mask[:, None, None, :].to(x.dtype)

    def computed_pairs(self, n: int) -> Tensor:
        """Bool [1, N, N]: every pair (i, j), or j <= i when causal."""
        pairs = torch.ones(1, n, n, dtype=torch.bool)
        return pairs.tril() if self.causal else pairs
