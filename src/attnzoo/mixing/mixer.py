"""MLP-Mixer's token-mixing MLP (Tolstikhin et al., 2021). arxiv.org/abs/2105.01601

Each channel is mixed across positions by one MLP shared by the channels:
Y[:, c] = W2 · GELU(W1 · X[:, c] + b1) + b2. (The channel-mixing MLP is the encoder block's FFN.)
Hidden units are tied to positions so that a causal form exists: E units per position, unit
(j, r) at row j·E + r of W1, for j < max_len and r < E. Causal: unit (j, r) reads inputs i <= j
and output i reads units of positions j <= i. An input of N <= max_len uses W1's first N columns
and W2's and b2's first N rows (and, when causal, only the units of the first N positions).
b batch, n/i positions, m hidden units (m = E·max_len), c channels, l max_len.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import einsum
from torch import Tensor, nn

from attnzoo.core.checks import check_int, check_layer_input, check_mask
from attnzoo.core.info import MechanismInfo


@dataclass
class MixerConfig:
    expansion: int = 1  # E hidden units per position: the hidden width is E·max_len


def token_mixing(
    x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, *, mask: Tensor | None = None, causal: bool = False
) -> Tensor:
    """The token-mixing MLP. x: [B, N, C]; w1: [M, L]; b1: [M]; w2: [L, M]; b2: [L] (L >= N; the
    first N positions are used); mask: [B, N] bool. Returns [B, N, C]. Causal needs M = E·L, unit
    (j, r) at row j·E + r.

    Equivalent to: for every channel c, with padded rows of x set to 0,
    y[b, :, c] = w2[:N] @ gelu(w1[:, :N] @ x[b, :, c] + b1) + b2[:N]; when causal, w1[(j, r), i] = 0
    for i > j and w2[i, (j, r)] = 0 for j > i, and units of positions >= N are left out (no output
    reads them).

    Note:
        Padded tokens count as zero inputs: their content never reaches a real position, and a
        sequence padded at its end gives its real positions what the unpadded sequence gives.
        Padding in holes keeps the positions fixed (a real token's output depends on where the
        others are), unlike FNet, which packs real tokens.
    """
    if not isinstance(x, Tensor) or x.dim() != 3 or not x.is_floating_point():
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"token_mixing: x must be a float tensor [B, N, C], got {got}")
    n = x.shape[1]
    if n == 0:
        raise ValueError("token_mixing: empty sequence (N=0); the MLP needs at least one position")
    m, length = w1.shape if w1.dim() == 2 else (None, None)
    if m is None or tuple(w2.shape) != (length, m) or tuple(b1.shape) != (m,) or tuple(b2.shape) != (length,):
        raise ValueError(
            "token_mixing: need w1 [M, L], b1 [M], w2 [L, M], b2 [L]; "
            f"got {tuple(w1.shape)}, {tuple(b1.shape)}, {tuple(w2.shape)}, {tuple(b2.shape)}"
        )
    if length < n:
        raise ValueError(f"token_mixing: N={n} exceeds max_len={length} (the MLP has one input per position); build with max_len>={n}")
    check_mask(mask, x[:, None], "token_mixing")
    if mask is not None:
        x = x * mask[..., None].to(x.dtype)
    if causal:
        if m % length:
            raise ValueError(f"token_mixing: causal needs E hidden units per position, M = E·L; got M={m}, L={length}")
        e = m // length
        unit = torch.arange(n * e, device=x.device) // e  # the position of each used hidden unit
        pos = torch.arange(n, device=x.device)
        w1 = w1[: n * e, :n] * (pos[None, :] <= unit[:, None])  # unit (j, r) reads inputs i <= j
        w2 = w2[:n, : n * e] * (unit[None, :] <= pos[:, None])  # output i reads units of j <= i
        b1 = b1[: n * e]
    else:
        w1, w2 = w1[:, :n], w2[:n]
    hidden = F.gelu(einsum(w1, x, "m i, b i c -> b m c") + b1[:, None])  # [B, M, C]
    return einsum(w2, hidden, "i m, b m c -> b i c") + b2[:n, None]


class Mixer(nn.Module):
    """The token-mixing layer x [B, N, C] -> [B, N, C].

    Owns ``w1`` [E·L, L], ``b1`` [E·L], ``w2`` [L, E·L], ``b2`` [L], initialised as nn.Linear
    (uniform ±1/sqrt(fan_in), fan_in = L for w1 and b1, E·L for w2 and b2). ``heads`` is accepted
    for a uniform build interface and ignored (one MLP is shared by every channel).
    """

    is_layer = True
    info = MechanismInfo(
        paper="Tolstikhin et al. 2021, arxiv.org/abs/2105.01601",
        complexity="O(E·N·L·C) time (E·N² causal), O(E·L·C + E·L²) memory (hidden units and weights), L = max_len",
        causal=True,
        mask=True,
        variable_length=False,
        qk=False,
    )

    def __init__(self, config: MixerConfig, *, dim: int, heads: int, causal: bool, max_len: int | None):
        super().__init__()
        check_int(dim, "dim", minimum=1, where="mixer")
        check_int(config.expansion, "expansion", minimum=1, where="mixer")
        if max_len is None:
            raise ValueError(
                "mixer needs max_len (its token-mixing MLP has one input and one output per position); "
                "build it with max_len=..., e.g. max_len=512"
            )
        check_int(max_len, "max_len", minimum=1, where="mixer")
        self.config, self.dim, self.causal, self.max_len = config, dim, bool(causal), max_len
        m = config.expansion * max_len
        bound1, bound2 = 1.0 / math.sqrt(max_len), 1.0 / math.sqrt(m)
        self.w1 = nn.Parameter(torch.empty(m, max_len).uniform_(-bound1, bound1))
        self.b1 = nn.Parameter(torch.empty(m).uniform_(-bound1, bound1))
        self.w2 = nn.Parameter(torch.empty(max_len, m).uniform_(-bound2, bound2))
        self.b2 = nn.Parameter(torch.empty(max_len).uniform_(-bound2, bound2))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        check_layer_input(x, mask, self.dim, self.max_len, "mixer", " (its token-mixing MLP has one input per position)")
        return token_mixing(x, self.w1, self.b1, self.w2, self.b2, mask=mask, causal=self.causal)

    def computed_pairs(self, n: int) -> Tensor:
        """Bool [1, N, N]: every pair (i, j), or j <= i when causal."""
        pairs = torch.ones(1, n, n, dtype=torch.bool)
        return pairs.tril() if self.causal else pairs
