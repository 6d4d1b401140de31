"""FNet: Mixing Tokens with Fourier Transforms (Lee-Thorp et al., 2021). arxiv.org/abs/2105.03824

Token mixing with no parameters: y = Re(FFT2(x)), the discrete Fourier transform along the hidden
axis and then along the sequence axis, real part kept. O(N log N · C) time, O(N·C) memory. Under
padding a sequence is exactly its real tokens: the transform along the sequence runs over its real
length, so the result depends neither on padded content nor on how much padding there is.
b batch, n positions, l real positions, c channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnzoo.core.checks import check_int, check_layer_input, check_mask
from attnzoo.core.info import MechanismInfo
from attnzoo.core.packing import pack_real, unpack_real

CAUSAL_MESSAGE = (
    "causal=True is not supported: the Fourier transform mixes every position with every other, the future "
    "included; for a causal mixer use gmlp or mixer with causal=True, or a causal attention such as full or linear"
)


@dataclass
class FNetConfig:
    """FNet has no options: the Fourier transform has no parameters."""


def _fft2_real(x: Tensor) -> Tensor:
    """Re(FFT2(x)) over the last two axes [..., N, C]; half precision computed in float32."""
    if x.dtype in (torch.float16, torch.bfloat16):
        # torch.fft has no bfloat16 kernels, and float16 ones only on CUDA for powers of two
        return torch.fft.fft2(x.float(), dim=(-2, -1)).real.to(x.dtype)
    return torch.fft.fft2(x, dim=(-2, -1)).real


def fnet_mix(x: Tensor, *, mask: Tensor | None = None) -> Tensor:
    """FNet's token mixing. x: [B, N, C]; mask: [B, N] bool (True = real). Returns [B, N, C].

    Equivalent to: torch.fft.fft2(x[b][mask[b]]).real for each sequence b on its real tokens
    alone, in order, written back to their positions; padded positions get 0.

    Note:
        Padded sequences are packed (``pack_real``) and transformed in groups of one real length,
        one FFT call per distinct length in the batch. No normalisation (the paper's): an output
        is a sum of L·C terms. Half-precision inputs are transformed in float32 and cast back.
    """
    if not isinstance(x, Tensor) or x.dim() != 3 or not x.is_floating_point():
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"fnet_mix: x must be a float tensor [B, N, C], got {got}")
    if x.shape[1] == 0:
        raise ValueError("fnet_mix: empty sequence (N=0); the transform needs at least one position")
    check_mask(mask, x[:, None], "fnet_mix")
    n = x.shape[1]
    if mask is None or bool(mask.all()):
        return _fft2_real(x)
    packed, lengths, order = pack_real(x, mask)  # [B, L, C]: each sequence's real tokens first
    # Sorted by real length, each group of one length is a slice: the groups' outputs are joined
    # once and put back in batch order once. (Writing each group into a fresh [B, L, C] copy made a
    # full-size allocation per distinct length, a few dozen per ListOps batch, and the heap grew.)
    lengths, by_length = lengths.sort()
    packed = packed[by_length]
    pieces, start = [], 0
    for length, count in zip(*(t.tolist() for t in lengths.unique_consecutive(return_counts=True))):
        group = packed[start : start + count, :length]  # [G, length, C]
        mixed = _fft2_real(group) if length else group  # a sequence of padding only: zeros
        pieces.append(torch.nn.functional.pad(mixed, (0, 0, 0, packed.shape[1] - length)))
        start += count
    out = torch.cat(pieces)[torch.argsort(by_length)]
    return unpack_real(out, order, n)


class FNet(nn.Module):
    """The FNet layer x [B, N, C] -> Re(FFT2(x)) [B, N, C]: no parameters.

    ``heads`` is accepted for a uniform build interface and ignored (the transform has no heads);
    ``max_len``, when given, bounds N as for every layer (the transform itself takes any N).
    """

    is_layer = True
    info = MechanismInfo(
        paper="Lee-Thorp et al. 2021, arxiv.org/abs/2105.03824",
        complexity="O(N log N · C) time, O(N·C) memory (one FFT2 per distinct real length in the batch)",
        causal=False,
        mask=True,
        variable_length=True,
        qk=False,
    )

    def __init__(self, config: FNetConfig, *, dim: int, heads: int, causal: bool, max_len: int | None):
        super().__init__()
        if causal:
            raise ValueError(f"fnet: {CAUSAL_MESSAGE}")
        check_int(dim, "dim", minimum=1, where="fnet")
        if max_len is not None:
            check_int(max_len, "max_len", minimum=1, where="fnet")
        self.config, self.dim, self.max_len = config, dim, max_len

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        check_layer_input(x, mask, self.dim, self.max_len, "fnet", " (or build with max_len=None: the transform takes any N)")
        return fnet_mix(x, mask=mask)

    def computed_pairs(self, n: int) -> Tensor:
        """Bool [1, N, N]: every pair; the transform mixes all positions."""
        return torch.ones(1, n, n, dtype=torch.bool)
