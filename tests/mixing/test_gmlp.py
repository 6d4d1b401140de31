"""gMLP's spatial gating unit against a per-position loop written out here (LayerNorm by its
formula, W's rows summed term by term), the identity it starts as, and the layer's composition."""

from __future__ import annotations

import math

import pytest
import torch

from attnzoo.mixing import GMLP, GMLPConfig, spatial_gating
from tests.mixing import assert_close, assert_future_does_not_reach_the_past, assert_padding_is_invisible, real_outputs_and_grads, with_padding

DIM, MAX_LEN = 8, 16


def layer(causal=False, max_len=MAX_LEN, dim=DIM, **options):
    torch.manual_seed(0)
    return GMLP(GMLPConfig(**options), dim=dim, heads=2, causal=causal, max_len=max_len).double()


def loop_sgu(z, weight, bias, norm_weight, norm_bias, mask, causal, eps=1e-5):
    """out[b, i] = z1[b, i] ⊙ (Σ_{j visible} W[i, j] LN(z2[b, j]) + bias[i]), padded j contributing nothing."""
    bsz, n, two_f = z.shape
    f = two_f // 2
    rows = []
    for b in range(bsz):
        normed = []
        for j in range(n):
            z2 = z[b, j, f:]
            mean = z2.sum() / f
            var = ((z2 - mean) ** 2).sum() / f
            normed.append((z2 - mean) / torch.sqrt(var + eps) * norm_weight + norm_bias)
        for i in range(n):
            gate = bias[i].expand(f)
            for j in range(n):
                if (mask is None or mask[b, j]) and (not causal or j <= i):
                    gate = gate + weight[i, j] * normed[j]
            rows.append(z[b, i, :f] * gate)
    return torch.stack(rows).view(bsz, n, f)


def sgu_inputs(n, f, max_len, seed):
    gen = torch.Generator().manual_seed(seed)
    make = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64).requires_grad_(True)  # noqa: E731
    return make(2, n, 2 * f), make(max_len, max_len), make(max_len), make(f), make(f)


@pytest.mark.parametrize("pad", ["none", "end", "holes"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("n,max_len", [(7, 7), (7, 11), (13, 16)], ids=["N7-L7", "N7-L11", "N13-L16"])
def test_sgu_matches_the_loop(n, max_len, causal, pad):
    inputs = sgu_inputs(n, 5, max_len, seed=n + max_len)
    mask = with_padding(2, n, pad)
    got = real_outputs_and_grads(lambda *t: spatial_gating(*t, mask=mask, causal=causal), inputs, mask)
    want = real_outputs_and_grads(lambda *t: loop_sgu(*t, mask, causal), inputs, mask)
    assert_close(got, want, names=["out", "dz", "dW", "db", "dnorm_weight", "dnorm_bias"])


def test_sgu_matches_the_loop_at_an_awkward_size():
    """N = 113 of max_len 120, F = 60, padding holes."""
    inputs = sgu_inputs(113, 60, 120, seed=7)
    mask = with_padding(2, 113, "holes")
    got = real_outputs_and_grads(lambda *t: spatial_gating(*t, mask=mask), inputs, mask)
    want = real_outputs_and_grads(lambda *t: loop_sgu(*t, mask, False), inputs, mask)
    assert_close(got, want, names=["out", "dz", "dW", "db", "dnorm_weight", "dnorm_bias"])


@pytest.mark.parametrize("n", [16, 9], ids=["N=max_len", "N<max_len"])
@pytest.mark.parametrize("init_eps", [1e-3, 1e-1], ids=["eps1e-3", "eps1e-1"])
def test_at_init_the_unit_is_close_to_the_identity_gating(init_eps, n):
    """With |W| <= init_eps / L, b = 1 and LayerNorm outputs bounded by sqrt(F - 1) (unit weight, zero
    bias): |SGU(z) - z1| <= |z1| · init_eps · (N / L) · sqrt(F - 1), element by element."""
    m = layer(init_eps=init_eps)
    f = m.config.expansion * DIM
    assert m.spatial_weight.abs().max() <= init_eps / MAX_LEN and (m.spatial_bias == 1).all()
    z = torch.randn(2, n, 2 * f, dtype=torch.float64)
    z1 = z[..., :f]
    dev = (m.sgu(z) - z1).abs()
    bound = z1.abs() * init_eps * (n / MAX_LEN) * math.sqrt(f - 1)
    assert (dev <= bound * (1 + 1e-12)).all()
    assert dev.max() > 0  # W is used


def test_layer_is_proj_out_of_sgu_of_gelu_of_proj_in():
    m = layer(causal=True)
    with torch.no_grad():
        m.spatial_weight.normal_()  # away from the near-identity init
        m.norm.weight.normal_()
    x = torch.randn(2, 13, DIM, dtype=torch.float64, requires_grad=True)
    mask = with_padding(2, 13, "holes")
    params = list(m.parameters())

    def written_out(x, *_):
        h = x @ m.proj_in.weight.T + m.proj_in.bias
        h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))  # GELU
        g = loop_sgu(h, m.spatial_weight, m.spatial_bias, m.norm.weight, m.norm.bias, mask, causal=True, eps=m.norm.eps)
        return g @ m.proj_out.weight.T + m.proj_out.bias

    got = real_outputs_and_grads(lambda x, *_: m(x, mask), (x, *params), mask)
    want = real_outputs_and_grads(written_out, (x, *params), mask)
    assert_close(got, want, names=["out", "dx", *(name for name, _ in m.named_parameters())])
    assert m.proj_in.out_features == 2 * 3 * DIM and m.proj_out.in_features == 3 * DIM  # d_ffn = 6·d_model, halved


