"""Multi-head attention layer: the q/k/v/out projections and head split/merge around any attention core.

b batch, n positions, c model width, h heads, d head dim (c = h · d).
"""

from __future__ import annotations

from einops import rearrange
from torch import Tensor, nn

from attnzoo.core.checks import check_int
from attnzoo.positional.rotary import rotary


class MultiHeadAttention(nn.Module):
    """x [B, N, C] -> core(q, k, v [B, H, N, D], mask [B, N]) -> [B, N, C].

    The core is any module with ``forward(q, k, v, mask=None) -> [B, H, N, D]``. A core whose class
    sets ``shared_qk = True`` (Reformer) gets one projection for queries and keys: k is q. A core
    with ``from_input(x, qkv, heads, mask)`` may compute the same result from x when its algebra
    makes that cheaper (Linformer projects along the sequence before the k/v projection); it
    returns None to take the usual path.
    """

    def __init__(
        self, dim: int, heads: int, core: nn.Module, *, max_len: int | None = None, bias: bool = True, position: nn.Module | None = None
    ):
        super().__init__()
        check_int(dim, "dim", minimum=1, where="MultiHeadAttention")
        check_int(heads, "heads", minimum=1, where="MultiHeadAttention")
        if dim % heads:
            raise ValueError(f"MultiHeadAttention: dim ({dim}) must be divisible by heads ({heads}); e.g. dim={heads * max(1, dim // heads)}")
        _check_position(position, core)
        self.dim, self.heads, self.core, self.max_len, self.position = dim, heads, core, max_len, position
        self.shared_qk = bool(getattr(core, "shared_qk", False))
        self.qkv = nn.Linear(dim, (2 if self.shared_qk else 3) * dim, bias=bias)
        self.out = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"MultiHeadAttention: x must be [B, N, C={self.dim}], got {tuple(x.shape)}")
        if self.max_len is not None and x.shape[1] > self.max_len:
            raise ValueError(
                f"sequence length N={x.shape[1]} exceeds max_len={self.max_len}; build the layer with max_len>={x.shape[1]}"
            )
        y = None
        if self.position is None and hasattr(self.core, "from_input"):
            y = self.core.from_input(x, self.qkv, self.heads, mask)
        if y is None:
            q, k, v = self._split(self.qkv(x), "b n (three h d) -> three b h n d")
            level = None if self.position is None else self.position.level
            if level == "rotary" and k is q:  # shared QK (Reformer): one rotation serves both
                q = k = rotary(q, base=self.position.base)
            elif level == "rotary":
                q, k = self.position(q, k)
            in_scores = level in ("score", "distance")
            y = self.core(q, k, v, mask=mask, position=self.position) if in_scores else self.core(q, k, v, mask=mask)
        return self.out(rearrange(y, "b h n d -> b n (h d)"))

    def step(self, x: Tensor, state=None):
        """Decode one token at constant memory: x [B, C], the state from the previous token (None at
        the first) -> (y [B, C], new state). Equals ``forward`` on the whole causal sequence, token
        by token; only cores with a recurrent form (the kernel family) have it."""
        if not hasattr(self.core, "step"):
            raise ValueError(
                f"{type(self.core).__name__.lower()} has no recurrent form; token-by-token decoding needs a kernel "
                "mechanism (linear, efficient, performer, rfa) built with causal=True"
            )
        if x.dim() != 2 or x.shape[-1] != self.dim:
            raise ValueError(f"MultiHeadAttention.step: x must be one token [B, C={self.dim}], got {tuple(x.shape)}")
        q, k, v = self._split(self.qkv(x), "b (three h d) -> three b h d")
        if self.position is None:
            y, state = self.core.step(q, k, v, state)
            return self.out(rearrange(y, "b h d -> b (h d)")), state
        # rotary (score encodings pair only with cores that have no step): the state also counts the tokens so far
        (core_state, t) = (None, 0) if state is None else state
        q, k = (rotary(u[:, :, None], base=self.position.base, offset=t)[:, :, 0] for u in (q, k))
        y, core_state = self.core.step(q, k, v, core_state)
        return self.out(rearrange(y, "b h d -> b (h d)")), (core_state, t + 1)

    def _split(self, qkv: Tensor, pattern: str) -> tuple[Tensor, Tensor, Tensor]:
        if self.shared_qk:
            qk, v = rearrange(qkv, pattern, three=2, h=self.heads)
            return qk, qk, v
        return tuple(rearrange(qkv, pattern, three=3, h=self.heads))


def _check_position(position: nn.Module | None, core: nn.Module) -> None:
    """In-layer encodings only, and only where the core can honour them (registry.honours says which)."""
    if position is None:
        return
    level, name, info = getattr(position, "level", None), type(position).__name__, getattr(core, "info", None)
    core_name = type(core).__name__.lower()
    if level == "input":
        raise ValueError(
            f"{name} is added to the input once, not inside every attention layer: apply it to the embeddings "
            "(e.g. Classifier(positions=...)); an attention layer takes rotary, relative or alibi"
        )
    if level not in ("rotary", "score", "distance"):
        raise ValueError(f"position must be a positional encoding module (rotary, relative, alibi), got {name}")
    if level == "rotary" and info is not None and not info.honours(level):
        raise ValueError(f"{core_name} never compares queries with keys, so rotary positions cannot act; use an input encoding "
                         "(sinusoidal, learned, floater, rnn)")
    if level == "distance" and (info is None or not info.honours(level)):
        raise ValueError(
            f"{name} adds −m·|i − j| to q·k scores, which {core_name} never forms; use full or a fixed sparse pattern "
            "(local, strided, global, random, sparse_transformer, longformer, bigbird, heads), rotary, or an input encoding"
        )
    if level == "score" and (info is None or not info.honours(level)):
        raise ValueError(
            f"{name} adds to explicit q·k scores, which {core_name} never forms; use rotary (it rotates q and k, so it works "
            "wherever q meets k) or an input encoding (sinusoidal, learned, floater, rnn), or the full mechanism"
        )
