"""The RNN view: recurrent step = chunked prefix sums = masked quadratic form, and states carry
exactly from one segment (or token) to the next."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import attnzoo
from attnzoo.functional import efficient_attention, linear_attention, reference_feature_attention
from attnzoo.model.encoder import Encoder, EncoderConfig
from tests.conftest import make_qkv, outputs_and_grads
from tests.kernel.test_kernel_attention import assert_close

CHUNKS = [1, 5, 16, 113, 500]


def elu1(x):
    return F.elu(x) + 1


def recurrent(step, q, k, v):
    """Token by token through ``step(q_t, k_t, v_t, state) -> (out_t, state)``."""
    state, outs = None, []
    for t in range(q.shape[2]):
        out, state = step(q[:, :, t], k[:, :, t], v[:, :, t], state)
        outs.append(out)
    return torch.stack(outs, dim=2)


@pytest.mark.parametrize("chunk", CHUNKS, ids=[f"chunk{c}" for c in CHUNKS])
def test_elu_causal_chunked_equals_quadratic_forward_and_backward(chunk):
    q, k, v = make_qkv(2, 3, 113, 60)
    got = outputs_and_grads(lambda *t: linear_attention(*t, causal=True, chunk=chunk), q, k, v)
    want = outputs_and_grads(lambda a, b, c: reference_feature_attention(elu1(a), elu1(b), c, causal=True), q, k, v)
    assert_close(got, want)


def test_elu_causal_recurrent_equals_quadratic_forward_and_backward():
    q, k, v = make_qkv(2, 3, 113, 60)
    core = attnzoo.build("linear", dim=8, heads=1, causal=True).core
    got = outputs_and_grads(lambda *t: recurrent(core.step, *t), q, k, v)
    want = outputs_and_grads(lambda a, b, c: reference_feature_attention(elu1(a), elu1(b), c, causal=True), q, k, v)
    assert_close(got, want)


# Every kernel mechanism's core: its step, token by token, equals its own causal forward.
CORES = [
    ("linear", {}),
    ("linear-identity", dict(feature_map="identity")),
    ("efficient", {}),
    ("performer", dict(nb_features=32)),
    ("performer-trig", dict(kernel="trig", nb_features=32)),
    ("performer-lra", dict(kernel="relu", features="deterministic")),
    ("rfa", dict(nb_features=32)),
    ("rfa-gated", dict(nb_features=32, gated=True)),
]


def core_of(name, opts, head_dim=60, chunk=16):
    torch.manual_seed(0)
    layer = attnzoo.build(name.split("-")[0], dim=2 * head_dim, heads=2, causal=True, chunk=chunk, **opts).double()
    if name == "rfa-gated":  # a gate that actually varies with the key
        with torch.no_grad():
            layer.core.gate_weight.normal_()
    return layer.core


@pytest.mark.parametrize("name,opts", CORES, ids=[c[0] for c in CORES])
def test_step_equals_parallel_forward(name, opts):
    q, k, v = make_qkv(2, 2, 37, 60)
    if name == "performer-trig":
        q, k = (t.detach().mul(0.5).requires_grad_(True) for t in (q, k))
    core = core_of(name, opts)
    assert_close(outputs_and_grads(lambda *t: recurrent(core.step, *t), q, k, v), outputs_and_grads(core, q, k, v))


@pytest.mark.parametrize("split", [1, 20, 36])
@pytest.mark.parametrize("name,opts", [c for c in CORES if c[0] != "efficient"], ids=[c[0] for c in CORES if c[0] != "efficient"])
def test_state_carries_across_segments(name, opts, split):
    """Attention over x[:t] returns its state; x[t:] from that state equals the whole sequence."""
    from attnzoo.functional import feature_attention

    q, k, v = make_qkv(1, 2, 37, 60, requires_grad=False)
    core = core_of(name, opts)
    phi_q, phi_k = core.features(q, k)
    decay = core.log_decay(k)
    run = lambda sl, state=None: feature_attention(  # noqa: E731
        phi_q[:, :, sl], phi_k[:, :, sl], v[:, :, sl], causal=True, normalize=core.normalize, chunk=16,
        log_decay=None if decay is None else decay[:, :, sl], initial_state=state, return_state=True,
    )
    whole, _ = run(slice(None))
    first, state = run(slice(0, split))
    second, _ = run(slice(split, None), state)
    torch.testing.assert_close(torch.cat([first, second], dim=2), whole, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("split", [1, 20, 36])
def test_efficient_state_carries_across_segments(split):
    q, k, v = make_qkv(2, 2, 37, 60, requires_grad=False)
    k = k * 3  # keys far apart: the per-feature reference has to move between segments
    whole = efficient_attention(q, k, v, causal=True, chunk=16)
    first, state = efficient_attention(q[:, :, :split], k[:, :, :split], v[:, :, :split], causal=True, chunk=16, return_state=True)
    second = efficient_attention(q[:, :, split:], k[:, :, split:], v[:, :, split:], causal=True, chunk=16, initial_state=state)
    torch.testing.assert_close(torch.cat([first, second], dim=2), whole, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("name", ["linear", "performer", "rfa"])
def test_layer_and_encoder_decode_token_by_token(name):
    torch.manual_seed(0)
    layer = attnzoo.build(name, dim=32, heads=4, causal=True).double()
    x = torch.randn(2, 25, 32, dtype=torch.float64)
    state, ys = None, []
    for t in range(25):
        y, state = layer.step(x[:, t], state)
        ys.append(y)
    torch.testing.assert_close(torch.stack(ys, 1), layer(x), atol=1e-10, rtol=1e-10)
    # constant memory: the state does not grow with the number of tokens decoded
    assert all(s.shape[:2] == (2, 4) for s in state if s is not None)

    encoder = Encoder(EncoderConfig(dim=32, depth=2, heads=4), lambda: attnzoo.build(name, dim=32, heads=4, causal=True)).double().eval()
    states, ys = None, []
    for t in range(25):
        y, states = encoder.step(x[:, t], states)
        ys.append(y)
    torch.testing.assert_close(torch.stack(ys, 1), encoder(x), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("name,opts", CORES, ids=[c[0] for c in CORES])
def test_implied_weights_are_the_map_the_output_uses(name, opts):
    q, k, v = make_qkv(2, 2, 21, 60, requires_grad=False)
    core = core_of(name, opts)
    mask = torch.ones(2, 21, dtype=torch.bool)
    mask[1, 15:] = False
    w = core.implied_weights(q, k, mask)
    assert w.shape == (2, 2, 21, 21)
    torch.testing.assert_close((w @ v)[0], core(q, k, v, mask)[0], atol=1e-10, rtol=1e-10)
    assert w.triu(1).abs().max() == 0, "causal: no weight on future keys"
    assert w[1, :, :15, 15:].abs().max() == 0, "no weight on padded keys"
    if core.normalize:
        torch.testing.assert_close(w[0].sum(-1), torch.ones(2, 21, dtype=w.dtype), atol=1e-10, rtol=0)
