"""Sparse Sinkhorn attention (Tay et al. 2020, arxiv.org/abs/2002.11296).

The sequence is cut into blocks. A meta sorting network scores every (query block, key block)
pair from pooled block summaries; Sinkhorn normalization (with Gumbel noise in training and a
temperature) turns the scores into a soft permutation R. Query block i attends to its own block
and to the "sorted" block Σ_j R_ij K_j (values likewise): local attention plus one block chosen
by content. SortCut: every query attends to the first ``sortcut`` sorted blocks only.

Causal: query block i may only draw on blocks j < i, whose keys are all in its past, and its
sorting row is scored from block i−1's summary. Sinkhorn's column normalization would mix later
rows into earlier ones (the future deciding what the past sees), so the causal variant normalizes
rows only: a temperature softmax over the past blocks.

b batch, h heads, n positions, t (query) blocks, s (key) blocks, c block length, d head dim,
e value dim.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import einsum, rearrange
from torch import Tensor, nn

from attnzoo.clustered.sorting import MASKED, pad_positions
from attnzoo.core.checks import check_dropout, check_int, check_mask, check_qkv, resolve_scale
from attnzoo.core.implied import implied_by_identity
from attnzoo.core.info import MechanismInfo


@dataclass
class SinkhornConfig:
    block: int = 64  # tokens per block (any N works: the last block is padded internally)
    iters: int = 8  # Sinkhorn iterations (row + column normalization each)
    temperature: float = 0.75  # divides the sorting logits; lower: closer to a hard permutation
    sortcut: int = 0  # > 0: SortCut, every query attends to the first `sortcut` sorted blocks only
    scale: float | None = None
    dropout_p: float = 0.0


def sinkhorn_permutation(
    logits: Tensor, *, iters: int, temperature: float, allowed: Tensor | None = None, causal: bool = False,
    noise: Tensor | None = None,
) -> Tensor:
    """logits, allowed: [B, H, T, S] -> soft permutation [B, H, T, S], zero where not allowed
    (``allowed=None``: every entry is).

    Equivalent to: P = exp((logits + noise) / temperature) on the allowed entries, then ``iters`` times
    divide rows by their sums and columns by their sums (causal: rows only, once).
    """
    log_p = (logits if noise is None else logits + noise) / temperature
    log_p = log_p.float() if log_p.dtype in (torch.float16, torch.bfloat16) else log_p

    def hide(x: Tensor) -> Tensor:
        return x if allowed is None else x.masked_fill(~allowed, MASKED)

    log_p = hide(log_p)
    for _ in range(1 if causal else iters):
        log_p = hide(log_p - log_p.logsumexp(dim=-1, keepdim=True))
        if not causal:
            log_p = hide(log_p - log_p.logsumexp(dim=-2, keepdim=True))
    return log_p.exp() if allowed is None else log_p.exp() * allowed


def block_sort_logits(
    q: Tensor, k: Tensor, w1: Tensor, w2: Tensor, *, block: int, mask: Tensor | None = None, causal: bool = False
) -> Tensor:
    """The meta sorting network: q, k [B, H, N, D], w1 [H, D, F], w2 [H, F, D] -> logits [B, H, T, T].

    Equivalent to: logits_ij = relu(p_i w1) w2 · k̄_j / sqrt(D), with k̄_j the mean of block j's real
    keys and p_i the mean of block i's real queries (causal: k̄_{i-1}, zeros for the first block).
    """
    real = _real(mask, q)
    q_mean, k_mean = (_block_means(x, real, block) for x in (q, k))  # [B, H, T, D]
    rows = F.pad(k_mean[:, :, :-1], (0, 0, 1, 0)) if causal else q_mean
    hidden = torch.relu(einsum(rows, w1, "b h t d, h d f -> b h t f"))
    return einsum(einsum(hidden, w2, "b h t f, h f d -> b h t d"), k_mean, "b h t d, b h s d -> b h t s") * q.shape[-1] ** -0.5


def sinkhorn_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    sort_logits: Tensor,
    *,
    block: int = 64,
    iters: int = 8,
    temperature: float = 0.75,
    sortcut: int = 0,
    noise: Tensor | None = None,
    mask: Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
) -> Tensor:
    """q, k: [B, H, N, D]; v: [B, H, N, E]; sort_logits: [B, H, T, T] with T = ceil(N / block) (e.g.
    from ``block_sort_logits``); noise: Gumbel noise of the same shape in training; mask: [B, N].
    Returns [B, H, N, E].

    Equivalent to: R = sinkhorn_permutation(sort_logits); block i's queries attend, in one softmax,
    to their own block's keys (causal: j ≤ i) and to the keys Σ_s R_is K_s with values Σ_s R_is V_s
    (padding zeroed first; a sorted slot made only of padding is hidden). SortCut: every query
    attends to the sorted blocks 0..sortcut-1 only.
    """
    check_qkv(q, k, v, "sinkhorn_attention")
    check_mask(mask, q, "sinkhorn_attention")
    check_dropout(dropout_p, "sinkhorn_attention")
    check_int(block, "block", minimum=1, where="sinkhorn_attention")
    check_int(iters, "iters", minimum=1, where="sinkhorn_attention")
    check_int(sortcut, "sortcut", minimum=0, where="sinkhorn_attention")
    if not temperature > 0:
        raise ValueError(f"sinkhorn_attention: temperature must be > 0, got {temperature}")
    if sortcut and causal:
        raise ValueError("sinkhorn_attention: SortCut shares the first sorted blocks with every query, which leaks the future; use sortcut=0 with causal=True")
    scale = resolve_scale(scale, q.shape[-1], "sinkhorn_attention")
    b, h, n, _ = q.shape
    blocks = -(-n // block)
    if tuple(sort_logits.shape) != (b, h, blocks, blocks):
        raise ValueError(f"sinkhorn_attention: sort_logits must be [B, H, T, T] = {[b, h, blocks, blocks]} for N={n}, block={block}; got {tuple(sort_logits.shape)}")
    dtype = q.dtype
    if dtype in (torch.float16, torch.bfloat16):
        q, k, v = q.float(), k.float(), v.float()

    real = _real(mask, q)
    real_b = pad_positions(real, block, dim=1, value=False)[0].view(b, 1, blocks, block)  # [B, 1, T, c]
    padded = mask is not None or n % block != 0
    q, k, v = (pad_positions(x, block)[0] for x in (q, k, v))
    if padded:  # padding content never reaches a sorted mixture
        keep = real_b.flatten(2).unsqueeze(-1).to(k.dtype)
        k, v = k * keep, v * keep
    qb, kb, vb = (rearrange(x, "b h (t c) d -> b h t c d", c=block) for x in (q, k, v))

    allowed = None  # [B, H, T, S]: key block s has a real token (and, causal, s < t); None: all
    if padded:
        allowed = real_b.any(-1).unsqueeze(-2).expand(b, h, blocks, blocks)
    if causal:
        past = torch.ones(blocks, blocks, dtype=torch.bool, device=q.device).tril(-1)
        allowed = past.expand(b, h, blocks, blocks) if allowed is None else allowed & past
    perm = sinkhorn_permutation(sort_logits, iters=iters, temperature=temperature, allowed=allowed, causal=causal, noise=noise).to(q.dtype)
    rows = perm[:, :, :sortcut] if sortcut else perm
    sk = einsum(rows, kb, "b h t s, b h s c d -> b h t c d")
    sv = einsum(rows, vb, "b h t s, b h s c e -> b h t c e")
    s_real = None  # [B, H, T, c]: which sorted slots hold a real key (None: all of them)
    if padded:
        s_real = einsum(rows, real_b.expand(b, h, blocks, block).to(q.dtype), "b h t s, b h s c -> b h t c") > 0
    elif causal:  # the first block has no past block to draw on
        s_real = (rows.sum(-1) > 0).unsqueeze(-1).expand(b, h, blocks, block)

    if sortcut:
        keys, values = (rearrange(x, "b h t c d -> b h (t c) d") for x in (sk, sv))
        dots = einsum(q * scale, keys, "b h n d, b h j d -> b h n j")
        if s_real is not None:
            seen = s_real.flatten(2).unsqueeze(-2)
            dots = dots.masked_fill(~seen, MASKED)
        weights = _softmax(dots, dropout_p)
        if s_real is not None:  # a query with no real sorted key gets zeros
            weights = weights * seen.any(-1, keepdim=True)
        out = einsum(weights, values, "b h n j, b h j e -> b h n e")
    else:
        keys, values = torch.cat((kb, sk), dim=3), torch.cat((vb, sv), dim=3)  # [B, H, T, 2c, D]
        dots = einsum(qb * scale, keys, "b h t i d, b h t j d -> b h t i j")
        if padded or causal:  # a real query always sees itself, so no row is left empty
            own = real_b.unsqueeze(-2)  # [B, 1, T, 1, c]
            if causal:
                own = own & torch.ones(block, block, dtype=torch.bool, device=q.device).tril()
            dots[..., :block].masked_fill_(~own, MASKED)
            dots[..., block:].masked_fill_(~s_real.unsqueeze(-2), MASKED)
        weights = _softmax(dots, dropout_p)
        out = rearrange(einsum(weights, values, "b h t i j, b h t j e -> b h t i e"), "b h t c e -> b h (t c) e")
    return out[:, :, :n].to(dtype)


def _softmax(dots: Tensor, dropout_p: float) -> Tensor:
    weights = torch.softmax(dots, dim=-1)
    return F.dropout(weights, dropout_p) if dropout_p else weights


def _real(mask: Tensor | None, q: Tensor) -> Tensor:
    return torch.ones(q.shape[0], q.shape[2], dtype=torch.bool, device=q.device) if mask is None else mask


def _block_means(x: Tensor, real: Tensor, block: int) -> Tensor:
    """Mean of each block's real rows: x [B, H, N, D] -> [B, H, T, D] (zeros for a block of padding)."""
    weight = pad_positions(real, block, dim=1, value=False)[0].to(x.dtype)  # [B, Np]
    x = pad_positions(x, block)[0] * weight[:, None, :, None]
    sums = rearrange(x, "b h (t c) d -> b h t c d", c=block).sum(3)
    counts = rearrange(weight, "b (t c) -> b 1 t c 1", c=block).sum(3)
    return sums / counts.clamp(min=1)


