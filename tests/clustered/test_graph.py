"""Graph attention against dense softmax attention masked by the adjacency, forward and gradients.

The references build the dense [N, N] adjacency from the edge list with their own loop and run a
softmax written out here (or attnzoo's dense oracle, for the complete graph); nothing from
attnzoo.clustered.graph is used to build them.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import attnzoo.clustered.graph as graph_module
from attnzoo.clustered.graph import Graph, GraphConfig, add_self_loops, graph_attention, random_graph
from attnzoo.core.multihead import MultiHeadAttention
from attnzoo.core.reference import reference_attention
from tests.conftest import assert_close_all, make_mask, make_qkv, outputs_and_grads

SIZES = [(1, 8), (7, 60), (45, 8), (45, 60), (113, 60)]  # (N, D)
SIZE_IDS = [f"N{n}-D{d}" for n, d in SIZES]


# ----------------------------------------------------------------------------- references


def adjacency_of(edges: torch.Tensor, n: int) -> torch.Tensor:
    """Bool [N, N] from the edge list, one pair at a time: A[i, j] = query i attends to key j."""
    a = torch.zeros(n, n, dtype=torch.bool)
    for i, j in edges.t().tolist():
        a[i, j] = True
    return a


def allowed_pairs(adjacency, mask, causal):
    """[B or 1, 1, N, N]: adjacency, minus padded keys, minus j > i if causal."""
    n = adjacency.shape[-1]
    allowed = adjacency[None, None]
    if mask is not None:
        allowed = allowed & mask[:, None, None, :]
    if causal:
        allowed = allowed & torch.ones(n, n, dtype=torch.bool).tril()
    return allowed


def dense_attention(q, k, v, allowed, scale=None):
    """softmax(q kᵀ · scale) v over allowed pairs, written out; a query with no allowed key gets zeros."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = (q @ k.transpose(-1, -2)) * scale
    has_key = allowed.any(-1, keepdim=True)
    scores = scores.masked_fill(~allowed, float("-inf")).masked_fill(~has_key, 0.0)
    return (torch.softmax(scores, dim=-1) * has_key) @ v


