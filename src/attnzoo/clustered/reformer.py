"""Reformer's LSH attention (Kitaev et al. 2020, "Reformer: The Efficient Transformer",
arxiv.org/abs/2001.04451).

Queries and keys share one projection (keys are the unit-normalized queries). Angular LSH by a
random rotation puts every token in a bucket; tokens are sorted by (bucket, position) and cut into
chunks of ``bucket_size``; each chunk attends to itself and to the chunk before it. ``n_hashes``
independent rounds are combined by log-sum-exp weights, each (query, key) pair counted only in
the first round that computed it, so the result is softmax attention over the union of the keys
any round let the query see (the paper lowers a duplicate's logit by log(its count): same result). A token attends to itself only when nothing else
is visible (its own key is the most similar, which would drown everything else).

Causal: a chunk boundary in (bucket, position) order moves when a later token lands in a lower
bucket, so chunk windows would let the future decide which past keys a query sees. The causal
variant therefore keeps, per round, the keys of the query's own bucket among the ``bucket_size``
latest of that bucket up to the query: a window that depends on the past only.

b batch, h heads, r hash rounds, n positions, t chunks, c chunk length (= bucket_size),
u buckets / 2, d head dim, e value dim.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import einsum, rearrange
from torch import Tensor, nn

from attnzoo.clustered.implied import pairs_on_random_input
from attnzoo.clustered.sorting import MASKED, gather_positions, pad_positions, sort_by, with_previous_chunk
from attnzoo.core.checks import check_dropout, check_int, check_mask, check_qkv, resolve_scale
from attnzoo.core.implied import implied_by_identity
from attnzoo.core.info import MechanismInfo

# Logit of a token's own key, as in the paper's code: low enough to lose against any visible key,
# finite so that a token that sees nothing else attends to itself.
SELF_LOGIT = -5e4


@dataclass
class ReformerConfig:
    bucket_size: int = 64  # chunk length; the number of buckets is ceil(N / bucket_size)
    n_hashes: int = 4  # hash rounds (more rounds: more keys seen, closer to full attention)
    seed: int | None = None  # seeds the random rotations (None: drawn from torch's global generator)
    scale: float | None = None
    dropout_p: float = 0.0


def n_buckets(n: int, bucket_size: int) -> int:
    """Buckets used for a sequence of length n: one per chunk, as in the paper."""
    return -(-n // bucket_size)


def lsh_buckets(qk: Tensor, rotations: Tensor, buckets: int) -> Tensor:
    """Angular LSH: argmax over [xR, -xR] (first ``buckets`` columns). qk [B, H, N, D],
    rotations [D, R, U] with 2U >= buckets. Returns bucket ids [B, H, R, N] in [0, buckets).

    Note:
        With one bucket per chunk, U grows with N: the rotated [N, U] products are formed a slice
        of positions at a time, so hashing memory stays O(N) (its time is O(N²·D / bucket_size)).
    """
    b, h, n, _ = qk.shape
    rounds = rotations.shape[1]
    if buckets == 1:
        return torch.zeros(b, h, rounds, n, dtype=torch.long, device=qk.device)
    half = -(-buckets // 2)
    rotations = rotations[..., :half].to(qk.dtype)
    out = torch.empty(b, h, rounds, n, dtype=torch.long, device=qk.device)
    step = max(1, (1 << 22) // (b * h * rounds * half))  # positions per slice: ~16 MiB of products
    with torch.no_grad():
        for lo in range(0, n, step):
            rotated = einsum(qk[:, :, lo : lo + step], rotations, "b h n d, d r u -> b h r n u")
            top, where = rotated.max(dim=-1)
            # the first `buckets` columns of [xR, -xR]: column U + u is -xR[u], for U + u < buckets
            low, where_low = rotated[..., : buckets - half].min(dim=-1)
            out[..., lo : lo + step] = torch.where(-low > top, half + where_low, where)
    return out


def reformer_attention(
    qk: Tensor,
    v: Tensor,
    rotations: Tensor,
    *,
    bucket_size: int = 64,
    mask: Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
) -> Tensor:
    """Shared-QK LSH attention. qk: [B, H, N, D] (queries; keys are qk / |qk|); v: [B, H, N, E];
    rotations: [D, R, U] random normal, R hash rounds, 2U >= ceil(N / bucket_size) buckets;
    mask: [B, N] bool. Returns [B, H, N, E].

    Equivalent to: for each query i, S_i = the keys j that share a chunk window (own chunk or the
    previous one, in (bucket, position) order) with i in at least one round, minus padding (causal:
    the j ≤ i of i's bucket that are among its ``bucket_size`` latest up to i, in any round); out_i = softmax_{j ∈ S_i \\ {i}}(scale · qk_i · qk_j/|qk_j|) @ v_j, or v_i
    when S_i = {i}.

    Note:
        Buckets count ceil(N / bucket_size), one per chunk. Padded positions (given and internal)
        are sorted after every real token, so they never shift a real token's chunk.
    """
    check_qkv(qk, qk, v, "reformer_attention")
    check_mask(mask, qk, "reformer_attention")
    check_dropout(dropout_p, "reformer_attention")
    check_int(bucket_size, "bucket_size", minimum=1, where="reformer_attention")
    scale = resolve_scale(scale, qk.shape[-1], "reformer_attention")
    dtype = qk.dtype
    if dtype in (torch.float16, torch.bfloat16):  # masking constants and the round weights need float32
        qk, v = qk.float(), v.float()
    b, h, n, _ = qk.shape
    buckets = n_buckets(n, bucket_size)
    _check_rotations(rotations, qk.shape[-1], buckets)
    # Heads are independent: run groups of them so that no working tensor [R, T, c, c'] per head
    # outgrows SLICE_ELEMENTS.
    group = max(1, SLICE_ELEMENTS // (rotations.shape[1] * buckets * bucket_size * (2 if buckets > 1 else 1) * bucket_size))
    if b * h > group:
        bs, hs = (group // h, h) if group >= h else (1, group)  # whole sequences, or heads of one
        out = torch.cat([
            torch.cat([
                _lsh(qk[i : i + bs, j : j + hs], v[i : i + bs, j : j + hs], rotations, None if mask is None else mask[i : i + bs],
                     bucket_size, buckets, causal, scale, dropout_p)
                for j in range(0, h, hs)
            ], dim=1)
            for i in range(0, b, bs)
        ])
    else:
        out = _lsh(qk, v, rotations, mask, bucket_size, buckets, causal, scale, dropout_p)
    return out.to(dtype)


# Working tensors (all rounds of a group of heads) stay under this many elements: glibc hands
# blocks over 32 MiB back to the OS when freed, so a larger temporary is page-faulted afresh on
# every use (measured here: exp of a 33 MB tensor, 16 ms into fresh memory, 4 ms into reused).
SLICE_ELEMENTS = 1 << 22


def _lsh(qk: Tensor, v: Tensor, rotations: Tensor, mask: Tensor | None, bucket_size: int, buckets: int, causal: bool,
         scale: float, dropout_p: float) -> Tensor:
    """reformer_attention's body for one group of heads (float32 or float64, arguments checked)."""
    b, h, n, _ = qk.shape
    rounds = rotations.shape[1]
    real = torch.ones(b, n, dtype=torch.bool, device=qk.device) if mask is None else mask
    qk, _ = pad_positions(qk, bucket_size)
    v, _ = pad_positions(v, bucket_size)
    real, _ = pad_positions(real, bucket_size, dim=1, value=False)
    np_, c = qk.shape[2], bucket_size
    chunks = np_ // c

    bucket = lsh_buckets(qk, rotations, buckets)  # [B, H, R, Np]
    bucket = bucket.masked_fill(~real[:, None, None, :], buckets)  # padding sorts last
    positions = torch.arange(np_, device=qk.device)
    order, inverse = sort_by(bucket * np_ + positions)  # [B, H, R, Np]

    flat = rearrange(order, "b h r n -> b h (r n)")
    sq = rearrange(gather_positions(qk, flat), "b h (r t c) d -> b h r t c d", r=rounds, c=c)
    sv = rearrange(gather_positions(v, flat), "b h (r t c) e -> b h r t c e", r=rounds, c=c)
    sk = with_previous_chunk(F.normalize(sq, dim=-1), chunk_axis=3)  # [B, H, R, T, c or 2c, D]
    sv = with_previous_chunk(sv, chunk_axis=3)
    qpos = order.view(b, h, rounds, chunks, c)
    kpos = with_previous_chunk(qpos, chunk_axis=3)

    with torch.no_grad():
        bias = _logit_bias(real, qpos, kpos, bucket, inverse, c, causal, sq.dtype)  # [B, H, R, T, c, c']
    dots = torch.baddbmm(bias.flatten(0, 3), sq.flatten(0, 3), sk.flatten(0, 3).transpose(1, 2), alpha=scale)
    dots = dots.view(bias.shape)
    top = dots.amax(dim=-1, keepdim=True).detach()  # a stabilizer only: the result does not depend on it
    e = (dots - top).exp()
    total = e.sum(dim=-1, keepdim=True)  # [B, H, R, T, c, 1]
    if dropout_p:
        e = F.dropout(e, dropout_p)
    u = einsum(e, sv, "b h r t i j, b h r t j e -> b h r t i e")  # this round's part, unnormalized

    # Back to sequence order; the rounds add up their unnormalized parts on a common scale.
    unsort = rearrange(inverse + torch.arange(rounds, device=qk.device)[:, None] * np_, "b h r n -> b h (r n)")

    def sequence_order(x: Tensor) -> Tensor:  # [B, H, R, T, c, F] -> [B, H, R, Np, F]
        x = gather_positions(rearrange(x, "b h r t c f -> b h (r t c) f"), unsort)
        return rearrange(x, "b h (r n) f -> b h r n f", r=rounds)

    u, top, total = sequence_order(u), sequence_order(top), sequence_order(total)
    weight = (top - top.amax(dim=2, keepdim=True)).exp()  # each round's scale, up to a common factor
    return ((weight * u).sum(dim=2) / (weight * total).sum(dim=2))[:, :, :n]


def _logit_bias(real: Tensor, qpos: Tensor, kpos: Tensor, bucket: Tensor, slot: Tensor, c: int, causal: bool, dtype) -> Tensor:
    """What is added to scale·q·k for every computed pair [B, H, R, T, c, c']: MASKED outside the
    round's window (padding; causal: another bucket, the future, or more than c places back) and
    where an earlier round already computed the pair (so a pair seen in several rounds counts
    once), SELF_LOGIT for a token's own key. bucket, slot [B, H, R, Np]: each position's bucket and
    place in the sorted order, per round."""
    rounds, chunks = bucket.shape[2], bucket.shape[3] // c

    def at(table: Tensor, pos: Tensor) -> Tensor:  # table [B, H, Np] read at positions [B, H, R', T, x]
        return table.gather(2, pos.flatten(2)).view(pos.shape)

    def in_window(r: int, q_at: Tensor, k_at: Tensor) -> Tensor:
        """Whether each pair (q_at, k_at) lies in round r's window."""
        lq, lk = at(slot[:, :, r], q_at).unsqueeze(-1), at(slot[:, :, r], k_at).unsqueeze(-2)
        if causal:
            gap = lq - lk
            same = at(bucket[:, :, r], q_at).unsqueeze(-1) == at(bucket[:, :, r], k_at).unsqueeze(-2)
            return same & (gap >= 0) & (gap < c)
        lq, lk = lq // c, lk // c
        return (lk == lq) | (lk == (lq - 1) % chunks) if chunks > 1 else lk == lq

    hidden = ~real.gather(1, kpos.flatten(1)).view(kpos.shape).unsqueeze(-2)
    if causal:  # this round's window, read off the sorted order directly
        qb = bucket.gather(3, qpos.flatten(3)).view(qpos.shape)
        kb = with_previous_chunk(qb, chunk_axis=3)
        places = torch.arange(bucket.shape[3], device=qpos.device).view(chunks, c)
        gap = places.unsqueeze(-1) - with_previous_chunk(places, chunk_axis=0).unsqueeze(-2)  # [T, c, c']
        hidden = hidden | ~((qb.unsqueeze(-1) == kb.unsqueeze(-2)) & (gap >= 0) & (gap < c))
    else:
        hidden = hidden.expand(qpos.shape + kpos.shape[-1:]).clone()
    for r in range(rounds - 1):  # a pair an earlier round computed is hidden in the later ones
        hidden[:, :, r + 1 :] |= in_window(r, qpos[:, :, r + 1 :], kpos[:, :, r + 1 :])
    own = torch.zeros(c, kpos.shape[-1], dtype=torch.bool, device=qpos.device)
    own[:, :c].fill_diagonal_(True)  # a query's own key sits at its own place in the own chunk
    return torch.where(hidden, MASKED, torch.where(own, SELF_LOGIT, 0.0)).to(dtype)


def _check_rotations(rotations: Tensor, d: int, buckets: int) -> None:
    need = -(-buckets // 2)
    if not isinstance(rotations, Tensor) or rotations.dim() != 3 or rotations.shape[0] != d or rotations.shape[2] < need:
        got = tuple(rotations.shape) if isinstance(rotations, Tensor) else type(rotations).__name__
        raise ValueError(
            f"reformer_attention: rotations must be [D={d}, n_hashes, >= {need}] for {buckets} buckets, got {got}; "
            "draw them with lsh_rotations(d, n_hashes, buckets)"
        )


def lsh_rotations(d: int, n_hashes: int, buckets: int, *, generator: torch.Generator | None = None) -> Tensor:
    """Random rotations [D, n_hashes, ceil(buckets / 2)] for ``lsh_buckets`` (standard normal)."""
    return torch.randn(d, n_hashes, max(1, -(-buckets // 2)), generator=generator)


class Reformer(nn.Module):
    """LSH attention core. Queries double as keys (shared-QK): ``shared_qk`` tells
    MultiHeadAttention to make one projection for both (k is q), and ``forward`` ignores k.

    The rotations are fixed by ``seed``: the same input hashes the same way in training and at
    inference, and a saved model reproduces its outputs. One set is drawn per bucket count.
    """

    shared_qk = True
    info = MechanismInfo(
        paper="Kitaev et al. 2020, arxiv.org/abs/2001.04451",
        complexity="O(R·N·c·D) time and memory for R hash rounds and chunk length c (plus O(R·N log N) sorting)",
        causal=True,
        mask=True,
    )

    def __init__(self, config: ReformerConfig, *, heads: int, head_dim: int, causal: bool, max_len: int | None):
        super().__init__()
        check_int(config.bucket_size, "bucket_size", minimum=1, where="reformer")
        check_int(config.n_hashes, "n_hashes", minimum=1, where="reformer")
        check_dropout(config.dropout_p, "reformer")
        if config.seed is not None:
            check_int(config.seed, "seed", minimum=0, where="reformer")
        self.config, self.causal, self.heads, self.head_dim = config, causal, heads, head_dim
        self.seed = config.seed if config.seed is not None else int(torch.randint(0, 2**62, (1,)))
        self._rotations: dict[int, Tensor] = {}

    def get_extra_state(self) -> dict:
        """Saved with the weights: the seed of the hash rotations, so a restored model hashes as the saved one did."""
        return {"seed": self.seed}

    def set_extra_state(self, state: dict) -> None:
        self.seed = int(state["seed"])
        self._rotations.clear()

    def rotations(self, n: int, device: torch.device) -> Tensor:
        buckets = n_buckets(n, self.config.bucket_size)
        if buckets not in self._rotations:
            generator = torch.Generator().manual_seed((self.seed * 1_000_003 + buckets) % 2**63)
            self._rotations[buckets] = lsh_rotations(self.head_dim, self.config.n_hashes, buckets, generator=generator)
        return self._rotations[buckets].to(device)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        return reformer_attention(
            q,
            v,
            self.rotations(q.shape[2], q.device),
            bucket_size=self.config.bucket_size,
            mask=mask,
            causal=self.causal,
            scale=self.config.scale,
            dropout_p=self.config.dropout_p if self.training else 0.0,
        )

    def implied_weights(self, q: Tensor, k: Tensor, mask: Tensor | None = None) -> Tensor:
        """[B, H, N, N]: the softmax weights over the union of keys the rounds computed (small N).
        The hashing depends on q only, so the output is linear in v and v = I gives the map."""
        return implied_by_identity(self, q, k, mask)

    def computed_pairs(self, n: int) -> Tensor:
        """Bool [H, N, N]: the pairs with weight, for a random input drawn with seed 0."""
        return pairs_on_random_input(self, n)
