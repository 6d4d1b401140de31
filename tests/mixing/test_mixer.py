"""MLP-Mixer's token-mixing MLP against a per-channel loop of F.linear written out here, with the
causal masks built entry by entry from the definition (unit (j, r) reads inputs i <= j; output i
reads units of positions j <= i)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnzoo.mixing import Mixer, MixerConfig, token_mixing
from tests.mixing import assert_close, assert_future_does_not_reach_the_past, assert_padding_is_invisible, real_outputs_and_grads, with_padding

DIM, MAX_LEN = 6, 16


def layer(causal=False, max_len=MAX_LEN, dim=DIM, **options):
    torch.manual_seed(0)
    return Mixer(MixerConfig(**options), dim=dim, heads=2, causal=causal, max_len=max_len).double()


def loop_mixing(x, w1, b1, w2, b2, mask, causal):
    """Every hidden unit (all E·L of them), W1's columns and W2's rows cut to N; causal entries
    zeroed by the definition; padded rows of x zeroed; one F.linear pair per (batch, channel)."""
    bsz, n, c = x.shape
    m, length = w1.shape
    e = m // length
    w1, w2, b2 = w1[:, :n], w2[:n], b2[:n]
    if causal:
        keep1 = torch.tensor([[float(i <= unit // e) for i in range(n)] for unit in range(m)], dtype=x.dtype)
        keep2 = torch.tensor([[float(unit // e <= i) for unit in range(m)] for i in range(n)], dtype=x.dtype)
        w1, w2 = w1 * keep1, w2 * keep2
    if mask is not None:
        x = torch.where(mask[..., None], x, torch.zeros_like(x))
    cols = [F.linear(F.gelu(F.linear(x[b, :, ch], w1, b1)), w2, b2) for b in range(bsz) for ch in range(c)]
    return torch.stack(cols).view(bsz, c, n).transpose(1, 2)


def mixer_inputs(n, max_len, expansion, seed):
    gen = torch.Generator().manual_seed(seed)
    make = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64).requires_grad_(True)  # noqa: E731
    m = expansion * max_len
    return make(2, n, DIM), make(m, max_len), make(m), make(max_len, m), make(max_len)


@pytest.mark.parametrize("pad", ["none", "end", "holes"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("expansion", [1, 2], ids=["E1", "E2"])
@pytest.mark.parametrize("n,max_len", [(7, 7), (7, 11), (13, 16)], ids=["N7-L7", "N7-L11", "N13-L16"])
def test_token_mixing_matches_the_per_channel_loop(n, max_len, expansion, causal, pad):
    inputs = mixer_inputs(n, max_len, expansion, seed=n + max_len + expansion)
    mask = with_padding(2, n, pad)
    got = real_outputs_and_grads(lambda *t: token_mixing(*t, mask=mask, causal=causal), inputs, mask)
    want = real_outputs_and_grads(lambda *t: loop_mixing(*t, mask, causal), inputs, mask)
    assert_close(got, want, names=["out", "dx", "dw1", "db1", "dw2", "db2"])


def test_token_mixing_matches_the_per_channel_loop_at_an_awkward_size():
    """N = 113 of max_len 120, causal, padding holes."""
    inputs = mixer_inputs(113, 120, 1, seed=7)
    mask = with_padding(2, 113, "holes")
    got = real_outputs_and_grads(lambda *t: token_mixing(*t, mask=mask, causal=True), inputs, mask)
    want = real_outputs_and_grads(lambda *t: loop_mixing(*t, mask, True), inputs, mask)
    assert_close(got, want, names=["out", "dx", "dw1", "db1", "dw2", "db2"])


def test_layer_is_the_function_on_its_parameters():
    m = layer(causal=True, expansion=2)
    assert {name: tuple(p.shape) for name, p in m.named_parameters()} == {"w1": (32, 16), "b1": (32,), "w2": (16, 32), "b2": (16,)}
    x = torch.randn(2, 13, DIM, dtype=torch.float64)
    mask = with_padding(2, 13, "holes")
    want = loop_mixing(x, m.w1, m.b1, m.w2, m.b2, mask, causal=True)
    torch.testing.assert_close(m(x, mask)[mask], want[mask], atol=1e-10, rtol=1e-10)
    assert m.is_layer and not m.info.qk and m.computed_pairs(4).equal(torch.ones(1, 4, 4, dtype=torch.bool).tril())


@pytest.mark.parametrize("expansion", [1, 3], ids=["E1", "E3"])
def test_causal_future_changes_leave_the_past_unchanged(expansion):
    assert_future_does_not_reach_the_past(layer(causal=True, max_len=64, expansion=expansion), DIM)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_padding_content_changes_no_real_output_and_end_padding_is_the_shorter_sequence(causal):
    """Padded tokens are zero inputs: with padding at the end the real positions get what the
    unpadded sequence gets (non-causal: W1's extra columns meet zeros; causal: no real output
    reads a later unit). Padding in holes keeps positions, so it is not the packed sequence."""
    assert_padding_is_invisible(layer(causal, max_len=64), DIM)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_shorter_inputs_use_the_first_n_positions(causal):
    """Non-causal: W1's first N columns, W2's and b2's first N rows, every hidden unit; causal:
    also only the units of the first N positions (rows N·E.. of W1 and b1, columns of W2)."""
    m = layer(causal, max_len=20, expansion=2)
    n = 13
    x = torch.randn(2, n, DIM, dtype=torch.float64)
    with torch.no_grad():
        y = m(x)
        m.w1[:, n:].fill_(1e3)
        m.w2[n:].fill_(1e3)
        m.b2[n:].fill_(1e3)
        if causal:
            m.w1[2 * n :].fill_(1e3)
            m.b1[2 * n :].fill_(1e3)
            m.w2[:, 2 * n :].fill_(1e3)
        torch.testing.assert_close(m(x), y, atol=0, rtol=0)
        if not causal:
            m.b1[-1] += 1.0  # the last hidden unit belongs to a position past N; it still counts
            assert not torch.equal(m(x), y)


def test_init_is_nn_linears_and_gradients_reach_every_parameter():
    m = layer(max_len=64, expansion=2)
    assert m.w1.abs().max() <= 64**-0.5 and m.w2.abs().max() <= 128**-0.5 and m.b2.abs().max() <= 128**-0.5
    x = torch.randn(2, 45, DIM, dtype=torch.float64)
    m(x, with_padding(2, 45, "holes")).square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match=r"mixer needs max_len.*max_len="):
        Mixer(MixerConfig(), dim=DIM, heads=2, causal=False, max_len=None)
    with pytest.raises(ValueError, match=r"N=70 exceeds max_len=64.*max_len>=70"):
        layer(max_len=64)(torch.randn(1, 70, DIM, dtype=torch.float64))
    with pytest.raises(ValueError, match="expansion must be an integer >= 1"):
        layer(expansion=0)
    with pytest.raises(ValueError, match=r"x must be a float tensor \[B, N, C=6\]"):
        layer()(torch.randn(1, 5, 7, dtype=torch.float64))
    x, w1, b1, w2, b2 = mixer_inputs(5, 8, 1, seed=0)
    with pytest.raises(ValueError, match=r"need w1 \[M, L\], b1 \[M\], w2 \[L, M\], b2 \[L\]"):
        token_mixing(x, w1, b1[:7], w2, b2)
    with pytest.raises(ValueError, match="causal needs E hidden units per position"):
        token_mixing(x, w1[:7], b1[:7], w2[:, :7], b2, causal=True)
    with pytest.raises(ValueError, match=r"N=5 exceeds max_len=4"):
        token_mixing(x, w1[:, :4], b1, w2[:4], b2[:4])
