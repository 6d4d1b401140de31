"""Graph attention: softmax self-attention restricted to the edges of a graph, in O(E), never N×N.

Self-attention is message passing on the complete graph; restricting it to a sparse graph's
edges gives attention on graphs (Veličković et al. 2018, GAT, arxiv.org/abs/1710.10903) with the
transformer's dot-product scores (Dwivedi & Bresson 2020, "A Generalization of Transformer
Networks to Graphs", arxiv.org/abs/2012.09699). Scores are taken per edge (a sampled dense-dense
product), normalised per destination node by a scatter softmax, and the values summed back along
the edges (a sparse-dense product), edges a chunk at a time, so memory is O(E + N·D).

b batch, h heads, n nodes (i query / destination, j key / source), e edges, d head dim.
Edge (i, j) means "node i attends to node j": edges[0] holds the i, edges[1] the j.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from attnzoo.core.checks import check_dropout, check_int, check_mask, check_qkv, resolve_scale
from attnzoo.core.implied import implied_by_identity
from attnzoo.core.info import MechanismInfo

_CHUNK_ELEMENTS = 1 << 22  # per-edge products are formed this many elements at a time ([edges, B, H, D])


@dataclass
class GraphConfig:
    edges: Tensor | tuple | None = None  # [2, E] (query i, key j) pairs; None = the seeded stand-in graph below
    degree: int = 8  # stand-in graph: random other nodes each node attends to (besides itself)
    seed: int = 0  # stand-in graph: the same seed and N give the same graph
    scale: float | None = None  # None = 1/sqrt(D)
    dropout_p: float = 0.0  # on the attention weights, in training


# ----------------------------------------------------------------------------- edge lists


def check_edges(edges: Tensor, n: int | None, where: str, device: torch.device | None = None) -> Tensor:
    """Validate an edge list and return it as int64 [2, E]: integer dtype, shape [2, E], ids in [0, N).

    ``n=None`` checks only that ids are non-negative (the graph's size is not known yet).
    """
    if not isinstance(edges, Tensor):
        raise ValueError(f"{where}: edges must be a LongTensor [2, E], got {type(edges).__name__}; use torch.tensor(edges)")
    if edges.dtype == torch.bool or edges.is_floating_point() or edges.is_complex():
        raise ValueError(f"{where}: edges must hold integer node ids, got dtype {edges.dtype}; use edges.long()")
    if edges.dim() != 2 or edges.shape[0] != 2:
        hint = "; it looks like [E, 2]: pass edges.t()" if edges.dim() == 2 and edges.shape[1] == 2 else ""
        raise ValueError(
            f"{where}: edges must be [2, E] (row 0 query nodes i, row 1 key nodes j), got shape {tuple(edges.shape)}{hint}"
        )
    if device is not None and edges.device != device:
        raise ValueError(f"{where}: edges are on {edges.device} but q is on {device}; move them with edges.to(q.device)")
    edges = edges.long()
    if edges.numel():
        low, high = int(edges.min()), int(edges.max())
        if low < 0:
            raise ValueError(f"{where}: edges hold a negative node id ({low}); node ids must be in [0, N)")
        if n is not None and high >= n:
            raise ValueError(
                f"{where}: edges reference node {high} but the input has N={n} nodes (ids must be in [0, {n})); "
                f"pass inputs with N >= {high + 1} or an edge list on N nodes"
            )
    return edges


def as_edges(edges: Tensor | tuple | list, where: str) -> Tensor:
    """A [2, E] tensor from a tensor or a nested sequence ((i, ...), (j, ...)), as configs and the CLI give it."""
    if isinstance(edges, Tensor):
        return edges
    try:
        out = torch.as_tensor(edges)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{where}: edges must be a LongTensor [2, E] or a nested sequence ((i, ...), (j, ...)), got {edges!r}") from None
    if out.numel() == 0:  # torch.as_tensor(((), ())) is float
        out = out.long()
    return out


def coalesce(edges: Tensor, n: int, *, causal: bool = False) -> Tensor:
    """[2, E'] int64: each (i, j) pair once, sorted by query node i then key node j; causal drops j > i.

    ``edges`` must already be valid for ``n`` nodes (see ``check_edges``).
    """
    if causal:
        edges = edges[:, edges[1] <= edges[0]]
    n = max(n, 1)
    key = torch.unique(edges[0] * n + edges[1])  # sorted
    return torch.stack([key // n, key % n])


def add_self_loops(edges: Tensor, n: int) -> Tensor:
    """``edges`` plus (i, i) for every node i < n, each pair once (coalesced). graph_attention never adds them itself."""
    edges = check_edges(as_edges(edges, "add_self_loops"), n, "add_self_loops")
    loops = torch.arange(n, device=edges.device).expand(2, n)
    return coalesce(torch.cat([edges, loops], dim=1), n)


def random_graph(n: int, degree: int, seed: int = 0, *, causal: bool = False) -> Tensor:
    """The stand-in graph: every node i attends to itself and to ``degree`` distinct other nodes drawn
    uniformly (earlier nodes only if causal), all of them when fewer exist. Returns int64 [2, E], coalesced.

    Seeded and independent of torch's global generator: the same (n, degree, seed, causal) give the same graph.
    """
    check_int(n, "n", minimum=1, where="random_graph")
    check_int(degree, "degree", minimum=0, where="random_graph")
    check_int(seed, "seed", minimum=0, where="random_graph")
    gen = torch.Generator().manual_seed(seed)
    i = torch.arange(n)
    candidates = i if causal else torch.full((n,), n - 1)  # [N]: how many nodes each node may draw from
    draws = min(degree, n - 1)
    picks = torch.full((n, draws), -1, dtype=torch.long)  # [N, draws]: candidate ranks, -1 = none
    # Floyd's sampling of `draws` distinct ranks out of `candidates` per row, all rows at once: at step s
    # draw r in [0, t] with t = candidates - draws + s; a rank already taken is replaced by t itself.
    # A row with fewer candidates than draws has t < 0 for its first steps (no pick) and ends with all of them.
    for s in range(draws):
        t = candidates - draws + s
        r = torch.minimum((torch.rand(n, generator=gen, dtype=torch.float64) * (t + 1).clamp_min(0)).long(), t)
        taken = (picks[:, :s] == r[:, None]).any(dim=1)
        picks[:, s] = torch.where(t < 0, -1, torch.where(taken, t, r))
    # rank -> node: causal ranks are the earlier nodes themselves; otherwise skip the node's own id
    nodes = picks if causal else picks + (picks >= i[:, None])
    real = picks >= 0
    dst = torch.cat([i, i[:, None].expand(n, draws)[real]])
    src = torch.cat([i, nodes[real]])
    return coalesce(torch.stack([dst, src]), n)


@functools.lru_cache(maxsize=32)
def _stand_in_graph(n: int, degree: int, seed: int, causal: bool, device: torch.device) -> Tensor:
    return random_graph(n, degree, seed, causal=causal).to(device)


def dense_adjacency(edges: Tensor, n: int) -> Tensor:
    """Bool [N, N], True where query i attends to key j. O(N²): for pictures and tests at small N."""
    edges = check_edges(edges, n, "dense_adjacency")
    adjacency = torch.zeros(n, n, dtype=torch.bool, device=edges.device)
    adjacency[edges[0], edges[1]] = True
    return adjacency


# ----------------------------------------------------------------------------- the attention


def graph_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    edges: Tensor,
    *,
    mask: Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
) -> Tensor:
    """Softmax attention along the edges of one graph shared by the batch and heads, in O(E·D).

    Args:
        q, k, v: [B, H, N, D] (v may have its own last dim), one row per node.
        edges: int [2, E] on q's device; column (i, j) means query node i attends to key node j.
        mask: [B, N] bool, True = real node; edges into padded keys are dropped.
        causal: drop edges with j > i.
        scale: multiplies q·k; None = 1/sqrt(D).
        dropout_p: dropout on the attention weights (the caller decides when it is training).

    Returns:
        [B, H, N, D]. A node with no visible incoming edge gets zeros (and zero gradients).

    Equivalent to: A = bool [N, N] with A[i, j] = (i, j) in edges; full softmax attention with
    scores -inf where not A (or j padded, or j > i if causal), rows with no visible key zeroed;
    i.e. out_i = Σ_{(i,j)} softmax_j(scale · q_i·k_j) v_j over i's distinct visible edges.

    Note:
        Duplicate edges count once (the edge list is read as a set of pairs), so the result equals
        attention masked by the adjacency. Self-loops are not added: a node attends to itself only
        through an edge (i, i); see ``add_self_loops``. PyTorch Geometric's ``edge_index`` is
        (source j, target i): pass ``edge_index.flip(0)``. Each call validates and coalesces the
        edge list (O(E log E)); the ``Graph`` module does that once. Gradients are first order
        only: the edge products are autograd Functions that keep no [E, D] tensor for backward.
    """
    check_qkv(q, k, v, "graph_attention")
    check_mask(mask, q, "graph_attention")
    check_dropout(dropout_p, "graph_attention")
    scale = resolve_scale(scale, q.shape[-1], "graph_attention")
    n = q.shape[2]
    edges = coalesce(check_edges(edges, n, "graph_attention", device=q.device), n, causal=causal)
    return edge_attention(q, k, v, edges[0], edges[1], mask=mask, scale=scale, dropout_p=dropout_p)


def edge_attention(
    q: Tensor, k: Tensor, v: Tensor, dst: Tensor, src: Tensor, *, mask: Tensor | None, scale: float, dropout_p: float = 0.0
) -> Tensor:
    """graph_attention on prepared edges: dst, src int64 [E] valid, distinct pairs (causal already applied).

    Inputs are not checked here: ``graph_attention`` and ``Graph`` do that.
    """
    n = q.shape[2]
    q_n, k_n, v_n = (rearrange(t, "b h n d -> n b h d").contiguous() for t in (q, k, v))  # node-major rows gather fast
    scores = _EdgeDot.apply(q_n, k_n, dst, src) * scale  # [E, B, H]
    if mask is not None:
        scores = scores.masked_fill(~mask.t()[src][:, :, None], float("-inf"))  # edges into padded keys
    weights = scatter_softmax(scores, dst, n)
    if dropout_p > 0:
        weights = F.dropout(weights, dropout_p)
    out = _EdgeSum.apply(weights, v_n, dst, src, n)  # [N, B, H, D]
    return rearrange(out, "n b h d -> b h n d")


def scatter_softmax(scores: Tensor, dst: Tensor, n: int) -> Tensor:
    """scores [E, ...] -> weights [E, ...], softmax over the edges sharing a destination dst_e ∈ [0, n).

    Equivalent to: w_e = exp(s_e) / Σ_{e': dst_e' = dst_e} exp(s_e'); a destination whose edges are
    all -inf gets weights 0 (and zero gradients), never NaN.
    """
    index = dst.view(-1, *([1] * (scores.dim() - 1))).expand_as(scores)
    row_max = scores.new_full((n, *scores.shape[1:]), float("-inf"))
    row_max = row_max.scatter_reduce(0, index, scores.detach(), "amax", include_self=False)  # [N, ...]
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))  # no visible edge: exp(-inf) = 0
    unnorm = torch.exp(scores - row_max.index_select(0, dst))
    denom = scores.new_zeros(n, *scores.shape[1:]).index_add(0, dst, unnorm)
    denom = torch.where(denom > 0, denom, torch.ones_like(denom))
    return unnorm / denom.index_select(0, dst)


def _accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)  # half inputs accumulate in float32


def _chunks(num_edges: int, row: Tensor):
    """Edge ranges of at most _CHUNK_ELEMENTS products, for node-major rows ``row`` [B, H, D]."""
    step = max(1, _CHUNK_ELEMENTS // max(1, row.numel()))
    return (slice(s, s + step) for s in range(0, num_edges, step))


def _edge_dot(a: Tensor, c: Tensor, dst: Tensor, src: Tensor) -> Tensor:
    """a, c [N, B, H, D] -> [E, B, H]: a[dst_e]·c[src_e] (the sampled dense-dense product)."""
    acc = _accumulate_dtype(a.dtype)
    out = torch.empty(dst.numel(), *a.shape[1:-1], dtype=acc, device=a.device)
    for part in _chunks(dst.numel(), a[0]):
        out[part] = (a.index_select(0, dst[part]).to(acc) * c.index_select(0, src[part]).to(acc)).sum(-1)
    return out


def _edge_sum(w: Tensor, v: Tensor, dst: Tensor, src: Tensor, n: int) -> Tensor:
    """w [E, B, H], v [N, B, H, D] -> [N, B, H, D] in the accumulation dtype: out_i = Σ_{e: dst_e = i} w_e v[src_e]."""
    acc = _accumulate_dtype(v.dtype)
    out = torch.zeros(n, *v.shape[1:], dtype=acc, device=v.device)
    for part in _chunks(dst.numel(), v[0]):
        out.index_add_(0, dst[part], w[part].to(acc)[..., None] * v.index_select(0, src[part]).to(acc))
    return out


class _EdgeDot(torch.autograd.Function):
    """s_e = q[dst_e]·k[src_e], saving only q, k and the edges (no [E, D] tensor kept for backward)."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, dst: Tensor, src: Tensor) -> Tensor:
        ctx.save_for_backward(q, k, dst, src)
        return _edge_dot(q, k, dst, src)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        q, k, dst, src = ctx.saved_tensors
        n = q.shape[0]
        dq = _edge_sum(grad, k, dst, src, n).to(q.dtype) if ctx.needs_input_grad[0] else None  # Σ_j g_ij k_j
        dk = _edge_sum(grad, q, src, dst, n).to(k.dtype) if ctx.needs_input_grad[1] else None  # Σ_i g_ij q_i
        return dq, dk, None, None


class _EdgeSum(torch.autograd.Function):
    """out_i = Σ_{e: dst_e = i} w_e v[src_e], saving only w, v and the edges."""

    @staticmethod
    def forward(ctx, w: Tensor, v: Tensor, dst: Tensor, src: Tensor, n: int) -> Tensor:
        ctx.save_for_backward(w, v, dst, src)
        return _edge_sum(w, v, dst, src, n).to(v.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        w, v, dst, src = ctx.saved_tensors
        dw = _edge_dot(grad, v, dst, src).to(w.dtype) if ctx.needs_input_grad[0] else None  # g_i·v_j
        dv = _edge_sum(w, grad, src, dst, v.shape[0]).to(v.dtype) if ctx.needs_input_grad[1] else None  # Σ_i w_ij g_i
        return dw, dv, None, None, None


# ----------------------------------------------------------------------------- the module


class Graph(nn.Module):
    """Graph attention core: the configured edge list, or without one a seeded random stand-in graph per N.

    Note:
        The stand-in graph (every node attends to itself and ``degree`` random other nodes, earlier
        ones if causal) exists so the mechanism can be built by name, benchmarked and tested
        without a graph; it is not a model of any data. A configured graph is validated and
        coalesced once, here; inputs with more nodes than it has leave the extra nodes without
        edges (zeros), inputs with fewer raise.
    """

    info = MechanismInfo(
        paper="Dwivedi & Bresson 2020, arxiv.org/abs/2012.09699 (attention on graphs: Veličković et al. 2018, arxiv.org/abs/1710.10903)",
        complexity="O(E·D) time, O(E + N·D) memory for E edges (stand-in graph: E ≈ N·(degree + 1))",
        causal=True,
        mask=True,
    )

    def __init__(self, config: GraphConfig, *, heads: int, head_dim: int, causal: bool, max_len: int | None):
        super().__init__()
        check_int(config.degree, "degree", minimum=0, where="graph")
        check_int(config.seed, "seed", minimum=0, where="graph")
        check_dropout(config.dropout_p, "graph")
        resolve_scale(config.scale, head_dim, "graph")
        self.config, self.causal = config, causal
        self.num_nodes = 0  # nodes the configured graph needs (largest id + 1)
        edges = None
        if config.edges is not None:
            edges = check_edges(as_edges(config.edges, "graph"), None, "graph")
            self.num_nodes = int(edges.max()) + 1 if edges.numel() else 0
            if max_len is not None and self.num_nodes > max_len:
                raise ValueError(
                    f"graph: edges reference node {self.num_nodes - 1} but max_len={max_len}; build it with max_len>={self.num_nodes}"
                )
            edges = coalesce(edges, self.num_nodes, causal=causal)
        self.register_buffer("edges", edges)

    def graph(self, n: int, device: torch.device) -> Tensor:
        """int64 [2, E]: the coalesced edges used for N nodes (causal applied), on ``device``."""
        if self.edges is None:
            return _stand_in_graph(n, self.config.degree, self.config.seed, self.causal, torch.device(device))
        if n < self.num_nodes:
            raise ValueError(
                f"graph: edges reference node {self.num_nodes - 1} but the input has N={n} nodes; "
                f"pass all {self.num_nodes} nodes (pad with mask=False) or build the layer with an edge list on {n} nodes"
            )
        return self.edges.to(device)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        check_qkv(q, k, v, "graph")
        check_mask(mask, q, "graph")
        edges = self.graph(q.shape[2], q.device)
        scale = resolve_scale(self.config.scale, q.shape[-1], "graph")
        p = self.config.dropout_p if self.training else 0.0
        return edge_attention(q, k, v, edges[0], edges[1], mask=mask, scale=scale, dropout_p=p)

    @torch.no_grad()
    def implied_weights(self, q: Tensor, k: Tensor, mask: Tensor | None = None) -> Tensor:
        """[B, H, N, N]: the attention matrix, zero off the edges (for pictures, small N).

        Attention is linear in v, so running it on v = I_N returns the matrix's rows.
        """
        return implied_by_identity(self, q, k, mask)

    def computed_pairs(self, n: int) -> Tensor:
        """Bool [1, N, N]: the adjacency, causal applied: the only (query, key) pairs scored."""
        return dense_adjacency(self.graph(n, torch.device("cpu")), n)[None]
