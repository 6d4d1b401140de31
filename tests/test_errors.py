"""Bad input: a ValueError that names the fix, at build time where possible."""

from __future__ import annotations

import pytest
import torch

import attnzoo
from attnzoo.functional import (
    bigbird_attention,
    full_attention,
    global_attention,
    local_attention,
    longformer_attention,
    sparse_attention,
    strided_attention,
)
from attnzoo.functional import feature_attention, linear_attention, performer_attention, rfa_attention

q = torch.randn(1, 2, 8, 4)

CALLS = [
    ("rank-3 q", lambda: full_attention(q[0], q[0], q[0]), "B, H, N, D"),
    ("length mismatch", lambda: local_attention(q, q[:, :, :5], q, window=1), "agree on"),
    ("dtype mismatch", lambda: local_attention(q, q.double(), q, window=1), "cast them"),
    ("int tensors", lambda: full_attention(q.long(), q.long(), q.long()), "floating point"),
    ("mask shape", lambda: local_attention(q, q, q, window=1, mask=torch.ones(1, 9, dtype=torch.bool)), r"\[1, 8\]"),
    ("mask dtype", lambda: full_attention(q, q, q, mask=torch.ones(1, 8)), "mask.bool"),
    ("window < 0", lambda: local_attention(q, q, q, window=-1), "window must be an integer >= 0"),
    ("stride 0", lambda: strided_attention(q, q, q, stride=0), "stride must be an integer >= 1"),
    ("global out of range", lambda: global_attention(q, q, q, global_idx=(8,)), "out of range for N=8"),
    ("even bigbird window", lambda: bigbird_attention(q, q, q, window_blocks=2), "must be odd"),
    ("bad backend", lambda: local_attention(q, q, q, window=1, backend="cuda"), "backend must be one of"),
    ("bad dropout", lambda: local_attention(q, q, q, window=1, dropout_p=1.0), r"dropout_p must be in \[0, 1\)"),
    ("bad scale", lambda: full_attention(q, q, q, scale=float("nan")), "finite float"),
    ("empty sequence", lambda: full_attention(q[:, :, :0], q[:, :, :0], q[:, :, :0]), "N=0"),
    ("plain predicate", lambda: sparse_attention(q, q, q, lambda b, h, i, j: i >= j), "needs an attnzoo Pattern"),
    ("bad dilation", lambda: longformer_attention(q, q, q, window=2, dilation="wide"), "dilation must hold ints"),
    ("unknown feature map", lambda: linear_attention(q, q, q, feature_map="softplus"), "feature_map must be one of"),
    ("chunk 0", lambda: linear_attention(q, q, q, causal=True, chunk=0), "chunk must be an integer >= 1"),
    ("projection shape", lambda: performer_attention(q, q, q, torch.randn(8, 5)), r"projection must be \[M, D=4\]"),
    ("gate without causal", lambda: rfa_attention(q, q, q, torch.randn(8, 4), gate_logits=q[..., 0]), "pass causal=True"),
    ("rfa sigma", lambda: rfa_attention(q, q, q, torch.randn(8, 4), sigma=0.0), "sigma must be a float > 0"),
    ("decay without causal", lambda: feature_attention(q, q, q, log_decay=q[..., 0]), "needs causal=True"),
]


@pytest.mark.parametrize("name,call,match", CALLS, ids=[c[0] for c in CALLS])
def test_functional_errors(name, call, match):
    with pytest.raises(ValueError, match=match):
        call()


BUILDS = [
    ("unknown name", dict(name="flash"), "unknown mechanism 'flash'"),
    ("unknown option", dict(name="local", windw=3), r"no option\(s\) \['windw'\]"),
    ("dim not divisible", dict(name="local", dim=30, heads=4), "multiple of heads"),
    ("negative window", dict(name="local", window=-2), "window must be"),
    ("bad score", dict(name="full", score="cosine"), "'dot' or 'additive'"),
    ("empty global", dict(name="global", global_idx=()), "num_tokens"),
    ("unknown head pattern", dict(name="heads", patterns=("linformer",)), "unknown head pattern"),
    ("too many head patterns", dict(name="heads", heads=1, dim=8, patterns=("local", "strided")), "at most one per head"),
    ("bad head option", dict(name="heads", patterns=("local:windw=2",)), "no option"),
    ("multi-dilation head", dict(name="heads", patterns=("local", "longformer:dilation=(1,2)")), "one dilation per longformer head"),
    ("additive with scale", dict(name="full", score="additive", scale=0.5), "scale applies to dot-product"),
    ("nb_features 0", dict(name="performer", nb_features=0), "nb_features must be an integer >= 1"),
    ("negative nb_features", dict(name="rfa", nb_features=-3), "nb_features must be an integer >= 1"),
    ("unknown kernel", dict(name="performer", kernel="gauss"), "kernel must be 'softmax'"),
    ("deterministic softmax", dict(name="performer", features="deterministic"), "for kernel='relu' only"),
    ("deterministic with nb_features", dict(name="performer", kernel="relu", features="deterministic", nb_features=8), "drop nb_features"),
    ("negative redraw", dict(name="performer", redraw_every=-1), "redraw_every must be"),
    ("gated without causal", dict(name="rfa", gated=True), "causal=True or gated=False"),
    ("unknown feature map", dict(name="linear", feature_map="tanh"), "feature_map must be one of"),
]


@pytest.mark.parametrize("name,kwargs,match", BUILDS, ids=[b[0] for b in BUILDS])
def test_build_errors(name, kwargs, match):
    kwargs = {"dim": 16, "heads": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        attnzoo.build(kwargs.pop("name"), **kwargs)


def test_layer_input_errors():
    layer = attnzoo.build("local", dim=16, heads=2, max_len=10, window=2)
    with pytest.raises(ValueError, match="max_len>=12"):
        layer(torch.randn(1, 12, 16))
    with pytest.raises(ValueError, match=r"\[B, N, C=16\]"):
        layer(torch.randn(1, 8, 15))


def test_step_needs_a_recurrent_causal_layer():
    with pytest.raises(ValueError, match="no recurrent form"):
        attnzoo.build("local", dim=16, heads=2, causal=True).step(torch.randn(1, 16))
    with pytest.raises(ValueError, match="build the layer with causal=True"):
        attnzoo.build("performer", dim=16, heads=2).step(torch.randn(1, 16))
    with pytest.raises(ValueError, match=r"one token \[B, C=16\]"):
        attnzoo.build("linear", dim=16, heads=2, causal=True).step(torch.randn(1, 3, 16))


def test_scalars_are_accepted_where_tuples_are_expected():
    layer = attnzoo.build("longformer", dim=16, heads=2, window=2, dilation=2, global_idx=0)
    assert layer(torch.randn(1, 20, 16)).shape == (1, 20, 16)
