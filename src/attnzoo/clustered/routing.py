"""Routing attention (Roy et al. 2021, "Efficient Content-Based Sparse Attention with Routing
Transformers", arxiv.org/abs/2003.05997).

Online k-means over unit-normalized queries and keys: each centroid takes its ``w = ceil(N / K)``
most similar queries and its w most similar keys (balanced clusters), and attention runs inside
every cluster. A query chosen by several centroids averages their outputs; a query no centroid
chose outputs zeros. Centroids live in buffers, move by an exponential moving average in training,
and report a commitment loss for the caller to add.

Causal: picking each centroid's top-w members looks at the whole sequence, so it would let the
future decide what the past sees. The causal variant routes every token once, to the centroid
nearest its key, and lets a query see the ``w`` most recent tokens of its own cluster up to
itself (a sliding window in (cluster, position) order), which depends on the past only.

b batch, h heads, n positions, k clusters, w cluster size, t chunks, c chunk length, d head dim,
e value dim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import einsum, rearrange
from torch import Tensor, nn

from attnzoo.clustered.implied import pairs_on_random_input
from attnzoo.clustered.sorting import MASKED, add_at_positions, gather_positions, pad_positions, sort_by, with_previous_chunk
from attnzoo.core.checks import check_dropout, check_int, check_mask, check_qkv, resolve_scale
from attnzoo.core.implied import implied_by_identity
from attnzoo.core.info import MechanismInfo


@dataclass
class RoutingConfig:
    clusters: int = 8  # k-means centroids per head, each holding ceil(N / clusters) tokens; the paper: √N (paper_clusters)
    decay: float = 0.999  # EMA decay of the centroids in training
    kmeans_init_iters: int = 10  # Lloyd iterations that initialize the centroids on the first training batch
    seed: int | None = None  # seeds the centroids' initial draw (None: torch's global generator)
    scale: float | None = None
    dropout_p: float = 0.0


def paper_clusters(n: int) -> int:
    """The paper's cluster count at length n: √N clusters of √N tokens, as a power of two, which makes
    routing O(N^1.5). A count fixed while N grows leaves it O(N²/K)."""
    return 2 ** round(math.log2(math.sqrt(n)))


def cluster_size(n: int, clusters: int) -> int:
    return -(-n // clusters)


def routing_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    centroids: Tensor,
    *,
    mask: Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
) -> Tensor:
    """q, k: [B, H, N, D]; v: [B, H, N, E]; centroids: [H, K, D] (unit rows); mask: [B, N] bool.
    Returns [B, H, N, E].

    Equivalent to (not causal): with w = ceil(N / K), Q_c = the w real queries with the largest
    q̂·μ_c and K_c likewise for keys; out_i = mean over {c : i ∈ Q_c} of softmax_{j ∈ K_c}(scale·q_i·k_j) v_j,
    and 0 if i is in no Q_c.
    Causal: c(t) = argmax_c k̂_t·μ_c; query i sees the w latest real j ≤ i with c(j) = c(i).
    """
    check_qkv(q, k, v, "routing_attention")
    check_mask(mask, q, "routing_attention")
    check_dropout(dropout_p, "routing_attention")
    scale = resolve_scale(scale, q.shape[-1], "routing_attention")
    _check_centroids(centroids, q)
    dtype = q.dtype
    if dtype in (torch.float16, torch.bfloat16):
        q, k, v = q.float(), k.float(), v.float()
    with torch.no_grad():
        sim_q, sim_k = similarities(q, k, centroids.to(q.dtype))
    return _routed(q, k, v, sim_q, sim_k, mask, causal, scale, dropout_p).to(dtype)


def similarities(q: Tensor, k: Tensor, centroids: Tensor) -> tuple[Tensor, Tensor]:
    """Cosine of every query and key with every centroid: [B, H, K, N] each."""
    return tuple(einsum(F.normalize(x, dim=-1), centroids, "b h n d, h k d -> b h k n") for x in (q, k))


def _routed(q, k, v, sim_q, sim_k, mask, causal, scale, dropout_p, near_k=None):
    """near_k [B, H, N]: each key's nearest centroid, if the caller has it (sim_k.argmax(dim=2))."""
    if causal:
        return _routed_causal(q, k, v, sim_k.argmax(dim=2) if near_k is None else near_k, mask, scale, dropout_p, sim_k.shape[2])
    return _routed_balanced(q, k, v, sim_q, sim_k, mask, scale, dropout_p)


