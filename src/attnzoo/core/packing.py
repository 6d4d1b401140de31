"""Real tokens to the front and back again, for mixers that must see a sequence as exactly its
real tokens (FNet's Fourier transform over the real length, an RNN that reads only real tokens).

b batch, n positions, l real positions (the longest sequence's), c channels.
"""

from __future__ import annotations

import torch
from torch import Tensor


def pack_real(x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """x [B, N, C], mask [B, N] bool (True = real) or None -> (packed [B, L, C], lengths [B],
    order [B, N]).

    Equivalent to: packed[b, :lengths[b]] = x[b][mask[b]] (the real rows, in order), the rest
    zeros; L = max(lengths). ``order`` is what ``unpack_real`` needs to put rows back.
    """
    b, n, _ = x.shape
    if mask is None:
        return x, torch.full((b,), n, dtype=torch.long, device=x.device), torch.arange(n, device=x.device).expand(b, n)
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # real positions first, in order
    lengths = mask.sum(1)
    longest = int(lengths.max()) if b else 0
    packed = x.gather(1, order[:, :longest, None].expand(b, longest, x.shape[-1]))
    keep = torch.arange(longest, device=x.device) < lengths[:, None]  # [B, L]
    return packed * keep[..., None].to(x.dtype), lengths, order


def unpack_real(packed: Tensor, order: Tensor, n: int) -> Tensor:
    """The inverse of ``pack_real``: packed [B, L, C] -> [B, N, C], a sequence's row i back at the
    position of its i-th real token; its rows past its length land on its padded positions (zeros
    where they are zeros), padded positions past L are zeros."""
    b, longest, c = packed.shape
    out = packed.new_zeros(b, n, c)
    return out.scatter(1, order[:, :longest, None].expand(b, longest, c), packed)
