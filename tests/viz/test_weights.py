"""Attention-map pictures: every map is the operator the mechanism applies to its values.

References written out here in NumPy: softmax over a pattern's allowed pairs (its computed_pairs,
materialized from the pattern's predicate, not the blocked kernel), linear attention with elu + 1
features, and Linformer's softmax(q (Eᵀk)ᵀ) Fᵀ. For the data-dependent rest (clustering, landmarks,
random features) the stated property: the core's output on random values is map @ values.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

import attnzoo
from attnzoo.cli import main
from attnzoo.viz.weights import attention_map, exact_map, probe, row_error, weight_panels

N, D = 24, 16


def numpy_softmax_map(n: int, d: int, allowed: np.ndarray) -> np.ndarray:
    """softmax(x xᵀ / √d) over the allowed pairs, x the probe, written in NumPy."""
    x = probe(n, d).numpy()
    scores = np.where(allowed, x @ x.T / math.sqrt(d), -np.inf)
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def build(name: str, heads: int = 1, causal: bool = False, **options):
    torch.manual_seed(0)
    return attnzoo.build(name, dim=D * heads, heads=heads, causal=causal, max_len=N, **options)


def test_probe_gives_a_band_that_thins_away_from_the_diagonal():
    a = exact_map(N, D)
    torch.testing.assert_close(a.sum(-1), torch.ones(N, dtype=torch.float64))
    assert torch.equal(a.argmax(-1), torch.arange(N))
    for i in range(3, N - 3):  # falls off monotonically for three steps on each side
        assert a[i, i] > a[i, i + 1] > a[i, i + 2] > a[i, i + 3] and a[i, i] > a[i, i - 1] > a[i, i - 2] > a[i, i - 3]
    causal = exact_map(N, D, causal=True)
    assert torch.equal(causal.triu(1), torch.zeros(N, N, dtype=torch.float64))
    torch.testing.assert_close(causal.sum(-1), torch.ones(N, dtype=torch.float64))


@pytest.mark.parametrize("name,options,causal,allowed", [
    ("full", {}, False, lambda i, j: np.ones_like(i, dtype=bool)),
    ("full", {}, True, lambda i, j: j <= i),
    ("local", dict(window=3, block=8), False, lambda i, j: abs(i - j) <= 3),
    ("local", dict(window=3, block=8), True, lambda i, j: (j <= i) & (i - j <= 3)),
    ("strided", dict(stride=4, block=8), False, lambda i, j: (i - j) % 4 == 0),
], ids=["full", "full-causal", "local", "local-causal", "strided"])
def test_exact_and_pattern_maps_are_the_softmax_over_their_pairs(name, options, causal, allowed):
    i, j = np.meshgrid(np.arange(N), np.arange(N), indexing="ij")
    want = numpy_softmax_map(N, D, allowed(i, j))
    got = attention_map(build(name, causal=causal, **options), N)
    assert got.shape == (1, N, N)
    np.testing.assert_allclose(got[0].numpy(), want, atol=1e-12)


# every attention core family, with options that make the structure visible at N = 24; not
# compressed: its values go through a learned conv that mixes channels, so no N×N map is its operator
# (its picture shares each compressed key's weight over its block: tests/lowrank/test_compressed.py)
CORES = [
    ("full", {}), ("full", dict(score="additive")), ("bigbird", dict(block_size=4, block=8)), ("random", dict(num_blocks=1, block_size=4, block=8)),
    ("longformer", dict(window=2, global_idx=(0,), block=8)), ("sparse_transformer", dict(stride=6, block=8)),
    ("reformer", dict(bucket_size=4, n_hashes=2)), ("routing", dict(clusters=3)), ("sinkhorn", dict(block=4)),
    ("graph", {}), ("linformer", dict(k=8)), ("nystrom", dict(landmarks=4)),
    ("linear", {}), ("efficient", {}), ("performer", {}), ("rfa", {}),
]


@pytest.mark.parametrize("name,options", CORES, ids=[n + "".join(f"[{k}={v}]" for k, v in o.items()) for n, o in CORES])
@pytest.mark.parametrize("causal", [False, True], ids=["", "causal"])
def test_map_times_values_is_the_core_output(name, options, causal):
    """The picture is truthful: the core on the probe's q = k and random values v returns map @ v;
    for fixed pairs, the map is the softmax over those pairs, written out."""
    try:
        layer = build(name, heads=2, causal=causal, **options)
    except ValueError as err:
        assert causal and "causal" in str(err)  # linformer, nystrom: not causal by design
        return
    weights = attention_map(layer, N)  # [H, N, N]
    assert weights.shape == (2, N, N) and torch.isfinite(weights).all()
    core = layer.core.to(torch.float64).eval()
    q = probe(N, D).expand(1, 2, N, D)
    v = torch.randn(1, 2, N, D, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = core(q, q, v)
    torch.testing.assert_close(weights @ v[0], out[0], atol=1e-10, rtol=1e-10)
    if causal:
        assert torch.equal(weights.triu(1), torch.zeros_like(weights))
    if name in ("bigbird", "random", "longformer", "sparse_transformer", "graph"):  # fixed pairs
        pairs = core.computed_pairs(N).expand(2, N, N).numpy()
        for h in range(2):
            np.testing.assert_allclose(weights[h].numpy(), numpy_softmax_map(N, D, pairs[h]), atol=1e-12)


def test_linear_map_is_the_normalized_elu_feature_product():
    x = probe(N, D).numpy()
    phi = np.where(x > 0, x + 1, np.exp(x))  # elu(x) + 1
    products = phi @ phi.T
    got = attention_map(build("linear"), N)[0].numpy()
    np.testing.assert_allclose(got, products / products.sum(1, keepdims=True), atol=1e-12)


def test_linformer_map_is_the_softmax_over_projected_keys_times_the_value_projection():
    layer = build("linformer", k=8)
    proj_k, proj_v = (p.detach().double().numpy()[:N] for p in layer.core.projections())  # E, F: [N, K]
    x = probe(N, D).numpy()
    scores = x @ (proj_k.T @ x).T / math.sqrt(D)  # [N, K]
    attention = np.exp(scores - scores.max(1, keepdims=True))
    attention /= attention.sum(1, keepdims=True)
    np.testing.assert_allclose(attention_map(layer, N)[0].numpy(), attention @ proj_v.T, atol=1e-12)


def test_map_leaves_dropout_out_and_the_layer_as_it_was():
    layer = build("local", window=3, block=8, dropout_p=0.5)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    got = attention_map(layer, N)
    i, j = np.meshgrid(np.arange(N), np.arange(N), indexing="ij")
    np.testing.assert_allclose(got[0].numpy(), numpy_softmax_map(N, D, abs(i - j) <= 3), atol=1e-12)
    assert layer.training and next(layer.parameters()).dtype == torch.float32
    assert all(torch.equal(before[k], v) for k, v in layer.state_dict().items())
    # the core's own implied_weights, called in training mode, leaves dropout out too and stays in training
    q = probe(N, D).float().expand(1, 1, N, D)
    direct = layer.core.implied_weights(q, q)
    np.testing.assert_allclose(direct[0, 0].numpy(), numpy_softmax_map(N, D, abs(i - j) <= 3), atol=1e-6)
    assert layer.core.training


@pytest.mark.parametrize("name,options", [("routing", dict(clusters=3)), ("sinkhorn", dict(block=4)), ("performer", {}),
                                          ("reformer", dict(bucket_size=4))])
def test_implied_weights_of_a_training_core_change_nothing_and_draw_no_noise(name, options):
    """Called on a core in training mode: no centroid update, no Gumbel noise, no feature redraw;
    the core stays in training mode and two calls agree."""
    core = build(name, heads=2, **options).core.double()
    state = copy.deepcopy(core.state_dict())  # with the random features' generator state where there is one
    q = probe(N, D).expand(1, 2, N, D)
    first, second = core.implied_weights(q, q), core.implied_weights(q, q)
    assert core.training and not first.requires_grad
    torch.testing.assert_close(first, second, atol=0, rtol=0)
    assert same(state, core.state_dict())


def same(a, b) -> bool:
    """Equal nested state: tensors element for element, dicts key for key, anything else by ==."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def test_learned_global_tokens_take_what_the_real_keys_leave():
    """Global with learned tokens: the map covers the real keys; with the tokens' values zeroed,
    the core's output is map @ v, and each row's missing mass is the tokens' softmax share."""
    layer = build("global", global_idx=(0,), window=2, num_tokens=2, block=8)
    weights = attention_map(layer, N)[0]
    core = layer.core.to(torch.float64).eval()
    with torch.no_grad():
        core.tokens[2].zero_()
        q = probe(N, D).expand(1, 1, N, D)
        v = torch.randn(1, 1, N, D, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
        out = core(q, q, v)
        # independent: scores of each query against [tokens; real keys], softmax over the allowed ones
        keys = torch.cat([core.tokens[1][0], q[0, 0]])  # [2 + N, D]
        scores = q[0, 0] @ keys.T / math.sqrt(D)
        tokens_share = scores.softmax(-1)[:, :2].sum(-1)  # every query sees every learned token
    torch.testing.assert_close(weights @ v[0, 0], out[0, 0], atol=1e-10, rtol=1e-10)
    assert (weights.sum(-1) < 1).all()
    # pattern rows see a subset of the keys; the global row (position 0) sees them all
    torch.testing.assert_close(1 - weights[0].sum(), tokens_share[0], atol=1e-10, rtol=1e-10)


def test_gmlp_map_is_the_spatial_operator_of_its_gate():
    layer = build("gmlp", causal=True).double()
    with torch.no_grad():
        layer.spatial_weight.normal_()
    z = torch.randn(2, N, 2 * layer.norm.normalized_shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    mask = torch.ones(2, N, dtype=torch.bool)
    mask[1, 20:] = False
    weights = layer.implied_weights(torch.zeros(2, N, D, dtype=torch.float64), mask)  # [B, 1, N, N]
    z1, z2 = z.chunk(2, dim=-1)
    u = torch.nn.functional.layer_norm(z2, z2.shape[-1:], layer.norm.weight, layer.norm.bias, layer.norm.eps)
    want = z1 * (weights[:, 0] @ u + layer.spatial_bias[:N, None])
    torch.testing.assert_close(layer.sgu(z, mask), want)
    assert torch.equal(weights[:, 0].triu(1), torch.zeros(2, N, N, dtype=torch.float64))
    assert torch.equal(weights[1, 0, :, 20:], torch.zeros(N, N - 20, dtype=torch.float64))


@pytest.mark.parametrize("name", attnzoo.list_mechanisms())
def test_every_mechanism_draws_a_map_but_fnet_and_mixer(name):
    options = {"heads": dict(patterns=("local:window=3", "strided:stride=4"))}.get(name, {})
    layer = build(name, heads=2, **options)
    weights = attention_map(layer, N)
    if name in ("fnet", "mixer"):
        assert weights is None
        return
    assert weights.shape[1:] == (N, N) and weights.shape[0] in (1, 2) and torch.isfinite(weights).all()


def test_row_error_is_half_the_l1_distance_per_query():
    exact = torch.eye(4, dtype=torch.float64)
    assert row_error(exact[None], exact).item() == 0
    assert row_error(exact.roll(1, dims=1)[None], exact).item() == 1  # disjoint one-hot rows
    half = torch.full((4, 4), 0.25, dtype=torch.float64)
    assert row_error(half[None], exact).item() == pytest.approx(0.75)


def test_weight_panels_share_identical_heads_and_name_the_mixers_without_a_map_and_the_failures():
    layers = [("heads", build("heads", heads=4, patterns=("local:window=3", "local:window=30"), block=8)), ("fnet", build("fnet")),
              ("causal local", build("local", causal=True, window=30, block=8))]
    panels, no_map, failed = weight_panels(layers, N, D)
    assert [label for label, _, _ in panels] == ["heads, heads 0, 2", "heads, heads 1, 3", "causal local"]
    assert panels[1][2] == pytest.approx(0, abs=1e-12) and panels[0][2] > 0.05  # the window-30 heads are exact
    assert panels[2][2] == pytest.approx(0, abs=1e-12)  # against the causal exact map
    assert no_map == ["fnet"] and failed == []
    _, _, failed = weight_panels([("big", build("full"))], 2000, D)
    assert len(failed) == 1 and failed[0].startswith("big: ValueError: attention maps are pictures") and "N <= 1024" in failed[0]


def test_show_weights_draws_and_prints_each_row_error(tmp_path, capsys):
    png = tmp_path / "w.png"
    assert main(["show", "full", "local", "fnet", "--weights", "--n", str(N), "--head-dim", str(D), "--opt", "local.window=3",
                 "--opt", "local.block=8", "--out", str(png)]) == 0
    out = capsys.readouterr().out
    i, j = np.meshgrid(np.arange(N), np.arange(N), indexing="ij")
    banded = numpy_softmax_map(N, D, abs(i - j) <= 3)
    want = 0.5 * np.abs(banded - numpy_softmax_map(N, D, np.ones((N, N), bool))).sum(1).mean()
    assert "full: row error ½‖w − exact‖₁ = 0.000" in out
    assert f"local block=8 window=3: row error ½‖w − exact‖₁ = {want:.3f}" in out and want > 0.01
    assert "fnet: no N×N weight map" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv,message", [
    (["show", "full", "--weights", "--cost"], "give one of them"),
    (["show", "fnet", "mixer", "--weights"], "none of"),
    (["show", "full", "--weights", "--head-dim", "1"], "--head-dim must be >= 2"),
])
def test_show_weights_refuses_what_it_cannot_draw(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err
