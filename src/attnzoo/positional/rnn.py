"""Position from a recurrent layer: the RNN-Transformer of Neishi & Yoshinaga 2019, "On the Relation
between Position Information and Sentence Length in Neural Machine Translation" (CoNLL).
aclanthology.org/K19-1031

A GRU reads the embeddings in order and its output is added to them: y = x + GRU(x). The GRU's
state carries order (what came before, and how much), so no position table is needed and any N works.
The paper replaces the encoding layer by the RNN outright; the residual form here (our choice) keeps
the embeddings' content on an undistorted path. Unidirectional is causal (output i reads tokens
≤ i); ``bidirectional=True`` runs dim/2 units each way and is not causal, so ``causal`` is False and
a causal model must refuse it. Padding: the GRU reads only each sequence's real tokens, in order
(``pack_real`` moves them to the front, ``pack_padded_sequence`` stops at each length), so real outputs
do not depend on padded content or on how much padding there is; padded rows come back unchanged.
b batch, n positions, l real positions (longest real length), c width.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from attnzoo.core.checks import check_int
from attnzoo.core.packing import pack_real, unpack_real


class RNNPosition(nn.Module):
    """Input-level encoding: x [B, N, C], mask [B, N] (True = real) or None -> x + GRU(real tokens of x).

    Args:
        dim: C, the GRU's input width and its output width (hidden = C, or C/2 per direction).
        max_len: accepted for the common signature and ignored: any N.
        bidirectional: read both ways (not causal); dim must then be even.

    Equivalent to: for each sequence b, with r = x[b][mask[b]] ([L_b, C], real rows in order),
    y[b][mask[b]] = r + gru(r[None])[0][0] and y[b][~mask[b]] = x[b][~mask[b]].
    """

    level = "input"
    paper = (
        "Neishi & Yoshinaga 2019, On the Relation between Position Information and Sentence Length in Neural Machine "
        "Translation (RNN-Transformer), aclanthology.org/K19-1031"
    )

    def __init__(self, dim: int, max_len: int | None = None, *, bidirectional: bool = False):
        super().__init__()
        check_int(dim, "dim", minimum=1, where="rnn positions")
        if max_len is not None:
            check_int(max_len, "max_len", minimum=1, where="rnn positions")
        if not isinstance(bidirectional, bool):
            raise ValueError(f"rnn positions: bidirectional must be True or False, got {bidirectional!r}")
        if bidirectional and dim % 2:
            raise ValueError(
                f"rnn positions: bidirectional splits dim between two directions (dim/2 each), so dim must be even, "
                f"got dim={dim}; use an even dim or bidirectional=False"
            )
        self.dim, self.bidirectional = dim, bidirectional
        self.gru = nn.GRU(dim, dim // 2 if bidirectional else dim, batch_first=True, bidirectional=bidirectional)

    @property
    def causal(self) -> bool:
        """True when output i depends on tokens ≤ i only (unidirectional)."""
        return not self.bidirectional

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x [B, N, C], mask [B, N] bool or None -> [B, N, C]; padded rows are returned as they came."""
        self._check(x, mask)
        if mask is None:
            return x + self.gru(x)[0]
        n = x.shape[1]
        packed, lengths, order = pack_real(x, mask)  # [B, L, C], real rows first, in order
        if packed.shape[1] == 0:  # no real token anywhere: nothing to read
            return x
        # a sequence with no real token still needs length >= 1 for cuDNN/packing; its output is zeroed below
        seq = pack_padded_sequence(packed, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        out, _ = pad_packed_sequence(self.gru(seq)[0], batch_first=True, total_length=packed.shape[1])  # [B, L, C]
        keep = torch.arange(packed.shape[1], device=x.device) < lengths[:, None]  # [B, L]
        out = out * keep[..., None].to(out.dtype)
        return x + unpack_real(out, order, n)  # zeros on padded positions

    def _check(self, x: Tensor, mask: Tensor | None) -> None:
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != self.dim:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"rnn positions: x must be [B, N, C] with C={self.dim}, got {got}")
        if x.shape[1] == 0:
            raise ValueError("rnn positions: empty sequence (N=0); the GRU needs at least one position")
        if mask is None:
            return
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(f"rnn positions: mask must be a bool tensor [B, N] with True = real token, got {got}; use mask.bool()")
        if tuple(mask.shape) != tuple(x.shape[:2]):
            raise ValueError(f"rnn positions: mask must be [B, N] = {list(x.shape[:2])}, got {tuple(mask.shape)}")
        if mask.device != x.device:
            raise ValueError(f"rnn positions: mask is on {mask.device} but x is on {x.device}; move it with mask.to(x.device)")

    def extra_repr(self) -> str:
        return f"dim={self.dim}, bidirectional={self.bidirectional}"