def _routed_balanced(q, k, v, sim_q, sim_k, mask, scale, dropout_p):
    b, h, n, _ = q.shape
    clusters = sim_q.shape[2]
    w = cluster_size(n, clusters)
    hide = None if mask is None else ~mask[:, None, None, :]  # [B, 1, 1, N]

    def members(sim: Tensor) -> Tensor:  # [B, H, K, w]: each centroid's w nearest real tokens
        if hide is not None:
            sim = sim.masked_fill(hide, float("-inf"))
        return sim.topk(w, dim=-1, sorted=False).indices

    q_idx, k_idx = members(sim_q), members(sim_k)
    cq = gather_positions(q, q_idx.flatten(2)).view(b, h, clusters, w, -1) * scale
    ck = gather_positions(k, k_idx.flatten(2)).view(b, h, clusters, w, -1)
    cv = gather_positions(v, k_idx.flatten(2)).view(b, h, clusters, w, -1)
    dots = einsum(cq, ck, "b h k i d, b h k j d -> b h k i j")
    if mask is not None:
        key_real = mask.gather(1, k_idx.flatten(1)).view(b, h, clusters, 1, w)
        dots = dots.masked_fill(~key_real, MASKED)
    weights = torch.softmax(dots, dim=-1)
    if dropout_p:
        weights = F.dropout(weights, dropout_p)
    out = einsum(weights, cv, "b h k i j, b h k j e -> b h k i e")

    flat = q_idx.flatten(2)  # [B, H, K·w]
    total = add_at_positions(out.flatten(2, 3), flat, n)
    times = torch.zeros(b, h, n, dtype=out.dtype, device=out.device).scatter_add_(2, flat, torch.ones_like(flat, dtype=out.dtype))
    return total / times.clamp(min=1).unsqueeze(-1)