def some_edges(n: int, seed: int = 0) -> torch.Tensor:
    """3N random (i, j) pairs with repeats, self-loops where they fall, and the last node given no incoming edge."""
    gen = torch.Generator().manual_seed(seed)
    edges = torch.randint(0, n, (2, 3 * n), generator=gen)
    edges = torch.cat([edges, edges[:, : n // 2]], dim=1)  # duplicates, on purpose
    if n > 2:
        edges = edges[:, edges[0] != n - 1]
    return edges


def complete_graph(n: int) -> torch.Tensor:
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    return torch.stack([i.flatten(), j.flatten()])


# ----------------------------------------------------------------------------- numerics


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("pad", ["none", "middle"])
@pytest.mark.parametrize("n,d", SIZES[:2] + SIZES[3:], ids=SIZE_IDS[:2] + SIZE_IDS[3:])
def test_complete_graph_equals_full_softmax_attention(n, d, pad, causal):
    q, k, v = make_qkv(2, 2, n, d, seed=n)
    mask = make_mask(2, n, pad)
    allowed = allowed_pairs(torch.ones(n, n, dtype=torch.bool), mask, causal)
    got = outputs_and_grads(lambda *t: graph_attention(*t, complete_graph(n), mask=mask, causal=causal), q, k, v)
    want = outputs_and_grads(lambda *t: reference_attention(*t, allowed=allowed, scale=d**-0.5), q, k, v)
    assert_close_all(got, want, torch.float64)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("pad", ["none", "end", "middle"])
@pytest.mark.parametrize("n,d", SIZES, ids=SIZE_IDS)
def test_random_graph_equals_dense_attention_masked_by_adjacency(n, d, pad, causal):
    q, k, v = make_qkv(2, 2, n, d, seed=n + d)
    mask = make_mask(2, n, pad)
    edges = some_edges(n, seed=d)
    allowed = allowed_pairs(adjacency_of(edges, n), mask, causal)
    got = outputs_and_grads(lambda *t: graph_attention(*t, edges, mask=mask, causal=causal), q, k, v)
    want = outputs_and_grads(lambda *t: dense_attention(*t, allowed), q, k, v)
    assert_close_all(got, want, torch.float64)


@pytest.mark.parametrize("scale", [1.0, 0.3], ids=["scale1", "scale0.3"])
def test_scale_is_honoured(scale):
    q, k, v = make_qkv(2, 3, 30, 16)
    edges = some_edges(30)
    allowed = allowed_pairs(adjacency_of(edges, 30), None, False)
    got = outputs_and_grads(lambda *t: graph_attention(*t, edges, scale=scale), q, k, v)
    assert_close_all(got, outputs_and_grads(lambda *t: dense_attention(*t, allowed, scale), q, k, v), torch.float64)


def test_many_small_edge_chunks_give_the_same_result(monkeypatch):
    """The edge loop in chunks: 5 edges per chunk here, against the dense reference."""
    q, k, v = make_qkv(2, 2, 20, 8)
    monkeypatch.setattr(graph_module, "_CHUNK_ELEMENTS", 5 * 2 * 2 * 8)
    mask = make_mask(2, 20, "middle")
    edges = some_edges(20, seed=4)
    got = outputs_and_grads(lambda *t: graph_attention(*t, edges, mask=mask, causal=True), q, k, v)
    want = outputs_and_grads(lambda *t: dense_attention(*t, allowed_pairs(adjacency_of(edges, 20), mask, True)), q, k, v)
    assert_close_all(got, want, torch.float64)


def test_duplicate_edges_count_once():
    q, k, v = make_qkv(1, 2, 10, 8, requires_grad=False)
    edges = torch.tensor([[0, 0, 1, 2, 2], [1, 2, 0, 2, 0]])
    repeated = torch.cat([edges, edges[:, :2], edges[:, :2], edges[:, 3:]], dim=1)
    torch.testing.assert_close(graph_attention(q, k, v, repeated), graph_attention(q, k, v, edges), atol=0, rtol=0)


@pytest.mark.parametrize(
    "case",
    ["no-edge-in", "all-sources-padded", "causal-only-future-edges", "empty-edge-list"],
)
def test_node_without_visible_incoming_edge_outputs_zeros(case):
    n = 6
    q, k, v = make_qkv(2, 2, n, 8)
    edges, mask, causal, silent = torch.tensor([[0, 1, 1, 2, 3], [1, 0, 2, 3, 4]]), None, False, [4, 5]
    if case == "all-sources-padded":  # node 3's only key, 4, is padding (in both batch rows)
        mask, silent = torch.tensor([[True] * 4 + [False] * 2] * 2), [3, 4, 5]
    elif case == "causal-only-future-edges":  # 0 -> 1 and 2 -> 3 look ahead
        causal, silent = True, [0, 2, 3, 4, 5]
    elif case == "empty-edge-list":
        edges, silent = torch.zeros(2, 0, dtype=torch.long), list(range(n))
    out = graph_attention(q, k, v, edges, mask=mask, causal=causal)
    assert torch.equal(out[:, :, silent], torch.zeros_like(out[:, :, silent]))
    out.square().sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))
    assert torch.equal(q.grad[:, :, silent], torch.zeros_like(q.grad[:, :, silent]))


def test_padded_content_does_not_change_any_output():
    """Padded keys and values, however large, move nothing (padded queries still read real keys)."""
    q, k, v = make_qkv(2, 2, 45, 16, requires_grad=False)
    mask = make_mask(2, 45, "middle") & make_mask(2, 45, "end")
    edges = some_edges(45, seed=2)
    for causal in (False, True):
        y = graph_attention(q, k, v, edges, mask=mask, causal=causal)
        pad = ~mask[:, None, :].expand(2, 2, 45)
        k2, v2 = k.clone(), v.clone()
        k2[pad], v2[pad] = 30.0, 1e6
        torch.testing.assert_close(graph_attention(q, k2, v2, edges, mask=mask, causal=causal), y, atol=1e-10, rtol=1e-10)


def test_causal_has_no_future_leakage():
    q, k, v = make_qkv(2, 2, 45, 16, requires_grad=False)
    edges = add_self_loops(some_edges(45, seed=5), 45)
    t = 20
    y = graph_attention(q, k, v, edges, causal=True)
    changed = [x.clone() for x in (q, k, v)]
    for x in changed:
        x[:, :, t + 1 :] = torch.randn_like(x[:, :, t + 1 :])
    torch.testing.assert_close(graph_attention(*changed, edges, causal=True)[:, :, : t + 1], y[:, :, : t + 1], atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_precision_error_at_most_twice_the_naive_one(dtype):
    """flash-attention's rule: against float64, the edge path in half precision errs at most 2x
    the dense masked softmax run in float32 on the same rounded inputs, with its output rounded."""
    q, k, v = make_qkv(1, 2, 45, 32, requires_grad=False)
    edges = some_edges(45, seed=1)
    allowed = allowed_pairs(adjacency_of(edges, 45), None, False)
    exact = dense_attention(q, k, v, allowed)
    low = [t.to(dtype) for t in (q, k, v)]
    fast = graph_attention(*low, edges)
    assert fast.dtype == dtype
    naive = dense_attention(*[t.float() for t in low], allowed).to(dtype)
    err = lambda y: (y.double() - exact).abs().max().item()  # noqa: E731
    assert err(fast) <= 2 * err(naive) + 1e-3


def test_dropout_drops_weights_in_training_only():
    q, k, v = make_qkv(1, 2, 30, 8, requires_grad=False)
    edges = add_self_loops(some_edges(30), 30)
    torch.manual_seed(1)
    dropped = graph_attention(q, k, v, edges, dropout_p=0.5)
    assert torch.isfinite(dropped).all() and not torch.allclose(dropped, graph_attention(q, k, v, edges))
    core = Graph(GraphConfig(edges=edges, dropout_p=0.5), heads=2, head_dim=8, causal=False, max_len=None).eval()
    torch.testing.assert_close(core(q, k, v), graph_attention(q, k, v, edges), atol=0, rtol=0)


# ----------------------------------------------------------------------------- cost


class LargestTensor(TorchDispatchMode):
    """Records the element count of the largest tensor any aten op returns while active."""

    def __init__(self):
        super().__init__()
        self.largest, self.ops = 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops += 1
        self.largest = max([self.largest] + [t.numel() for t in tree_leaves(out) if isinstance(t, torch.Tensor)])
        return out


def test_memory_is_linear_in_edges_no_n_by_n_tensor():
    """N = 20K nodes, the stand-in graph (degree 8, E = 9N): forward and backward never create a
    tensor anywhere near N² elements; the largest is the edge chunk or an [E, B, H] score array."""
    n, b, h, d = 20_000, 1, 2, 4
    edges = random_graph(n, 8)
    assert edges.shape == (2, 9 * n)
    q, k, v = (torch.randn(b, h, n, d, requires_grad=True) for _ in range(3))
    mask = torch.ones(b, n, dtype=torch.bool)
    with LargestTensor() as fwd:
        out = graph_attention(q, k, v, edges, mask=mask, causal=True)
    with LargestTensor() as bwd:
        out.square().sum().backward()
    assert bwd.ops > 0 and q.grad is not None
    limit = max(edges.shape[1] * b * h * d, edges.numel())  # O(E·D): edge products, or the edge list itself
    assert max(fwd.largest, bwd.largest) <= limit < n * n // 100, (fwd.largest, bwd.largest, limit)


# ----------------------------------------------------------------------------- edge lists and errors


BAD_EDGES = [
    ("float", torch.tensor([[0.0, 1.0], [1.0, 0.0]]), "integer node ids"),
    ("bool", torch.tensor([[True, False], [False, True]]), "integer node ids"),
    ("E-by-2", torch.tensor([[0, 1], [1, 2], [2, 0]]), r"looks like \[E, 2\]: pass edges.t\(\)"),
    ("one-row", torch.tensor([0, 1, 2]), r"must be \[2, E\]"),
    ("three-rows", torch.zeros(3, 4, dtype=torch.long), r"must be \[2, E\]"),
    ("negative", torch.tensor([[0, -1], [1, 0]]), "negative node id"),
    ("out-of-range", torch.tensor([[0, 7], [1, 0]]), r"reference node 7 but the input has N=5"),
    ("python-list", [[0, 1], [1, 0]], "LongTensor"),
]


@pytest.mark.parametrize("edges,match", [c[1:] for c in BAD_EDGES], ids=[c[0] for c in BAD_EDGES])
def test_bad_edges_raise_with_the_fix(edges, match):
    q, k, v = make_qkv(1, 1, 5, 4, requires_grad=False)
    with pytest.raises(ValueError, match=match):
        graph_attention(q, k, v, edges)


def test_int32_edges_are_accepted():
    q, k, v = make_qkv(1, 1, 5, 4, requires_grad=False)
    edges = torch.tensor([[0, 1, 4], [1, 0, 2]])
    torch.testing.assert_close(graph_attention(q, k, v, edges.int()), graph_attention(q, k, v, edges), atol=0, rtol=0)


@pytest.mark.parametrize(
    "config,kw,match",
    [
        (GraphConfig(degree=-1), {}, "degree must be an integer >= 0"),
        (GraphConfig(seed=1.5), {}, "seed must be an integer"),
        (GraphConfig(dropout_p=1.0), {}, "dropout_p"),
        (GraphConfig(edges="0-1"), {}, "nested sequence"),
        (GraphConfig(edges=((0, 1), (1, 2), (2, 0))), {}, r"looks like \[E, 2\]"),
        (GraphConfig(edges=((0, 9), (1, 0))), {"max_len": 5}, "max_len>=10"),
    ],
    ids=["negative-degree", "float-seed", "dropout-1", "string-edges", "E-by-2-tuple", "beyond-max-len"],
)
def test_bad_config_raises_at_build(config, kw, match):
    with pytest.raises(ValueError, match=match):
        Graph(config, heads=2, head_dim=4, causal=False, max_len=kw.get("max_len"))


def test_input_with_fewer_nodes_than_the_graph_raises():
    core = Graph(GraphConfig(edges=((0, 9), (1, 0))), heads=1, head_dim=4, causal=False, max_len=None)
    q, k, v = make_qkv(1, 1, 6, 4, requires_grad=False)
    with pytest.raises(ValueError, match=r"reference node 9 but the input has N=6 nodes"):
        core(q, k, v)


def test_config_edges_as_nested_tuple_equal_the_tensor():
    edges = some_edges(12, seed=3)
    q, k, v = make_qkv(2, 2, 12, 8, requires_grad=False)
    as_tuple = tuple(tuple(row) for row in edges.tolist())
    for causal in (False, True):
        core = Graph(GraphConfig(edges=as_tuple), heads=2, head_dim=8, causal=causal, max_len=None)
        torch.testing.assert_close(core(q, k, v), graph_attention(q, k, v, edges, causal=causal), atol=0, rtol=0)


def test_add_self_loops():
    edges = add_self_loops(torch.tensor([[0, 2, 2], [1, 2, 0]]), 3)
    assert edges.tolist() == [[0, 0, 1, 2, 2], [0, 1, 1, 0, 2]]


# ----------------------------------------------------------------------------- the module and its stand-in graph


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("n,degree", [(1, 8), (5, 8), (60, 3)], ids=["N1-deg8", "N5-deg8", "N60-deg3"])
def test_stand_in_graph_is_self_plus_degree_distinct_others(n, degree, causal):
    a = adjacency_of(random_graph(n, degree, seed=7, causal=causal), n)
    assert a.diagonal().all()
    others = a.sum(1) - 1
    candidates = torch.arange(n) if causal else torch.full((n,), n - 1)
    assert torch.equal(others, candidates.clamp(max=degree))
    if causal:
        assert not a.triu(1).any()
    assert torch.equal(a, adjacency_of(random_graph(n, degree, seed=7, causal=causal), n))
    if n == 60:
        assert not torch.equal(a, adjacency_of(random_graph(n, degree, seed=8, causal=causal), n))


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_core_uses_the_stand_in_graph_and_draws_it(causal):
    core = Graph(GraphConfig(degree=3, seed=2), heads=2, head_dim=8, causal=causal, max_len=None)
    adjacency = adjacency_of(random_graph(40, 3, seed=2, causal=causal), 40)
    assert torch.equal(core.computed_pairs(40), adjacency[None])
    q, k, v = make_qkv(2, 2, 40, 8, requires_grad=False)
    mask = make_mask(2, 40, "end")
    allowed = allowed_pairs(adjacency, mask, causal)
    torch.testing.assert_close(core(q, k, v, mask), dense_attention(q, k, v, allowed), atol=1e-10, rtol=1e-10)
    # implied weights: the dense softmax over allowed pairs, zero elsewhere
    scores = (q @ k.transpose(-1, -2) / math.sqrt(8)).masked_fill(~allowed, float("-inf"))
    weights = core.implied_weights(q, k, mask)
    torch.testing.assert_close(weights, torch.softmax(scores, -1), atol=1e-10, rtol=1e-10)


def test_computed_pairs_of_a_given_graph_apply_causal():
    edges = some_edges(10, seed=9)
    core = Graph(GraphConfig(edges=edges), heads=1, head_dim=4, causal=True, max_len=None)
    assert torch.equal(core.computed_pairs(10)[0], adjacency_of(edges, 10).tril())
    assert core.computed_pairs(12)[0, 10:].sum() == 0  # nodes beyond the graph have no edges


def test_layer_padding_and_causality_through_multihead_attention():
    torch.manual_seed(0)
    edges = add_self_loops(some_edges(45, seed=6), 45)
    layer = MultiHeadAttention(32, 4, Graph(GraphConfig(edges=edges), heads=4, head_dim=8, causal=True, max_len=None)).double()
    x = torch.randn(2, 45, 32, dtype=torch.float64)
    mask = torch.ones(2, 45, dtype=torch.bool)
    mask[1, 35:] = False
    y = layer(x, mask)
    padded = x.clone()
    padded[~mask] = 1e3
    torch.testing.assert_close(layer(padded, mask)[mask], y[mask], atol=1e-10, rtol=1e-10)
    future = x.clone()
    future[:, 30:] += 1.0
    torch.testing.assert_close(layer(future, mask)[:, :30], y[:, :30], atol=1e-10, rtol=1e-10)
    assert layer.core.edges.dtype == torch.long  # .double() leaves the graph alone


# ----------------------------------------------------------------------------- the example's data


def load_example():
    path = Path(__file__).resolve().parents[2] / "examples" / "graph_node_classification.py"
    spec = importlib.util.spec_from_file_location("graph_node_classification", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_example_data_is_seeded_and_its_edges_follow_the_communities():
    example = load_example()
    config = example.SBMConfig()
    a, b, c = example.make_sbm(config, 0), example.make_sbm(config, 0), example.make_sbm(config, 1)
    for field in ("x", "labels", "edges", "train", "val", "test"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert not torch.equal(a.edges, c.edges)
    n = config.nodes
    assert a.x.shape == (n, config.features) and set(a.labels.tolist()) == set(range(config.communities))
    assert ((a.train.int() + a.val.int() + a.test.int()) == 1).all()  # a partition
    i, j = a.edges
    assert (i != j).all() and 0 <= int(a.edges.min()) and int(a.edges.max()) < n
    assert torch.equal(adjacency_of(a.edges, n), adjacency_of(a.edges, n).t())  # undirected
    same = a.labels[i] == a.labels[j]
    sizes = torch.bincount(a.labels).double()
    intra_pairs = (sizes * (sizes - 1)).sum()  # ordered pairs
    inter_pairs = n * (n - 1) - intra_pairs
    intra, inter = same.sum() / intra_pairs, (~same).sum() / inter_pairs
    assert intra > 5 * inter, (intra, inter)  # edge density inside communities far above between
