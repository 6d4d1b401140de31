"""Synthesizer against per-row loops written out here (each kind's logits from the paper's formula,
a masked softmax, the weighted sum of values), a known mixing P reproduced from logits log P, and
softmax(R1 R2ᵀ) V formed densely."""

from __future__ import annotations

import math

import pytest
import torch

from attnzoo.mixing import (
    Synthesizer,
    SynthesizerConfig,
    dense_logits,
    factorized_dense_logits,
    factorized_random_attention,
    synthesizer_attention,
)
from tests.mixing import assert_close, assert_future_does_not_reach_the_past, assert_padding_is_invisible, real_outputs_and_grads, with_padding

KINDS = ["dense", "random", "factorized_dense", "factorized_random"]
DIM, HEADS, MAX_LEN = 8, 2, 16


def layer(kind="dense", causal=False, max_len=MAX_LEN, dim=DIM, heads=HEADS, **options):
    torch.manual_seed(0)
    return Synthesizer(SynthesizerConfig(kind=kind, **options), dim=dim, heads=heads, causal=causal, max_len=max_len).double()


def randomise_mixture(m):
    """Make (w_s, w_d) unequal so a swapped or dropped term shows."""
    if m.config.dot:
        with torch.no_grad():
            m.mix.copy_(torch.tensor([0.7, -0.4], dtype=torch.float64))