def _routed_causal(q, k, v, near_k, mask, scale, dropout_p, clusters):
    b, h, n, _ = q.shape
    w = cluster_size(n, clusters)
    real = torch.ones(b, n, dtype=torch.bool, device=q.device) if mask is None else mask
    q, _ = pad_positions(q, w)
    k, _ = pad_positions(k, w)
    v, _ = pad_positions(v, w)
    real, _ = pad_positions(real, w, dim=1, value=False)
    np_ = q.shape[2]

    cluster = pad_positions(near_k, w, dim=2)[0]  # [B, H, Np]
    cluster = cluster.masked_fill(~real[:, None, :], clusters)  # padding sorts last
    order, inverse = sort_by(cluster * np_ + torch.arange(np_, device=q.device))  # [B, H, Np]
    sq = rearrange(gather_positions(q, order), "b h (t c) d -> b h t c d", c=w) * scale
    # Each chunk's keys (its own, then the previous chunk's) gathered in one pass, not sorted and then copied twice.
    window = with_previous_chunk(order.view(b, h, -1, w), chunk_axis=2)  # [B, H, T, c']
    sk = gather_positions(k, window.flatten(2)).view(*window.shape, -1)
    sv = gather_positions(v, window.flatten(2)).view(*window.shape, -1)
    qcluster = cluster.gather(2, order).view(b, h, -1, w)
    kcluster = with_previous_chunk(qcluster, chunk_axis=2)

    # Same cluster, not later in the sorted order, fewer than w places back, real.
    key_real = with_previous_chunk(real[:, None].expand(b, h, np_).gather(2, order).view(b, h, -1, w), chunk_axis=2)
    visible = _recent(np_ // w, w, q.device) & (kcluster.unsqueeze(-2) == qcluster.unsqueeze(-1)) & key_real.unsqueeze(-2)
    dots = einsum(sq, sk, "b h t i d, b h t j d -> b h t i j").masked_fill(~visible, MASKED)
    weights = torch.softmax(dots, dim=-1)  # a real query always sees itself; padded ones are zeroed below
    if dropout_p:
        weights = F.dropout(weights, dropout_p)
    out = rearrange(einsum(weights, sv, "b h t i j, b h t j e -> b h t i e"), "b h t c e -> b h (t c) e")
    out = gather_positions(out, inverse)[:, :, :n]
    return out if mask is None else out * mask[:, None, :, None]


def _recent(chunks: int, w: int, device) -> Tensor:
    """[T, c, c'] bool: key place j of a chunk's window (its own chunk, then the one before, as
    ``with_previous_chunk`` lays them out) is not after query i and fewer than w places before it.

    It depends on (i, j) alone, so it is built once, not from [T, c, c'] position differences: own
    chunk j <= i; previous chunk j > i (i - j + w < w); the first chunk has none (its window wraps
    to the last chunk, which is later)."""
    i = torch.arange(w, device=device)
    own = i[:, None] >= i[None, :]
    if chunks == 1:  # with_previous_chunk leaves a single chunk alone
        return own[None]
    recent = torch.cat((own, ~own), dim=1).expand(chunks, w, 2 * w).clone()
    recent[0, :, w:] = False
    return recent


def _check_centroids(centroids: Tensor, q: Tensor) -> None:
    h, d = q.shape[1], q.shape[-1]
    if not isinstance(centroids, Tensor) or centroids.dim() != 3 or centroids.shape[0] != h or centroids.shape[2] != d:
        got = tuple(centroids.shape) if isinstance(centroids, Tensor) else type(centroids).__name__
        raise ValueError(f"routing_attention: centroids must be [H={h}, K, D={d}], got {got}")


def assign(x: Tensor, centroids: Tensor) -> Tensor:
    """Nearest centroid of each unit row: x [H, M, D], centroids [H, K, D] -> [H, M]."""
    return einsum(x, centroids, "h m d, h k d -> h m k").argmax(-1)


def commitment_loss(q: Tensor, k: Tensor, centroids: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean over real tokens of |x̂ - μ(x̂)|² for x in q and k, μ(x̂) the nearest centroid (held fixed):
    the term that pulls the routed vectors toward their centroids. Returns a scalar."""
    sim_q, sim_k = similarities(q, k, centroids.detach().to(q.dtype))
    return _commitment(sim_q.amax(dim=2), sim_k.amax(dim=2), mask)


def _commitment(best_q: Tensor, best_k: Tensor, mask: Tensor | None) -> Tensor:
    """The commitment loss from each token's cosine with its nearest centroid [B, H, N]: for unit
    vectors |x̂ - μ|² = 2 - 2 x̂·μ."""
    best = torch.cat((best_q, best_k), dim=-1)  # [B, H, 2N]
    if mask is not None:
        best = best[torch.cat((mask, mask), dim=1)[:, None].expand_as(best)]
    return (2 - 2 * best).mean() if best.numel() else best.sum()


def _routed_vectors(q: Tensor, k: Tensor, mask: Tensor | None) -> Tensor:
    """Unit q and k of the real tokens, per head: [H, M, D]."""
    x = torch.cat((q, k), dim=2)  # [B, H, 2N, D]
    if mask is not None:
        x = x.transpose(0, 1)[:, torch.cat((mask, mask), dim=1)]  # [H, M, D]
    else:
        x = rearrange(x, "b h n d -> h (b n) d")
    return F.normalize(x, dim=-1)


class Routing(nn.Module):
    """Routing attention core. ``centroids`` [H, K, D] are a buffer (saved with the model); before the
    first training batch they are random unit vectors (drawn from ``seed``), so inference never
    meets "uninitialized" centroids; the first training batch re-initializes them by k-means on its
    own q and k, and every training batch then moves them by EMA. After each forward,
    ``aux_loss`` holds the commitment loss: add ``loss + beta * layer.core.aux_loss`` (or
    ``attnzoo.model.encoder.auxiliary_loss(model)``) to train the projections toward their centroids."""

    info = MechanismInfo(
        paper="Roy et al. 2021, arxiv.org/abs/2003.05997",
        complexity="O(N²·D / K) time, O(N²/K) memory for K clusters (O(N·√N) at K = √N)",
        causal=True,
        mask=True,
    )

    def __init__(self, config: RoutingConfig, *, heads: int, head_dim: int, causal: bool, max_len: int | None):
        super().__init__()
        check_int(config.clusters, "clusters", minimum=1, where="routing")
        check_int(config.kmeans_init_iters, "kmeans_init_iters", minimum=0, where="routing")
        check_dropout(config.dropout_p, "routing")
        if not (0.0 <= float(config.decay) < 1.0):
            raise ValueError(f"routing: decay must be in [0, 1), got {config.decay}; 0.999 is the usual value")
        if config.seed is not None:
            check_int(config.seed, "seed", minimum=0, where="routing")
        self.config, self.causal, self.heads, self.head_dim = config, causal, heads, head_dim
        seed = config.seed if config.seed is not None else int(torch.randint(0, 2**62, (1,)))
        self.generator = torch.Generator().manual_seed(seed)
        start = F.normalize(torch.randn(heads, config.clusters, head_dim, generator=self.generator), dim=-1)
        self.register_buffer("centroids", start)
        self.register_buffer("initialized", torch.tensor(False))
        self.aux_loss: Tensor | None = None

    def get_extra_state(self) -> dict:
        """Saved with the weights: the generator the k-means start draws from."""
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        if self.training and not bool(self.initialized):
            self._kmeans_init(q, k, mask)
        check_qkv(q, k, v, "routing")
        check_mask(mask, q, "routing")
        dtype = q.dtype
        if dtype in (torch.float16, torch.bfloat16):
            q, k, v = q.float(), k.float(), v.float()
        # One set of cosines routes the tokens, gives the commitment loss and moves the centroids.
        sim_q, sim_k = similarities(q, k, self.centroids.to(q.dtype))
        (best_q, near_q), (best_k, near_k) = sim_q.max(dim=2), sim_k.max(dim=2)  # [B, H, N]
        out = _routed(
            q, k, v, sim_q.detach(), sim_k.detach(), mask, self.causal,
            resolve_scale(self.config.scale, q.shape[-1], "routing"), self.config.dropout_p if self.training else 0.0, near_k,
        )
        self.aux_loss = _commitment(best_q, best_k, mask)
        if self.training:
            self._ema_update(q, k, near_q, near_k, mask)
        return out.to(dtype)

    @torch.no_grad()
    def _kmeans_init(self, q: Tensor, k: Tensor, mask: Tensor | None) -> None:
        x = _routed_vectors(q.detach(), k.detach(), mask).to(self.centroids.dtype)  # [H, M, D]
        if x.shape[1] == 0:
            return
        pick = torch.randint(0, x.shape[1], (self.config.clusters,), generator=self.generator).to(x.device)
        centroids = x[:, pick]
        for _ in range(self.config.kmeans_init_iters):
            centroids = _cluster_means(x, assign(x, centroids), centroids)
        self.centroids.copy_(centroids)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _ema_update(self, q: Tensor, k: Tensor, near_q: Tensor, near_k: Tensor, mask: Tensor | None) -> None:
        """Move each centroid toward the unit mean of the real q̂ and k̂ nearest to it (EMA)."""
        h, clusters, d = self.centroids.shape
        sums = torch.zeros(h, clusters, d, dtype=q.dtype, device=q.device)
        counts = torch.zeros(h, clusters, dtype=q.dtype, device=q.device)
        for x, near in ((q, near_q), (k, near_k)):
            weight = torch.ones(x.shape[0], x.shape[2], dtype=x.dtype, device=x.device) if mask is None else mask.to(x.dtype)
            unit = rearrange(F.normalize(x.detach(), dim=-1) * weight[:, None, :, None], "b h n d -> h (b n) d")
            nearest = rearrange(near, "b h n -> h (b n)")
            rows = (nearest + torch.arange(h, device=q.device)[:, None] * clusters).flatten()  # (head, centroid) rows of sums
            sums.view(h * clusters, d).index_add_(0, rows, unit.reshape(-1, d))
            counts.scatter_add_(1, nearest, rearrange(weight[:, None].expand(-1, h, -1), "b h n -> h (b n)"))
        means = torch.where(counts.unsqueeze(-1) > 0, F.normalize(sums, dim=-1), self.centroids.to(q.dtype))
        moved = self.config.decay * self.centroids + (1 - self.config.decay) * means.to(self.centroids.dtype)
        self.centroids.copy_(F.normalize(moved, dim=-1))

    def implied_weights(self, q: Tensor, k: Tensor, mask: Tensor | None = None) -> Tensor:
        """[B, H, N, N]: the routed attention as a matrix (small N); linear in v once routed."""
        return implied_by_identity(self, q, k, mask)

    def computed_pairs(self, n: int) -> Tensor:
        """Bool [H, N, N]: the pairs with weight, for a random input drawn with seed 0."""
        return pairs_on_random_input(self, n)


def _cluster_means(x: Tensor, assigned: Tensor, previous: Tensor) -> Tensor:
    """Unit mean of each cluster's members; an empty cluster keeps its previous centroid."""
    h, k, d = previous.shape
    sums = torch.zeros_like(previous).scatter_add_(1, assigned.unsqueeze(-1).expand_as(x), x)
    counts = torch.zeros(h, k, device=x.device, dtype=x.dtype).scatter_add_(1, assigned, torch.ones_like(assigned, dtype=x.dtype))
    return torch.where(counts.unsqueeze(-1) > 0, F.normalize(sums, dim=-1), previous)
