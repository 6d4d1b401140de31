"""Linformer against softmax(q (Eᵀk)ᵀ · s)(Fᵀv) written out here, and against exact attention when E = F = I."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attnzoo.core.multihead import MultiHeadAttention
from attnzoo.core.reference import reference_attention
from attnzoo.lowrank import Linformer, LinformerConfig, linformer_attention, linformer_projection
from tests.conftest import make_mask, make_qkv
from tests.lowrank import assert_close, real_outputs_and_grads

SIZES = [(1, 8), (7, 60), (113, 60)]  # (N, D)
H = 2


def dense_linformer(q, k, v, e, f, mask, scale):
    """Written out: padded rows of k, v set to 0, E = e[:N] ([N, K] or [H, N, K]), then the dense formula."""
    n = q.shape[2]
    if mask is not None:
        pad = ~mask[:, None, :, None]
        k, v = torch.where(pad, torch.zeros_like(k), k), torch.where(pad, torch.zeros_like(v), v)
    e, f = e[..., :n, :], f[..., :n, :]
    k_proj = e.transpose(-1, -2) @ k  # [B, H, K, D] (E broadcasts over b, and over h when shared)
    v_proj = f.transpose(-1, -2) @ v
    weights = torch.softmax(q @ k_proj.transpose(-1, -2) * scale, dim=-1)
    return weights @ v_proj


def proj(shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).div(shape[-2] ** 0.5).requires_grad_(True)


@pytest.mark.parametrize("per_head", [False, True], ids=["shared", "per-head"])
@pytest.mark.parametrize("n,d", SIZES, ids=[f"N{n}-D{d}" for n, d in SIZES])
def test_identity_projections_with_k_equal_n_are_full_attention(n, d, per_head):
    q, k, v = make_qkv(2, H, n, d, seed=n)
    eye = torch.eye(n, dtype=torch.float64).expand(H, n, n) if per_head else torch.eye(n, dtype=torch.float64)
    got = real_outputs_and_grads(lambda *t: linformer_attention(*t, eye, eye), (q, k, v), None)
    want = real_outputs_and_grads(lambda *t: reference_attention(*t, scale=d**-0.5), (q, k, v), None)
    assert_close(got, want)


# (id, proj_k shape, proj_v shape or "same" for key-value sharing); N_max = 130 > every N
PROJ = [
    ("headwise", (130, 16), (130, 16)),
    ("per-head", (H, 130, 16), (H, 130, 16)),
    ("kv-shared", (130, 16), "same"),
    ("k-per-head-v-shared", (H, 130, 5), (130, 5)),
]


@pytest.mark.parametrize("pad", ["none", "end", "middle"])
@pytest.mark.parametrize("n,d", SIZES, ids=[f"N{n}-D{d}" for n, d in SIZES])
@pytest.mark.parametrize("name,shape_k,shape_v", PROJ, ids=[p[0] for p in PROJ])
def test_matches_dense_formula(name, shape_k, shape_v, n, d, pad):
    q, k, v = make_qkv(2, H, n, d, seed=n)
    e = proj(shape_k, 1)
    f = e if shape_v == "same" else proj(shape_v, 2)
    mask = make_mask(2, n, pad)
    got = real_outputs_and_grads(lambda *t: linformer_attention(*t, mask=mask), (q, k, v, e, f), mask)
    want = real_outputs_and_grads(lambda *t: dense_linformer(*t, mask, d**-0.5), (q, k, v, e, f), mask)
    assert_close(got, want)


@pytest.mark.parametrize("scale", [1.0, 0.3, -2.0], ids=["scale-1", "scale-0.3", "scale-neg2"])
def test_scale_is_honoured(scale):
    q, k, v = make_qkv(2, H, 45, 60)
    e, f = proj((64, 16), 1), proj((64, 16), 2)
    mask = make_mask(2, 45, "end")
    got = real_outputs_and_grads(lambda *t: linformer_attention(*t, mask=mask, scale=scale), (q, k, v, e, f), mask)
    want = real_outputs_and_grads(lambda *t: dense_linformer(*t, mask, scale), (q, k, v, e, f), mask)
    assert_close(got, want)


def test_padding_content_changes_nothing():
    q, k, v = make_qkv(2, H, 50, 16, requires_grad=False)
    e, f = proj((64, 12), 1).detach(), proj((H, 64, 12), 2).detach()
    mask = make_mask(2, 50, "middle") & make_mask(2, 50, "end")
    y = linformer_attention(q, k, v, e, f, mask=mask)
    k2, v2 = k.clone(), v.clone()
    pad = ~mask[:, None, :].expand(2, H, 50)
    k2[pad], v2[pad] = 1e6, -1e6
    y2 = linformer_attention(q, k2, v2, e, f, mask=mask)
    torch.testing.assert_close(y2, y, atol=1e-10, rtol=1e-10)  # padded queries too: q is unchanged


def test_shorter_inputs_use_the_first_n_rows():
    q, k, v = make_qkv(2, H, 20, 8, requires_grad=False)
    e, f = proj((50, 6), 1).detach(), proj((50, 6), 2).detach()
    y = linformer_attention(q, k, v, e, f)
    torch.testing.assert_close(y, linformer_attention(q, k, v, e[:20], f[:20]), atol=0, rtol=0)
    e2, f2 = e.clone(), f.clone()
    e2[20:], f2[20:] = 1e3, -1e3
    torch.testing.assert_close(linformer_attention(q, k, v, e2, f2), y, atol=0, rtol=0)


def layer(max_len=64, heads=H, head_dim=8, **options):
    torch.manual_seed(0)
    core = Linformer(LinformerConfig(**options), heads=heads, head_dim=head_dim, causal=False, max_len=max_len)
    return MultiHeadAttention(heads * head_dim, heads, core, max_len=max_len).double()


# (sharing, parameter name -> shape) at max_len=64, k=16
SHARING = [
    ("none", {"proj_k": (H, 64, 16), "proj_v": (H, 64, 16)}),
    ("headwise", {"proj_k": (64, 16), "proj_v": (64, 16)}),
    ("kv", {"proj": (64, 16)}),
]


@pytest.mark.parametrize("sharing,shapes", SHARING, ids=[s[0] for s in SHARING])
def test_sharing_owns_the_right_projections_and_gradients_reach_them(sharing, shapes):
    m = layer(k=16, sharing=sharing)
    got = {name: tuple(p.shape) for name, p in m.core.named_parameters()}
    assert got == shapes
    x = torch.randn(2, 45, 16, dtype=torch.float64)
    mask = torch.ones(2, 45, dtype=torch.bool)
    mask[1, 30:] = False
    m(x, mask).square().sum().backward()
    for name, p in m.core.named_parameters():
        assert p.grad is not None and p.grad[:30].abs().sum() > 0, name
        assert p.grad[..., 45:, :].abs().sum() == 0, f"{name}: rows past N are unused"


def test_layerwise_sharing_one_parameter_for_every_layer():
    shared = linformer_projection(64, 16)
    layers = nn.ModuleList([layer(k=16, sharing="kv", projection=shared) for _ in range(3)])
    assert len(list(layers.parameters())) == 3 * 4 + 1  # each layer's qkv and out weights and biases, one projection
    assert all(m.core.proj is layers[0].core.proj for m in layers)
    x = torch.randn(2, 30, 16, dtype=torch.float64)
    y = x
    for m in layers:
        y = m(y)
    y.sum().backward()
    assert layers[0].core.proj.grad is not None and layers[0].core.proj.grad.abs().sum() > 0


def test_default_k_is_256_or_max_len():
    assert Linformer(LinformerConfig(), heads=2, head_dim=8, causal=False, max_len=1000).k == 256
    assert Linformer(LinformerConfig(), heads=2, head_dim=8, causal=False, max_len=100).k == 100
    assert Linformer(LinformerConfig(k=300), heads=2, head_dim=8, causal=False, max_len=100).k == 300  # explicit k is honoured


def test_init_follows_the_authors_code():
    p = linformer_projection(512, 64)
    bound = (3 / (512 + 64)) ** 0.5
    assert p.abs().max() <= bound and p.abs().max() > 0.9 * bound


def test_implied_weights_are_the_dense_map_and_skip_padding():
    m = layer(k=16)
    q, k, v = make_qkv(2, H, 30, 8, requires_grad=False)
    mask = make_mask(2, 30, "middle")
    a = m.core.implied_weights(q, k, mask)
    assert a.shape == (2, H, 30, 30)
    assert (a[~mask[:, None, None, :].expand_as(a)] == 0).all()
    torch.testing.assert_close(a @ v, m.core(q, k, v, mask=mask), atol=1e-10, rtol=1e-10)
    e = m.core.proj_k.detach()[:30]
    f = m.core.proj_v.detach()[:30]
    k0 = k * mask[:, None, :, None]
    want = torch.softmax(q @ (e.T @ k0).transpose(-1, -2) * 8**-0.5, -1) @ (f.T * mask[:, None, None, :])
    torch.testing.assert_close(a, want, atol=1e-10, rtol=1e-10)
    assert m.core.computed_pairs(5).all() and m.core.computed_pairs(5).shape == (1, 5, 5)


def test_dropout_only_in_training():
    m = layer(k=16, dropout_p=0.5)
    x = torch.randn(2, 20, 16, dtype=torch.float64)
    m.eval()
    torch.testing.assert_close(m(x), m(x), atol=0, rtol=0)
    m.train()
    assert not torch.allclose(m(x), m(x))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_precision_error_at_most_twice_the_naive_one(dtype):
    """flash-attention's rule: within 2× the error of the dense formula on the same rounded inputs
    (float32 math, rounded output), both against float64."""
    q, k, v = make_qkv(1, H, 257, 64, requires_grad=False)
    e, f = proj((257, 32), 1).detach(), proj((257, 32), 2).detach()
    exact = dense_linformer(q, k, v, e, f, None, 0.125)
    low = [t.to(dtype) for t in (q, k, v, e, f)]
    fast = linformer_attention(*low)
    naive = dense_linformer(*[t.float() for t in low], None, 0.125).to(dtype)
    assert fast.dtype == dtype
    err = lambda y: (y.double() - exact).abs().max().item()  # noqa: E731
    assert err(fast) <= 2 * err(naive)


def test_errors_name_the_fix():
    q, k, v = make_qkv(1, H, 10, 8, requires_grad=False)
    e = torch.randn(8, 4, dtype=torch.float64)
    e10 = torch.randn(10, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="causal=True is not supported.*leaks the future.*compressed"):
        linformer_attention(q, k, v, e10, e10, causal=True)
    with pytest.raises(ValueError, match=r"max_len >= N: got N=10, max_len=8.*max_len=10"):
        linformer_attention(q, k, v, e, e)
    with pytest.raises(ValueError, match=r"\[H=2, N_max, K\]"):
        linformer_attention(q, k, v, torch.randn(3, 10, 4, dtype=torch.float64), e)
    with pytest.raises(ValueError, match="same length K"):
        linformer_attention(q, k, v, torch.randn(10, 4, dtype=torch.float64), torch.randn(10, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="causal"):
        Linformer(LinformerConfig(), heads=2, head_dim=8, causal=True, max_len=64)
    with pytest.raises(ValueError, match="needs max_len.*max_len="):
        Linformer(LinformerConfig(), heads=2, head_dim=8, causal=False, max_len=None)
    with pytest.raises(ValueError, match="sharing must be one of"):
        Linformer(LinformerConfig(sharing="layerwise"), heads=2, head_dim=8, causal=False, max_len=64)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        Linformer(LinformerConfig(k=0), heads=2, head_dim=8, causal=False, max_len=64)
    shared = linformer_projection(64, 16)
    with pytest.raises(ValueError, match="sharing='kv'"):
        Linformer(LinformerConfig(k=16, projection=shared), heads=2, head_dim=8, causal=False, max_len=64)
    with pytest.raises(ValueError, match=r"\[max_len, k\] = \[32, 16\].*max_len=64, k=16"):
        Linformer(LinformerConfig(k=16, sharing="kv", projection=shared), heads=2, head_dim=8, causal=False, max_len=32)
    m = layer(max_len=16, k=4)
    with pytest.raises(ValueError, match="max_len"):
        m(torch.randn(1, 17, 16, dtype=torch.float64))


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("pad", ["none", "middle"])
@pytest.mark.parametrize("sharing", ["headwise", "kv", "none"])
def test_the_layer_equals_the_formula_on_its_own_projections(sharing, pad, bias):
    """The layer projects along the sequence before its k/v projection where E is shared by the
    heads ((Eᵀ X) W instead of Eᵀ (X W)); the result is the written-out formula on q, k, v = x W + b."""
    torch.manual_seed(0)
    heads, head_dim, n = H, 8, 45
    core = Linformer(LinformerConfig(k=16, sharing=sharing), heads=heads, head_dim=head_dim, causal=False, max_len=64)
    m = MultiHeadAttention(heads * head_dim, heads, core, max_len=64, bias=bias).double()
    x = torch.randn(2, n, heads * head_dim, dtype=torch.float64, requires_grad=True)
    mask = make_mask(2, n, pad)
    params = [x, *m.parameters()]
    got = m(x, mask)
    split = lambda t: t.unflatten(-1, (heads, head_dim)).transpose(1, 2)  # noqa: E731
    q, k, v = (split(t) for t in (x @ m.qkv.weight.T + (m.qkv.bias if bias else 0)).chunk(3, dim=-1))
    e, f = core.projections()
    want = m.out(dense_linformer(q, k, v, e, f, mask, head_dim**-0.5).transpose(1, 2).flatten(2))
    sel = torch.ones(2, n, dtype=torch.bool) if mask is None else mask
    torch.testing.assert_close(got[sel], want[sel], atol=1e-12, rtol=1e-10)
    g = torch.randn_like(got) * sel[..., None]
    for a, b in zip(torch.autograd.grad((got * g).sum(), params), torch.autograd.grad((want * g).sum(), params)):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