def gumbel_noise(shape: torch.Size, *, device=None, dtype=None) -> Tensor:
    """Standard Gumbel samples -log(-log U) (U uniform in (0, 1)), from torch's global generator."""
    u = torch.rand(shape, device=device, dtype=dtype).clamp_(1e-9, 1 - 1e-9)
    return -(-u.log()).log()


class Sinkhorn(nn.Module):
    """Sinkhorn attention core: owns the sorting network (w1 [H, D, D], w2 [H, D, D]); Gumbel noise
    is added to the sorting logits in training only."""

    info = MechanismInfo(
        paper="Tay et al. 2020, arxiv.org/abs/2002.11296",
        complexity="O(N·c·D + (N/c)²·c·D) time, O(N·c + (N/c)²) memory for blocks of c (SortCut: O(N·k·c))",
        causal=True,
        mask=True,
    )

    def __init__(self, config: SinkhornConfig, *, heads: int, head_dim: int, causal: bool, max_len: int | None):
        super().__init__()
        check_int(config.block, "block", minimum=1, where="sinkhorn")
        check_int(config.iters, "iters", minimum=1, where="sinkhorn")
        check_int(config.sortcut, "sortcut", minimum=0, where="sinkhorn")
        check_dropout(config.dropout_p, "sinkhorn")
        if not float(config.temperature) > 0:
            raise ValueError(f"sinkhorn: temperature must be > 0, got {config.temperature}; the paper uses 0.75")
        if config.sortcut and causal:
            raise ValueError("sinkhorn: SortCut (sortcut > 0) shares sorted blocks with every query and cannot be causal; use sortcut=0")
        self.config, self.causal, self.heads, self.head_dim = config, causal, heads, head_dim
        self.w1 = nn.Parameter(torch.randn(heads, head_dim, head_dim) * head_dim**-0.5)
        self.w2 = nn.Parameter(torch.randn(heads, head_dim, head_dim) * head_dim**-0.5)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        c = self.config
        logits = block_sort_logits(q, k, self.w1.to(q.dtype), self.w2.to(q.dtype), block=c.block, mask=mask, causal=self.causal)
        noise = gumbel_noise(logits.shape, device=logits.device, dtype=logits.dtype) if self.training else None
        return sinkhorn_attention(
            q, k, v, logits, block=c.block, iters=c.iters, temperature=c.temperature, sortcut=c.sortcut, noise=noise,
            mask=mask, causal=self.causal, scale=c.scale, dropout_p=c.dropout_p if self.training else 0.0,
        )

    def implied_weights(self, q: Tensor, k: Tensor, mask: Tensor | None = None) -> Tensor:
        """[B, H, N, N]: the weights each query puts on each real key (small N, eval-mode noise-free).
        The soft permutation depends on q and k only, so the output is linear in v."""
        return implied_by_identity(self, q, k, mask)

    def computed_pairs(self, n: int) -> Tensor:
        """Bool [H, N, N] for a random input drawn with seed 0: each query block's own block and the
        key block its sorted block draws most from (every key has some weight in the soft mixture;
        the picture shows the permutation it approaches). SortCut: the blocks sorted first."""
        c = self.config
        generator = torch.Generator().manual_seed(0)
        q, k = torch.randn(2, 1, self.heads, n, self.head_dim, generator=generator)
        with torch.no_grad():
            logits = block_sort_logits(q, k, self.w1.float(), self.w2.float(), block=c.block, causal=self.causal)
            blocks = logits.shape[-1]
            allowed = torch.ones(blocks, blocks, dtype=torch.bool)
            if self.causal:
                allowed = allowed.tril(-1)
            perm = sinkhorn_permutation(logits, iters=c.iters, temperature=c.temperature, allowed=allowed, causal=self.causal)[0]
        block_of = torch.arange(n) // c.block
        source = perm.argmax(-1).masked_fill(~allowed.any(-1), -1)  # [H, T]: -1 where a row draws on nothing
        if c.sortcut:
            chosen = source[:, : c.sortcut]  # [H, k]
            return (block_of[None, None, :, None] == chosen[:, None, None, :]).any(-1).expand(self.heads, n, n)
        pairs = (block_of[:, None] == block_of[None, :]).expand(self.heads, n, n).clone()
        if self.causal:
            pairs &= torch.ones(n, n, dtype=torch.bool).tril()
        return pairs | (block_of[None, None, :] == source[:, block_of, None])
