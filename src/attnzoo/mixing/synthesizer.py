"""Synthesizer: Rethinking Self-Attention in Transformer Models (Tay et al., 2021). arxiv.org/abs/2005.00743

Attention weights synthesised without query-key dot products: softmax(S_h) V_h per head, where the
logits S_h come from each token alone (dense: an MLP of x_i gives row i; factorized_dense: two small
projections of x_i tiled to a row) or from no token at all (random: a learned or fixed matrix R;
factorized_random: R1 R2ᵀ of rank k). Optionally mixed with dot-product attention ("dot"): logits
w_s·S + w_d·(Q Kᵀ·scale), (w_s, w_d) a learned softmax. The layer owns the value and output
projections (and q, k for the mixture); position-indexed weights cover max_len positions and an
input of N <= max_len uses the first N.
b batch, h heads, n/i/j positions, c channels, d head dim, f MLP hidden width, k factorized-random
rank, s and t factorized-dense sizes (s·t >= max_len), l max_len.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import einsum, rearrange
from torch import Tensor, nn

from attnzoo.core.checks import check_dropout, check_int, check_layer_input, check_mask
from attnzoo.core.info import MechanismInfo
from attnzoo.core.reference import safe_softmax

Kind = Literal["dense", "random", "factorized_dense", "factorized_random"]
KINDS = ("dense", "random", "factorized_dense", "factorized_random")


@dataclass
class SynthesizerConfig:
    kind: Kind = "dense"  # how the logits are synthesised (see the module docstring)
    dot: bool = False  # mix with dot-product attention: w_s·S + w_d·(Q Kᵀ·scale), (w_s, w_d) learned
    trainable: bool = True  # random kinds: R (or R1, R2) learned (True) or a fixed buffer (False)
    factor: int = 8  # factorized_random: rank k; factorized_dense: s = factor, t = ceil(max_len / factor)
    hidden: int | None = None  # dense: width of the MLP's hidden layer; None = C
    dropout_p: float = 0.0  # on the [N, N] attention weights (training only)


def _allowed(mask: Tensor | None, n: int, causal: bool, device) -> Tensor | None:
    """Bool, broadcastable to [B, H, N, N]: key j is real (and j <= i when causal). None = all."""
    allowed = None if mask is None else mask[:, None, None, :]  # [B, 1, 1, N]
    if causal:
        tril = torch.ones(n, n, dtype=torch.bool, device=device).tril()
        allowed = tril if allowed is None else allowed & tril
    return allowed


def synthesizer_attention(
    logits: Tensor, v: Tensor, *, mask: Tensor | None = None, causal: bool = False, dropout_p: float = 0.0
) -> Tensor:
    """Attention with given logits. logits: [B, H, N, N] or [1, H, N, N] (shared by the batch);
    v: [B, H, N, D]; mask: [B, N] bool. Returns [B, H, N, D].

    Equivalent to: softmax(logits with -inf where key j is padding or, when causal, j > i) @ v,
    with dropout on the weights. A query with no visible key gets zeros, never NaN.
    """
    _check_v(v, "synthesizer_attention")
    b, h, n, _ = v.shape
    if not isinstance(logits, Tensor) or logits.dim() != 4 or logits.shape[0] not in (1, b) or tuple(logits.shape[1:]) != (h, n, n):
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"synthesizer_attention: logits must be [B={b} or 1, H={h}, N={n}, N={n}] to match v {tuple(v.shape)}, got {got}")
    check_mask(mask, v, "synthesizer_attention")
    check_dropout(dropout_p, "synthesizer_attention")
    allowed = _allowed(mask, n, causal, v.device)
    weights = torch.softmax(logits, dim=-1) if allowed is None else safe_softmax(logits.masked_fill(~allowed, float("-inf")))
    if dropout_p > 0:
        weights = F.dropout(weights, dropout_p)
    return weights @ v


def factorized_random_attention(
    r1: Tensor, r2: Tensor, v: Tensor, *, mask: Tensor | None = None, causal: bool = False, dropout_p: float = 0.0
) -> Tensor:
    """Attention with rank-k logits R1 R2ᵀ, never formed. r1, r2: [H, N, K] (shared by the batch)
    or [B, H, N, K]; v: [B, H, N, D]; mask: [B, N] bool. Returns [B, H, N, D].

    Equivalent to: synthesizer_attention(r1 @ r2ᵀ, v, mask=mask, causal=causal), computed as
    F.scaled_dot_product_attention(r1, r2, v, scale=1.0): memory O(N·(K + D)).

    Note:
        SDPA's fused kernels need one head dim for r and v, so the narrower side is zero-padded
        (which changes no dot product). Without padding, and under causal attention with padding
        only at the end (a real query then sees real keys only), no mask is passed. Padding
        elsewhere passes a boolean mask: [B, 1, 1, N] (padded keys) without causal, O(N) memory;
        causal with padding in holes needs a [B, 1, N, N] mask, the one case with O(N²) memory.
        Padded queries may see any key (their output is finite and meaningless), so no row is
        empty.
    """
    _check_v(v, "factorized_random_attention")
    b, h, n, d = v.shape
    for name, r in (("r1", r1), ("r2", r2)):
        if not isinstance(r, Tensor) or r.dim() not in (3, 4) or tuple(r.shape[-3:-1]) != (h, n) or (r.dim() == 4 and r.shape[0] != b):
            got = tuple(r.shape) if isinstance(r, Tensor) else type(r).__name__
            raise ValueError(f"factorized_random_attention: {name} must be [H={h}, N={n}, K] or [B={b}, H={h}, N={n}, K], got {got}")
    if r1.shape[-1] != r2.shape[-1]:
        raise ValueError(f"factorized_random_attention: r1 and r2 need the same rank K, got {r1.shape[-1]} and {r2.shape[-1]}")
    if r1.dtype != v.dtype or r2.dtype != v.dtype:
        raise ValueError(f"factorized_random_attention: r1, r2 ({r1.dtype}, {r2.dtype}) and v ({v.dtype}) dtypes differ; cast them to one")
    check_mask(mask, v, "factorized_random_attention")
    check_dropout(dropout_p, "factorized_random_attention")
    r1, r2 = r1.expand(b, h, n, -1), r2.expand(b, h, n, -1)  # [B, H, N, K]
    k = r1.shape[-1]
    if k < d:
        r1, r2 = F.pad(r1, (0, d - k)), F.pad(r2, (0, d - k))
    elif d < k:
        v = F.pad(v, (0, k - d))
    attn_mask, is_causal = None, causal
    if mask is not None and not bool(mask.all()):
        if not causal:
            attn_mask = (mask | ~mask.any(-1, keepdim=True))[:, None, None, :]  # [B, 1, 1, N]; an all-padding row sees all
        elif not bool((mask == (torch.arange(n, device=mask.device) < mask.sum(-1, keepdim=True))).all()):  # holes
            tril = torch.ones(n, n, dtype=torch.bool, device=v.device).tril()
            attn_mask = (tril & (mask[:, None, :] | ~mask[:, :, None]))[:, None]  # [B, 1, N, N]; padded queries see their past
            is_causal = False
    out = F.scaled_dot_product_attention(r1, r2, v, attn_mask=attn_mask, is_causal=is_causal, dropout_p=dropout_p, scale=1.0)
    return out[..., :d]


def dense_logits(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> Tensor:
    """The dense synthesizer's logits. x: [B, N, C]; w1: [F, C]; b1: [F]; w2: [H, L, F]; b2: [H, L]
    (L >= N; the first N positions are used). Returns [B, H, N, N].

    Equivalent to: logits[b, h, i, j] = w2[h, j] · relu(w1 x[b, i] + b1) + b2[h, j], j < N: row i
    is a function of token i alone.
    """
    n = x.shape[1]
    if w2.dim() != 3 or w2.shape[1] < n or tuple(b2.shape) != tuple(w2.shape[:2]):
        raise ValueError(
            f"dense_logits: w2 must be [H, L, F] and b2 [H, L] with L >= N={n}, got {tuple(w2.shape)} and {tuple(b2.shape)}; "
            f"build with max_len>={n}"
        )
    hidden = F.relu(F.linear(x, w1, b1))  # [B, N, F]
    return einsum(hidden, w2[:, :n], "b i f, h j f -> b h i j") + b2[:, None, :n]


def factorized_dense_logits(a: Tensor, b: Tensor, n: int) -> Tensor:
    """The factorized dense synthesizer's logits. a: [B, H, N, S]; b: [B, H, N, T] with S·T >= n.
    Returns [B, H, N, n].

    Equivalent to: logits[..., i, j] = a[..., i, j mod S] · b[..., i, j div S], the paper's
    H_A(A) ⊙ H_B(B): A tiled T times, each entry of B repeated S times, cut to n columns.
    """
    s, t = a.shape[-1], b.shape[-1]
    if s * t < n:
        raise ValueError(f"factorized_dense_logits: S·T = {s}·{t} = {s * t} must be >= n={n}; widen a or b")
    t = math.ceil(n / s)  # the rows of the tiling that the first n columns use
    tiles = b[..., :t, None] * a[..., None, :]  # [B, H, N, T, S]: entry (t, s) is column t·S + s
    return tiles.flatten(-2)[..., :n]


class Synthesizer(nn.Module):
    """The synthesizer layer x [B, N, C] -> [B, N, C]: value and output projections around
    synthetic attention with H heads of width C / H; owns the logits' parameters (and q, k for the
    mixture). Position-indexed weights cover max_len positions; N <= max_len uses the first N.

    Parameters by kind (L = max_len): dense: ``mlp_in`` Linear(C, hidden) shared by the heads and
    ``w2`` [H, L, hidden], ``b2`` [H, L] (like Linear(hidden, H·L)); random: ``r`` [H, L, L],
    N(0, 1); factorized_dense: ``proj_a`` Linear(C, H·s), ``proj_b`` Linear(C, H·t);
    factorized_random: ``r1``, ``r2`` [H, L, k], N(0, k^-1/2), so R1 R2ᵀ starts near N(0, 1) like
    random's R (the paper says only "initialised randomly"). With trainable=False, r (or r1, r2)
    is a buffer. With dot=True: ``qk`` Linear(C, 2C) and ``mix`` [2] (zeros: w_s = w_d = ½).
    """

    is_layer = True
    info = MechanismInfo(
        paper="Tay et al. 2021, arxiv.org/abs/2005.00743",
        complexity=(
            "O(H·N²·D + N·C·(C + H·N)) time, O(H·N²) memory (explicit synthetic logits); factorized_random: "
            "O(H·N²·(k + D)) time, O(N·(H·k + C)) memory (SDPA on R1, R2; no N×N matrix)"
        ),
        causal=True,
        mask=True,
        variable_length=False,
        qk=False,
    )

    def __init__(self, config: SynthesizerConfig, *, dim: int, heads: int, causal: bool, max_len: int | None):
        super().__init__()
        self._check_config(config, dim, heads, max_len)
        self.config, self.dim, self.heads, self.causal, self.max_len = config, dim, heads, bool(causal), max_len
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        kind, length = config.kind, max_len
        if kind == "dense":
            hidden = dim if config.hidden is None else config.hidden
            self.mlp_in = nn.Linear(dim, hidden)
            bound = 1.0 / math.sqrt(hidden)  # nn.Linear(hidden, H·L)'s default initialisation
            self.w2 = nn.Parameter(torch.empty(heads, length, hidden).uniform_(-bound, bound))
            self.b2 = nn.Parameter(torch.empty(heads, length).uniform_(-bound, bound))
        elif kind == "random":
            self._position_weight("r", torch.randn(heads, length, length))
        elif kind == "factorized_dense":
            self.sizes = (config.factor, math.ceil(length / config.factor))  # (s, t)
            self.proj_a = nn.Linear(dim, heads * self.sizes[0])
            self.proj_b = nn.Linear(dim, heads * self.sizes[1])
        else:
            std = config.factor**-0.25
            self._position_weight("r1", torch.randn(heads, length, config.factor) * std)
            self._position_weight("r2", torch.randn(heads, length, config.factor) * std)
        if config.dot:
            self.qk = nn.Linear(dim, 2 * dim)
            self.mix = nn.Parameter(torch.zeros(2))

    def _position_weight(self, name: str, value: Tensor) -> None:
        if self.config.trainable:
            self.register_parameter(name, nn.Parameter(value))
        else:
            self.register_buffer(name, value)

    @staticmethod
    def _check_config(config: SynthesizerConfig, dim: int, heads: int, max_len: int | None) -> None:
        check_int(dim, "dim", minimum=1, where="synthesizer")
        check_int(heads, "heads", minimum=1, where="synthesizer")
        if dim % heads:
            raise ValueError(f"synthesizer: dim ({dim}) must be divisible by heads ({heads}); e.g. dim={heads * max(1, dim // heads)}")
        if config.kind not in KINDS:
            raise ValueError(f"synthesizer: kind must be one of {KINDS}, got {config.kind!r}")
        if max_len is None:
            raise ValueError(
                "synthesizer needs max_len (its synthetic logits have one column per position, and random kinds one row); "
                "build it with max_len=..., e.g. max_len=512"
            )
        check_int(max_len, "max_len", minimum=1, where="synthesizer")
        check_int(config.factor, "factor", minimum=1, where="synthesizer")
        if config.hidden is not None:
            check_int(config.hidden, "hidden", minimum=1, where="synthesizer")
            if config.kind != "dense":
                raise ValueError(
                    f"synthesizer: hidden is the dense kind's MLP width; drop it, or build with kind='dense' (got kind={config.kind!r})"
                )
        if not config.trainable and config.kind not in ("random", "factorized_random"):
            raise ValueError(
                "synthesizer: trainable=False fixes random logits; the dense kinds compute theirs from x with learned "
                f"weights; use kind='random' or 'factorized_random', or trainable=True (got kind={config.kind!r})"
            )
        for name in ("dot", "trainable"):
            if not isinstance(getattr(config, name), bool):
                raise ValueError(f"synthesizer: {name} must be True or False, got {getattr(config, name)!r}")
        check_dropout(config.dropout_p, "synthesizer")

    def _check_input(self, x: Tensor, mask: Tensor | None) -> int:
        return check_layer_input(x, mask, self.dim, self.max_len, "synthesizer", " (its synthetic logits have one column per position)")

    def _split(self, t: Tensor) -> Tensor:
        return rearrange(t, "b n (h d) -> b h n d", h=self.heads)

    def mixture_weights(self) -> Tensor:
        """(w_s, w_d) = softmax(mix): the weights of the synthetic and the dot-product logits (dot=True)."""
        return torch.softmax(self.mix, dim=0)

    def synthetic_logits(self, x: Tensor) -> Tensor:
        """S: [B, H, N, N] (dense kinds) or [1, H, N, N] (random kinds), for x [B, N, C].

        Forms R1 R2ᵀ for factorized_random (the layer's forward never does): small N only.
        """
        n = x.shape[1]
        kind = self.config.kind
        if kind == "dense":
            return dense_logits(x, self.mlp_in.weight, self.mlp_in.bias, self.w2, self.b2)
        if kind == "random":
            return self.r[None, :, :n, :n]
        if kind == "factorized_dense":
            return factorized_dense_logits(self._split(self.proj_a(x)), self._split(self.proj_b(x)), n)
        return (self.r1[:, :n] @ self.r2[:, :n].transpose(-1, -2))[None]

    def logits(self, x: Tensor) -> Tensor:
        """The logits the softmax sees (before masking): S, or w_s·S + w_d·(Q Kᵀ·scale) when dot=True."""
        s = self.synthetic_logits(x)
        if not self.config.dot:
            return s
        q, k = (self._split(t) for t in self.qk(x).chunk(2, dim=-1))
        w = self.mixture_weights()
        return w[0] * s + w[1] * (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])

    def factors(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """factorized_random: (r1, r2) with r1 r2ᵀ = the logits: [H, N, k], or with dot=True
        [B, H, N, k + D] = (√w_s R1 | √(w_d·scale) Q) and (√w_s R2 | √(w_d·scale) K)."""
        n = x.shape[1]
        r1, r2 = self.r1[:, :n], self.r2[:, :n]
        if not self.config.dot:
            return r1, r2
        q, k = (self._split(t) for t in self.qk(x).chunk(2, dim=-1))
        w = self.mixture_weights()
        s, d = w[0].sqrt(), (w[1] / math.sqrt(q.shape[-1])).sqrt()
        batch = (q.shape[0], -1, -1, -1)
        return torch.cat([(s * r1).expand(batch), d * q], -1), torch.cat([(s * r2).expand(batch), d * k], -1)

    def _attend(self, x: Tensor, v: Tensor, mask: Tensor | None, dropout_p: float) -> Tensor:
        if self.config.kind == "factorized_random":
            r1, r2 = self.factors(x)
            return factorized_random_attention(r1, r2, v, mask=mask, causal=self.causal, dropout_p=dropout_p)
        return synthesizer_attention(self.logits(x), v, mask=mask, causal=self.causal, dropout_p=dropout_p)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        self._check_input(x, mask)
        p = self.config.dropout_p if self.training else 0.0
        y = self._attend(x, self._split(self.value(x)), mask, p)  # [B, H, N, D]
        return self.out(rearrange(y, "b h n d -> b n (h d)"))

    @torch.no_grad()
    def implied_weights(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """[B, H, N, N]: the softmax weights (no dropout) each head applies to the values (small N).

        The attention is linear in v, so this is its output for v = I_N. Rows sum to 1 (0 for a
        query with no visible key); padded keys and, when causal, future keys get no weight.
        """
        n = self._check_input(x, mask)
        eye = torch.eye(n, dtype=x.dtype, device=x.device).expand(x.shape[0], self.heads, n, n)
        return self._attend(x, eye, mask, 0.0)

    def computed_pairs(self, n: int) -> Tensor:
        """Bool [1, N, N]: every pair (i, j), or j <= i when causal."""
        pairs = torch.ones(1, n, n, dtype=torch.bool)
        return pairs.tril() if self.causal else pairs


def _check_v(v: Tensor, where: str) -> None:
    if not isinstance(v, Tensor) or v.dim() != 4 or not v.is_floating_point():
        got = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
        raise ValueError(f"{where}: v must be a float tensor [B, H, N, D], got {got}; split heads first")
    if v.shape[2] == 0:
        raise ValueError(f"{where}: empty sequence (N=0); attention needs at least one position")
