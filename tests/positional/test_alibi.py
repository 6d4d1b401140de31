"""ALiBi's slopes against the paper's rule written out for each H, and its bias against −m_h·|i − j|."""

from __future__ import annotations

import pytest
import torch

from attnzoo.positional.alibi import ALiBi, alibi_bias, alibi_slopes

# H -> exponents e with m_h = 2^e, written out from the paper's rule (Press et al. 2022, sec. 3 and its get_slopes):
# a power of two H: 2^(−8/H), 2^(−16/H), ...; otherwise the 2^k < H slopes, then every other slope of 2^(k+1).
SLOPE_EXPONENTS = {
    1: [-8],
    2: [-4, -8],
    3: [-4, -8, -2],
    6: [-2, -4, -6, -8, -1, -3],
    8: [-1, -2, -3, -4, -5, -6, -7, -8],
    12: [-1, -2, -3, -4, -5, -6, -7, -8, -0.5, -1.5, -2.5, -3.5],
    16: [-0.5 * (h + 1) for h in range(16)],
}


@pytest.mark.parametrize("heads", list(SLOPE_EXPONENTS), ids=lambda h: f"H{h}")
def test_slopes_follow_the_paper(heads):
    want = torch.tensor([2.0**e for e in SLOPE_EXPONENTS[heads]], dtype=torch.float64)
    torch.testing.assert_close(alibi_slopes(heads), want, atol=1e-15, rtol=1e-15)


def test_slopes_for_eight_heads_are_halves():
    assert alibi_slopes(8).tolist() == [1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 32, 1 / 64, 1 / 128, 1 / 256]


@pytest.mark.parametrize("n", [1, 2, 9], ids=lambda n: f"N{n}")
def test_bias_formula(n):
    slopes = torch.tensor([0.5, 0.125, 3.0], dtype=torch.float64)
    got = alibi_bias(n, slopes)
    assert got.shape == (3, n, n)
    for h in range(3):
        for i in range(n):
            for j in range(n):
                assert got[h, i, j] == -slopes[h] * abs(i - j)
                if j <= i:  # what a causal mask leaves visible: the paper's −m·(i − j)
                    assert got[h, i, j] == -slopes[h] * (i - j)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("heads", [4, 12], ids=lambda h: f"H{h}")
def test_module_bias_shape_dtype_device_follow_q(dtype, heads):
    m = ALiBi(heads, 8)
    assert m.level == "distance" and "2108.12409" in m.paper and m.has_value_term is False and not list(m.parameters())
    q = torch.randn(2, heads, 300, 8).to(dtype)
    got = m.bias(q, q, scale=0.125)
    assert got.shape == (1, heads, 300, 300) and got.dtype == dtype and got.device == q.device
    want = (-alibi_slopes(heads)[:, None, None] * (torch.arange(300.0)[None, :] - torch.arange(300.0)[:, None]).abs().double())
    tol = {torch.float32: 3e-7, torch.float64: 1e-15, torch.bfloat16: 8e-3}[dtype]  # ~ one rounding in q's dtype
    torch.testing.assert_close(got[0].double(), want, atol=tol, rtol=tol)
    on_meta = m.bias(q.to("meta"), q.to("meta"), scale=0.125)
    assert on_meta.device.type == "meta" and on_meta.shape == (1, heads, 300, 300)


def test_bias_ignores_scale_and_content():
    m = ALiBi(4, 8)
    q, k = torch.randn(2, 4, 7, 8), torch.randn(2, 4, 7, 8)
    torch.testing.assert_close(m.bias(q, k, 1.0), m.bias(torch.zeros_like(q), k * 3, 0.01), atol=0, rtol=0)


def test_module_after_float_cast_keeps_exact_slopes():
    m = ALiBi(12, 8).float().double()  # casts must not round the slopes through float32
    q = torch.randn(1, 12, 5, 8, dtype=torch.float64)
    torch.testing.assert_close(m.bias(q, q, 1.0)[0], alibi_bias(5, alibi_slopes(12)), atol=0, rtol=0)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: ALiBi(0, 8), "heads"),
        (lambda: alibi_slopes(0), "heads"),
        (lambda: ALiBi(4, 8).bias(torch.randn(2, 3, 5, 8), torch.randn(2, 3, 5, 8), 1.0), "heads=3"),
        (lambda: ALiBi(4, 8).bias(torch.randn(2, 5, 8), torch.randn(2, 5, 8), 1.0), r"\[B, H, N, D\]"),
        (lambda: ALiBi(4, 8).value_term(torch.rand(2, 4, 5, 5)), "no value term"),
    ],
    ids=["H0", "slopes-H0", "wrong-H", "3dim-q", "value-term"],
)
def test_errors_name_the_fix(call, match):
    with pytest.raises(ValueError, match=match):
        call()
