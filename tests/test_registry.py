"""Registry-wide contract: every mechanism, built by name, honours the interface."""

from __future__ import annotations

import pytest
import torch

import attnzoo
from attnzoo.registry import REGISTRY

NAMES = attnzoo.list_mechanisms()
DIM, HEADS, N = 32, 4, 45
# Small-N options so sparse patterns are really sparse at N=45.
SMALL = {
    "local": dict(window=3, block=8),
    "strided": dict(stride=4, window=2, block=8),
    "global": dict(global_idx=(0,), window=2, block=8),
    "random": dict(num_blocks=1, block_size=8, block=8),
    "sparse_transformer": dict(stride=6, block=8),
    "longformer": dict(window=3, dilation=(1, 2), block=8),
    "bigbird": dict(block_size=8, window_blocks=3, global_blocks=1, random_blocks=1, block=8),
    "heads": dict(patterns=("local:window=3", "strided:stride=4,window=2"), block=8),
    "reformer": dict(bucket_size=8, n_hashes=2),
    "routing": dict(clusters=4),
    "sinkhorn": dict(block=8),
    "linformer": dict(max_len=64, k=16),
    "compressed": dict(stride=3),
    "nystrom": dict(landmarks=8),
    "synthesizer": dict(max_len=64),
    "gmlp": dict(max_len=64),
    "mixer": dict(max_len=64),
}


# Variants that change the computation path, run through the same contract as the names.
VARIANTS = [
    ("linear", dict(feature_map="identity")),
    ("linear", dict(feature_map="relu")),
    ("performer", dict(kernel="trig")),
    ("performer", dict(kernel="relu")),
    ("performer", dict(kernel="relu", features="deterministic")),
    ("rfa", dict(gated=True)),  # causal only
    ("sinkhorn", dict(sortcut=2)),  # not causal
    ("synthesizer", dict(kind="random")),
    ("synthesizer", dict(kind="random", trainable=False)),
    ("synthesizer", dict(kind="factorized_dense")),
    ("synthesizer", dict(kind="factorized_random")),
    ("synthesizer", dict(dot=True)),
    ("mixer", dict(expansion=2)),
]
CASES = [(name, {}) for name in NAMES] + VARIANTS
def format_case(name, opts) -> str:
    return name + "".join(f"[{k}={v}]" for k, v in opts.items())


CASE_IDS = [format_case(name, opts) for name, opts in CASES]
CAUSAL_ONLY = {"rfa[gated=True]"}
NOT_CAUSAL = {"sinkhorn[sortcut=2]", "linformer", "nystrom", "fnet"}


def case_id(request) -> str:
    params = request.node.callspec.params
    return format_case(params["name"], params["opts"])


def layer(name, causal=False, **extra):
    torch.manual_seed(0)
    return attnzoo.build(name, dim=DIM, heads=HEADS, causal=causal, **{**SMALL.get(name, {}), **extra}).double()