def row_logits(m, x, b, h, i, n):
    """Logits of query i in head h, written out from the paper's formula for m's kind: [N]."""
    c = m.config
    d = DIM // HEADS
    xi = x[b, i]
    if c.kind == "dense":
        hidden = torch.relu(m.mlp_in.weight @ xi + m.mlp_in.bias)
        s = torch.stack([m.w2[h, j] @ hidden + m.b2[h, j] for j in range(n)])
    elif c.kind == "random":
        s = m.r[h, i, :n]
    elif c.kind == "factorized_dense":
        a_size, b_size = m.sizes
        a = (m.proj_a.weight @ xi + m.proj_a.bias)[h * a_size : (h + 1) * a_size]
        bb = (m.proj_b.weight @ xi + m.proj_b.bias)[h * b_size : (h + 1) * b_size]
        s = torch.stack([a[j % a_size] * bb[j // a_size] for j in range(n)])
    else:
        s = torch.stack([m.r1[h, i] @ m.r2[h, j] for j in range(n)])
    if not c.dot:
        return s
    w = torch.softmax(m.mix, 0)
    wq, wk = m.qk.weight.chunk(2)
    bq, bk = m.qk.bias.chunk(2)
    q = (wq @ xi + bq)[h * d : (h + 1) * d]
    k = torch.stack([(wk @ x[b, j] + bk)[h * d : (h + 1) * d] for j in range(n)])
    return w[0] * s + w[1] * (k @ q) / math.sqrt(d)


def loop_layer(m, x, mask):
    """The layer written out row by row: out(concat_h Σ_j softmax_j(logits over visible j) value(x)_j)."""
    bsz, n, _ = x.shape
    d = DIM // HEADS
    v = x @ m.value.weight.T + m.value.bias  # [B, N, C]
    rows = []
    for b in range(bsz):
        for i in range(n):
            heads = []
            for h in range(HEADS):
                visible = [j for j in range(n) if (mask is None or mask[b, j]) and (not m.causal or j <= i)]
                if mask is not None and not mask[b, i]:
                    heads.append(torch.zeros(d, dtype=x.dtype))  # padded query: any value
                    continue
                s = row_logits(m, x, b, h, i, n)[visible]
                p = torch.exp(s - s.max())
                p = p / p.sum()
                heads.append(p @ v[b, visible, h * d : (h + 1) * d])
            rows.append(torch.cat(heads))
    y = torch.stack(rows).view(bsz, n, DIM)
    return y @ m.out.weight.T + m.out.bias


@pytest.mark.parametrize("pad", ["none", "end", "holes"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("dot", [False, True], ids=["synthetic", "dot-mixture"])
@pytest.mark.parametrize("kind", KINDS)
def test_layer_matches_the_row_loop(kind, dot, causal, pad):
    m = layer(kind, causal, dot=dot)
    randomise_mixture(m)
    n = 7
    x = torch.randn(2, n, DIM, dtype=torch.float64, requires_grad=True)
    mask = with_padding(2, n, pad)
    params = list(m.parameters())
    got = real_outputs_and_grads(lambda x, *_: m(x, mask), (x, *params), mask)
    want = real_outputs_and_grads(lambda x, *_: loop_layer(m, x, mask), (x, *params), mask)
    assert_close(got, want, names=["out", "dx", *(name for name, _ in m.named_parameters())])


P_CASES = [("full", False), ("causal", True)]


@pytest.mark.parametrize("name,causal", P_CASES, ids=[c[0] for c in P_CASES])
def test_random_logits_log_p_reproduce_a_known_mixing(name, causal):
    """R = log P for a row-stochastic P (lower triangular when causal; R's upper triangle then holds
    arbitrary values the causal mask must drop): the attention is exactly P V."""
    gen = torch.Generator().manual_seed(3)
    n, d = 13, 4
    p = torch.rand(HEADS, n, n, generator=gen, dtype=torch.float64) + 0.1
    if causal:
        p = p.tril()
    p = p / p.sum(-1, keepdim=True)
    r = torch.where(p > 0, p.log(), torch.full_like(p, 5.0))
    v = torch.randn(3, HEADS, n, d, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(synthesizer_attention(r[None], v, causal=causal), p @ v, atol=1e-12, rtol=1e-12)
    # the layer (fixed R, N < max_len): out(P · value(x)) per head
    m = layer("random", causal, trainable=False, max_len=20)
    with torch.no_grad():
        m.r[:, :n, :n] = r
    x = torch.randn(3, n, DIM, generator=gen, dtype=torch.float64)
    value = (x @ m.value.weight.T + m.value.bias).view(3, n, HEADS, DIM // HEADS).transpose(1, 2)
    want = (p @ value).transpose(1, 2).reshape(3, n, DIM) @ m.out.weight.T + m.out.bias
    torch.testing.assert_close(m(x), want, atol=1e-12, rtol=1e-12)


def test_factorized_dense_logits_are_the_papers_tiling():
    """H_A(A) repeats A as a whole T times, H_B(B) repeats each entry of B S times; logits = their product, first n."""
    gen = torch.Generator().manual_seed(4)
    s, t, n = 3, 5, 13
    a = torch.randn(2, HEADS, 7, s, generator=gen, dtype=torch.float64)
    b = torch.randn(2, HEADS, 7, t, generator=gen, dtype=torch.float64)
    tiled_a = torch.cat([a] * t, dim=-1)  # [A, A, ..., A]
    tiled_b = b.repeat_interleave(s, dim=-1)  # [B0 × s, B1 × s, ...]
    torch.testing.assert_close(factorized_dense_logits(a, b, n), (tiled_a * tiled_b)[..., :n], atol=0, rtol=0)
    with pytest.raises(ValueError, match="must be >= n=16"):
        factorized_dense_logits(a, b, 16)


def dense_factorized_random(r1, r2, v, mask, causal):
    """softmax(R1 R2ᵀ) V with the [N, N] logits formed; padded keys and (causal) the future dropped."""
    n = v.shape[2]
    logits = r1 @ r2.transpose(-1, -2)
    allowed = torch.ones(n, n, dtype=torch.bool)
    if causal:
        allowed = allowed.tril()
    if mask is not None:
        allowed = allowed & mask[:, None, None, :]
    e = torch.where(allowed, torch.exp(logits - logits.amax(-1, keepdim=True)), torch.zeros_like(logits))
    return (e / e.sum(-1, keepdim=True)) @ v


# (id, N, rank K, head dim D, per-batch factors)
FR_SIZES = [("N13-K3-D8", 13, 3, 8, False), ("N45-K16-D8", 45, 16, 8, False), ("N13-K8-D8-batched", 13, 8, 8, True)]


@pytest.mark.parametrize("pad", ["none", "end", "holes"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("name,n,k,d,batched", FR_SIZES, ids=[c[0] for c in FR_SIZES])
def test_factorized_random_is_softmax_of_r1_r2t_times_v(name, n, k, d, batched, causal, pad):
    gen = torch.Generator().manual_seed(n)
    shape = (2, HEADS, n, k) if batched else (HEADS, n, k)
    r1, r2 = (torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_(True) for _ in range(2))
    v = torch.randn(2, HEADS, n, d, generator=gen, dtype=torch.float64, requires_grad=True)
    mask = with_padding(2, n, pad)
    keep = None if mask is None else mask

    def real_rows(fn):
        return lambda *t: fn(*t).transpose(1, 2)  # [B, N, H, D]: real_outputs_and_grads masks dim 1

    got = real_outputs_and_grads(real_rows(lambda *t: factorized_random_attention(*t, mask=mask, causal=causal)), (r1, r2, v), keep)
    want = real_outputs_and_grads(real_rows(lambda *t: dense_factorized_random(*t, mask, causal)), (r1, r2, v), keep)
    assert_close(got, want, names=["out", "dr1", "dr2", "dv"])


def test_padded_queries_are_finite_even_with_no_visible_key():
    """Causal with a padded start (a padded query sees only padding) and a sequence of padding only."""
    r1, r2 = torch.randn(HEADS, 9, 4, dtype=torch.float64), torch.randn(HEADS, 9, 4, dtype=torch.float64)
    v = torch.randn(2, HEADS, 9, 8, dtype=torch.float64)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[0, :3], mask[1] = False, False
    for causal in (False, True):
        assert torch.isfinite(factorized_random_attention(r1, r2, v, mask=mask, causal=causal)).all()
        assert torch.isfinite(synthesizer_attention((r1 @ r2.transpose(-1, -2))[None], v, mask=mask, causal=causal)).all()


@pytest.mark.parametrize("dot", [False, True], ids=["synthetic", "dot-mixture"])
@pytest.mark.parametrize("kind", KINDS)
def test_causal_future_changes_leave_the_past_unchanged(kind, dot):
    assert_future_does_not_reach_the_past(layer(kind, causal=True, dot=dot, max_len=64), DIM)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("dot", [False, True], ids=["synthetic", "dot-mixture"])
@pytest.mark.parametrize("kind", KINDS)
def test_padding_content_changes_no_real_output(kind, dot, causal):
    assert_padding_is_invisible(layer(kind, causal, dot=dot, max_len=64), DIM, end_padding_is_the_shorter_sequence=False)


# position-indexed weights and the axes that index positions
POSITIONAL = {"dense": {"w2": [1], "b2": [1]}, "random": {"r": [1, 2]}, "factorized_dense": {}, "factorized_random": {"r1": [1], "r2": [1]}}


@pytest.mark.parametrize("kind", KINDS)
def test_shorter_inputs_use_the_first_n_positions_only(kind):
    m = layer(kind, max_len=20)
    n = 13
    x = torch.randn(2, n, DIM, dtype=torch.float64)
    y = m(x)
    with torch.no_grad():
        for name, axes in POSITIONAL[kind].items():
            p = getattr(m, name)
            for axis in axes:
                p.narrow(axis, n, p.shape[axis] - n).fill_(1e3)
    torch.testing.assert_close(m(x), y, atol=0, rtol=0)


# kind, options -> parameter names the layer owns
OWNED = [
    ("dense", {}, {"mlp_in.weight", "mlp_in.bias", "w2", "b2"}),
    ("random", {}, {"r"}),
    ("random", {"trainable": False}, set()),
    ("factorized_dense", {}, {"proj_a.weight", "proj_a.bias", "proj_b.weight", "proj_b.bias"}),
    ("factorized_random", {}, {"r1", "r2"}),
    ("factorized_random", {"trainable": False}, set()),
    ("dense", {"dot": True}, {"mlp_in.weight", "mlp_in.bias", "w2", "b2", "qk.weight", "qk.bias", "mix"}),
    ("random", {"dot": True, "trainable": False}, {"qk.weight", "qk.bias", "mix"}),
    ("factorized_random", {"dot": True}, {"r1", "r2", "qk.weight", "qk.bias", "mix"}),
]


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("kind,options,owned", OWNED, ids=[k + "".join(f"-{o}={v}" for o, v in opts.items()) for k, opts, _ in OWNED])
def test_owns_only_what_it_uses_and_gradients_reach_every_parameter(kind, options, owned, causal):
    m = layer(kind, causal, max_len=64, **options)
    assert {name for name, _ in m.named_parameters()} == owned | {"value.weight", "value.bias", "out.weight", "out.bias"}
    if not options.get("trainable", True):
        assert {name for name, _ in m.named_buffers()} == ({"r"} if kind == "random" else {"r1", "r2"})
    x = torch.randn(2, 45, DIM, dtype=torch.float64, requires_grad=True)
    mask = with_padding(2, 45, "holes")
    m(x, mask).square().sum().backward()
    assert x.grad.abs().sum() > 0
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_implied_weights_are_the_softmax_the_values_see():
    m = layer("dense", causal=True, dot=True)
    randomise_mixture(m)
    n = 7
    x = torch.randn(2, n, DIM, dtype=torch.float64)
    mask = with_padding(2, n, "holes")
    a = m.implied_weights(x, mask)
    assert a.shape == (2, HEADS, n, n)
    for b in range(2):
        for h in range(HEADS):
            for i in range(n):
                if not mask[b, i]:
                    continue
                visible = [j for j in range(n) if mask[b, j] and j <= i]
                s = row_logits(m, x, b, h, i, n)[visible]
                torch.testing.assert_close(a[b, h, i, visible], torch.softmax(s, 0), atol=1e-12, rtol=1e-12)
                hidden = [j for j in range(n) if j not in visible]
                assert (a[b, h, i, hidden] == 0).all()
    assert torch.equal(m.computed_pairs(5), torch.ones(1, 5, 5, dtype=torch.bool).tril())
    assert layer("random").computed_pairs(5).all()


def test_factorized_random_dot_mixture_never_forms_the_logits_and_matches_them():
    """The mixture concatenates (√w_s R1 | √(w_d·scale) Q) and (√w_s R2 | √(w_d·scale) K): its
    product is w_s R1 R2ᵀ + w_d·scale·Q Kᵀ, checked here against the weights written out."""
    m = layer("factorized_random", dot=True)
    randomise_mixture(m)
    x = torch.randn(2, 7, DIM, dtype=torch.float64)
    a = m.implied_weights(x)
    for b, h, i in [(0, 0, 0), (1, 1, 6), (0, 1, 3)]:
        torch.testing.assert_close(a[b, h, i], torch.softmax(row_logits(m, x, b, h, i, 7), 0), atol=1e-12, rtol=1e-12)


def test_mixture_starts_with_equal_weights():
    torch.testing.assert_close(layer(dot=True).mixture_weights(), torch.tensor([0.5, 0.5], dtype=torch.float64), atol=0, rtol=0)


def test_dropout_only_in_training():
    for kind in ("dense", "factorized_random"):
        m = layer(kind, dropout_p=0.5)
        x = torch.randn(2, 13, DIM, dtype=torch.float64)
        m.eval()
        torch.testing.assert_close(m(x), m(x), atol=0, rtol=0)
        m.train()
        assert not torch.allclose(m(x), m(x)), kind


def test_factorized_dense_sizes_cover_max_len():
    m = layer("factorized_dense", max_len=50, factor=8)
    assert m.sizes == (8, 7) and m.proj_a.out_features == HEADS * 8 and m.proj_b.out_features == HEADS * 7


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match=r"needs max_len.*max_len="):
        Synthesizer(SynthesizerConfig(), dim=DIM, heads=HEADS, causal=False, max_len=None)
    with pytest.raises(ValueError, match=r"N=70 exceeds max_len=64.*max_len>=70"):
        layer(max_len=64)(torch.randn(1, 70, DIM, dtype=torch.float64))
    with pytest.raises(ValueError, match="kind must be one of"):
        layer("dot")
    with pytest.raises(ValueError, match="hidden is the dense kind's.*kind='dense'"):
        layer("random", hidden=8)
    with pytest.raises(ValueError, match="trainable=False fixes random logits.*kind='random'"):
        layer("dense", trainable=False)
    with pytest.raises(ValueError, match="factor must be an integer >= 1"):
        layer("factorized_random", factor=0)
    with pytest.raises(ValueError, match="dropout_p"):
        layer(dropout_p=1.0)
    with pytest.raises(ValueError, match="divisible by heads"):
        layer(dim=9)
    with pytest.raises(ValueError, match=r"x must be a float tensor \[B, N, C=8\]"):
        layer()(torch.randn(1, 5, 7, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"mask must be \[B, N\]"):
        layer()(torch.randn(1, 5, DIM, dtype=torch.float64), torch.ones(1, 4, dtype=torch.bool))
    v = torch.randn(1, HEADS, 5, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"logits must be \[B=1 or 1, H=2, N=5, N=5\]"):
        synthesizer_attention(torch.randn(1, HEADS, 5, 6, dtype=torch.float64), v)
    with pytest.raises(ValueError, match=r"L >= N=5.*max_len>=5"):
        shapes = [(1, 5, DIM), (3, DIM), (3,), (HEADS, 4, 3), (HEADS, 4)]  # x, w1, b1, w2, b2 with L=4 < N=5
        dense_logits(*(torch.randn(*s, dtype=torch.float64) for s in shapes))
    with pytest.raises(ValueError, match="same rank K"):
        factorized_random_attention(torch.randn(HEADS, 5, 3, dtype=torch.float64), torch.randn(HEADS, 5, 4, dtype=torch.float64), v)
    with pytest.raises(ValueError, match=r"r1 must be \[H=2, N=5, K\]"):
        factorized_random_attention(torch.randn(HEADS, 6, 3, dtype=torch.float64), torch.randn(HEADS, 5, 3, dtype=torch.float64), v)


def test_random_logits_start_near_standard_normal():
    """R ~ N(0, 1); R1, R2 ~ N(0, k^-1/2) so that R1 R2ᵀ also has unit variance (8192 samples: ±10%)."""
    r = layer("random", max_len=64).r
    assert abs(r.std().item() - 1) < 0.1 and abs(r.mean().item()) < 0.05
    for factor in (2, 8, 32):
        m = layer("factorized_random", max_len=64, factor=factor)
        logits = m.r1 @ m.r2.transpose(-1, -2)
        assert m.r1.shape == (HEADS, 64, factor) and abs(logits.std().item() - 1) < 0.1, factor