def test_causal_future_changes_leave_the_past_unchanged():
    m = layer(causal=True, max_len=64)
    with torch.no_grad():
        m.spatial_weight.normal_()
    assert_future_does_not_reach_the_past(m, DIM)


def test_causal_masks_the_weight_in_every_call_not_only_at_init():
    m = layer(causal=True)
    x = torch.randn(2, 13, DIM, dtype=torch.float64)
    with torch.no_grad():
        m.spatial_weight.normal_()
        y = m(x)
        m.spatial_weight.add_(torch.ones(MAX_LEN, MAX_LEN, dtype=torch.float64).triu(1) * 1e3)  # the future's entries only
        torch.testing.assert_close(m(x), y, atol=0, rtol=0)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_padding_content_changes_no_real_output_and_end_padding_is_the_shorter_sequence(causal):
    m = layer(causal, max_len=64)
    with torch.no_grad():
        m.spatial_weight.normal_()
    assert_padding_is_invisible(m, DIM)


def test_shorter_inputs_use_the_first_n_rows_and_columns():
    m = layer(max_len=20)
    n = 13
    x = torch.randn(2, n, DIM, dtype=torch.float64)
    with torch.no_grad():
        m.spatial_weight.normal_()
        y = m(x)
        m.spatial_weight[n:].fill_(1e3)
        m.spatial_weight[:, n:].fill_(1e3)
        m.spatial_bias[n:].fill_(1e3)
        torch.testing.assert_close(m(x), y, atol=0, rtol=0)


def test_gradients_reach_every_parameter():
    m = layer(causal=True, max_len=64)
    x = torch.randn(2, 45, DIM, dtype=torch.float64)
    m(x, with_padding(2, 45, "holes")).square().sum().backward()
    names = {name for name, _ in m.named_parameters()}
    assert names == {"proj_in.weight", "proj_in.bias", "norm.weight", "norm.bias", "spatial_weight", "spatial_bias"} | {
        "proj_out.weight",
        "proj_out.bias",
    }
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert m.computed_pairs(4).equal(torch.ones(1, 4, 4, dtype=torch.bool).tril())


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match=r"gmlp needs max_len \(its token-mixing matrix has one row per position\).*max_len="):
        GMLP(GMLPConfig(), dim=DIM, heads=2, causal=False, max_len=None)
    with pytest.raises(ValueError, match=r"N=70 exceeds max_len=64.*max_len>=70"):
        layer(max_len=64)(torch.randn(1, 70, DIM, dtype=torch.float64))
    with pytest.raises(ValueError, match="expansion must be an integer >= 1"):
        layer(expansion=0)
    with pytest.raises(ValueError, match="init_eps must be a finite float >= 0"):
        layer(init_eps=-1.0)
    with pytest.raises(ValueError, match=r"x must be a float tensor \[B, N, C=8\]"):
        layer()(torch.randn(1, 5, 7, dtype=torch.float64))
    z, w, b, nw, nb = sgu_inputs(5, 4, 8, seed=0)
    with pytest.raises(ValueError, match="even channel count"):
        spatial_gating(z[..., :7], w, b, nw, nb)
    with pytest.raises(ValueError, match=r"N=5 exceeds max_len=4"):
        spatial_gating(z, w[:4, :4], b[:4], nw, nb)
    with pytest.raises(ValueError, match=r"norm_weight and norm_bias must be \[F=4\]"):
        spatial_gating(z, w, b, nw[:3], nb)