def x_and_mask(b=2, n=N):
    x = torch.randn(b, n, DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[-1, n - 10 :] = False
    return x, mask


# DESIGN.md §3, in its order, with each name's family; `random` (random blocks alone) is ours.
DESIGN_TABLE = {
    "full": "exact", "local": "sparse", "strided": "sparse", "global": "sparse", "sparse_transformer": "sparse",
    "longformer": "sparse", "bigbird": "sparse", "heads": "sparse", "reformer": "clustered", "routing": "clustered",
    "sinkhorn": "clustered", "graph": "clustered", "linformer": "lowrank", "compressed": "lowrank", "nystrom": "lowrank",
    "linear": "kernel", "efficient": "kernel", "performer": "kernel", "rfa": "kernel", "synthesizer": "mixing", "fnet": "mixing",
    "gmlp": "mixing", "mixer": "mixing",
}


def test_registry_is_the_design_table():
    assert [name for name in NAMES if name != "random"] == list(DESIGN_TABLE)
    assert {name: attnzoo.describe(name)["family"] for name in DESIGN_TABLE} == DESIGN_TABLE
    assert attnzoo.describe("random")["family"] == "sparse"
    assert list(REGISTRY) == NAMES


# compressed convolves the values with a learned [D, D, stride] kernel, so v must be D wide
OWN_VALUE_WIDTH = {"compressed"}


# a mixer is a whole layer, with no v of its own to widen
CORE_CASES = [(c, i) for c, i in zip(CASES, CASE_IDS) if c[0] not in OWN_VALUE_WIDTH and attnzoo.describe(c[0])["family"] != "mixing"]


@pytest.mark.parametrize("name,opts", [c for c, _ in CORE_CASES], ids=[i for _, i in CORE_CASES])
def test_values_of_another_width_than_queries_and_keys(name, opts, request):
    """Weights do not depend on v, and each value channel is mixed alone: a core on v's first 3
    channels, or on v widened by 5 more, gives the same channels as on v (head dim D = 8)."""
    core = layer(name, case_id(request) in CAUSAL_ONLY, **opts).eval().core
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(2, 2, HEADS, N, DIM // HEADS, dtype=torch.float64, generator=g)
    k = q if getattr(core, "shared_qk", False) else k
    v = torch.randn(2, HEADS, N, DIM // HEADS, dtype=torch.float64, generator=g)
    _, mask = x_and_mask()
    with torch.no_grad():
        out = core(q, k, v, mask=mask)
        narrow = core(q, k, v[..., :3], mask=mask)
        wide = core(q, k, torch.cat([v, v[..., :5]], dim=-1), mask=mask)
    assert narrow.shape[-1] == 3 and wide.shape[-1] == 13
    real = lambda t: t.transpose(1, 2)[mask]  # noqa: E731 - [B, H, N, E] -> the real queries' rows
    torch.testing.assert_close(real(narrow), real(out[..., :3]), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(real(wide[..., :8]), real(out), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("name,opts", CASES, ids=CASE_IDS)
def test_shapes_and_gradients_reach_every_parameter(name, opts, causal, request):
    if (not causal and case_id(request) in CAUSAL_ONLY) or (causal and case_id(request) in NOT_CAUSAL):
        with pytest.raises(ValueError, match="causal"):
            layer(name, causal, **opts)
        return
    assert_shapes_and_gradients(layer(name, causal, **opts))


def assert_shapes_and_gradients(m) -> None:
    """m keeps x's shape, gives finite outputs, and its backward reaches x and every parameter."""
    x, mask = x_and_mask()
    x.requires_grad_(True)
    y = m(x, mask)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for pname, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name,opts", CASES, ids=CASE_IDS)
def test_awkward_size_shapes_gradients_and_padding(name, opts, request):
    """N = 113, head dim D = 60 (2 heads of width 120), batch 3 with two padded sequences."""
    causal = case_id(request) in CAUSAL_ONLY
    torch.manual_seed(0)
    options = {**SMALL.get(name, {}), **opts}
    if "max_len" in options:
        options["max_len"] = 128
    m = attnzoo.build(name, dim=120, heads=2, causal=causal, **options).double().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 113, 120, dtype=torch.float64, generator=g, requires_grad=True)
    mask = torch.ones(3, 113, dtype=torch.bool)
    mask[1, 100:], mask[2, 7:50:3] = False, False
    y = m(x, mask)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y[mask].square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad[mask].abs().sum() > 0
    assert (x.grad[~mask] == 0).all()  # padding content reaches no real output
    for pname, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name,opts", CASES, ids=CASE_IDS)
def test_padding_content_does_not_change_real_outputs(name, opts, request):
    # eval: two training calls differ by design where a mechanism learns online (routing's
    # centroids) or samples (Sinkhorn's Gumbel noise); padding must not matter in either mode.
    m = layer(name, case_id(request) in CAUSAL_ONLY, **opts).eval()
    x, mask = x_and_mask()
    y = m(x, mask)
    x2 = x.clone()
    x2[~mask] = 1e3 * torch.randn_like(x2[~mask])
    y2 = m(x2, mask)
    torch.testing.assert_close(y2[mask], y[mask], atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("name,opts", CASES, ids=CASE_IDS)
def test_causal_has_no_future_leakage(name, opts, request):
    if case_id(request) in NOT_CAUSAL:
        with pytest.raises(ValueError, match="causal"):
            layer(name, causal=True, **opts)
        return
    m = layer(name, causal=True, **opts).eval()
    x, _ = x_and_mask(b=1)
    t = 20
    y = m(x)
    x2 = x.clone()
    x2[:, t + 1 :] = torch.randn_like(x2[:, t + 1 :])
    torch.testing.assert_close(m(x2)[:, : t + 1], y[:, : t + 1], atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("name,opts", CASES, ids=CASE_IDS)
def test_deterministic_under_a_seed(name, opts, request):
    causal = case_id(request) in CAUSAL_ONLY
    x, mask = x_and_mask()
    torch.testing.assert_close(layer(name, causal, **opts)(x, mask), layer(name, causal, **opts)(x, mask), atol=0, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_describe(name):
    d = attnzoo.describe(name)
    assert d["name"] == name and d["family"] in {"exact", "sparse", "clustered", "lowrank", "kernel", "mixing"}
    assert "arxiv.org" in d["paper"] and d["complexity"]
    assert set(d) >= {"options", "causal", "mask", "variable_length"}
    config_cls = REGISTRY[name][0]
    assert d["options"] == {k: v for k, v in vars(config_cls()).items()}


def test_global_learned_tokens_are_seen_by_every_position():
    m = layer("global", num_tokens=2, global_idx=())
    x, mask = x_and_mask()
    y = m(x, mask)
    with torch.no_grad():
        m.core.tokens.add_(1.0)
    assert (m(x, mask) - y).abs().amax(-1).gt(0).all(), "changing the learned tokens changes every output"


def test_heads_use_their_own_patterns():
    m = layer("heads", patterns=("local:window=1", "strided:stride=5"))
    pairs = m.core.computed_pairs(12)
    assert pairs.shape == (HEADS, 12, 12)
    i, j = torch.meshgrid(torch.arange(12), torch.arange(12), indexing="ij")
    assert torch.equal(pairs[0], (i - j).abs() <= 1) and torch.equal(pairs[2], (i - j).abs() <= 1)
    assert torch.equal(pairs[1], (i - j) % 5 == 0) and torch.equal(pairs[3], (i - j) % 5 == 0)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_heads_core_output_is_each_heads_own_masked_softmax(causal):
    """The core runs heads grouped by pattern (stride heads in residue order); each head must be the
    written-out softmax over the pairs its own pattern allows (and the key mask)."""
    m = layer("heads", causal=causal, patterns=("local:window=1", "strided:stride=5"), block=4)
    q, k, v = (torch.randn(2, HEADS, 23, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(s)) for s in range(3))
    _, mask = x_and_mask(n=23)
    i, j = torch.meshgrid(torch.arange(23), torch.arange(23), indexing="ij")
    allowed = torch.stack([(i - j).abs() <= 1, (i - j) % 5 == 0] * (HEADS // 2)) & mask[:, None, None, :]
    if causal:
        allowed = allowed & (j <= i)
    scores = (q @ k.transpose(-1, -2) / 8**0.5).masked_fill(~allowed, float("-inf"))
    want = torch.softmax(scores, -1).nan_to_num(0.0) @ v
    torch.testing.assert_close(m.core(q, k, v, mask), want, atol=1e-12, rtol=1e-12)
