"""FNet against numpy's FFT (independent of torch.fft) applied to each sequence's real tokens alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnzoo.mixing import FNet, FNetConfig, fnet_mix
from tests.mixing import with_padding

SIZES = [(7, 8), (13, 5), (45, 32), (113, 60)]  # (N, C)


def numpy_fnet(x, mask):
    """Each sequence's real rows, in order, through numpy.fft.fft2(...).real; padded rows 0."""
    x = x.detach().numpy()
    out = np.zeros_like(x)
    for b in range(x.shape[0]):
        real = np.ones(x.shape[1], dtype=bool) if mask is None else mask[b].numpy()
        if real.any():
            out[b, real] = np.fft.fft2(x[b, real]).real
    return torch.from_numpy(out)


@pytest.mark.parametrize("pad", ["none", "end", "holes", "empty"])
@pytest.mark.parametrize("n,c", SIZES, ids=[f"N{n}-C{c}" for n, c in SIZES])
def test_matches_numpy_fft2_on_each_sequences_real_tokens(n, c, pad):
    x = torch.randn(2, n, c, dtype=torch.float64)
    mask = with_padding(2, n, pad)
    y = fnet_mix(x, mask=mask)
    torch.testing.assert_close(y, numpy_fnet(x, mask), atol=1e-10, rtol=1e-10)
    if mask is not None:
        assert (y[~mask] == 0).all()


def test_three_real_lengths_in_one_batch():
    x = torch.randn(4, 13, 6, dtype=torch.float64)
    mask = torch.ones(4, 13, dtype=torch.bool)
    mask[0, 9:], mask[1, ::3], mask[2, 2:4] = False, False, False  # lengths 9, 8, 11, 13
    torch.testing.assert_close(fnet_mix(x, mask=mask), numpy_fnet(x, mask), atol=1e-10, rtol=1e-10)


def test_padding_amount_and_content_change_nothing():
    """The same real tokens padded to N=13 (in holes) and to N=45 (at the end, with other content) give the same outputs."""
    real = torch.randn(1, 9, 8, dtype=torch.float64)
    short = torch.full((1, 13, 8), 7.0, dtype=torch.float64)
    mask_short = torch.ones(1, 13, dtype=torch.bool)
    mask_short[0, [0, 4, 5, 12]] = False
    short[mask_short] = real[0]
    long = 1e3 * torch.randn(1, 45, 8, dtype=torch.float64)
    mask_long = torch.zeros(1, 45, dtype=torch.bool)
    mask_long[0, :9] = True
    long[0, :9] = real[0]
    a = fnet_mix(short, mask=mask_short)[mask_short]
    b = fnet_mix(long, mask=mask_long)[mask_long]
    torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(b, fnet_mix(real)[0], atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("pad", ["none", "holes"])
def test_gradient_matches_finite_differences(pad):
    x = torch.randn(2, 6, 3, dtype=torch.float64, requires_grad=True)
    mask = with_padding(2, 6, pad)
    assert torch.autograd.gradcheck(lambda t: fnet_mix(t, mask=mask), (x,), atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_precision_within_twice_the_rounding_of_the_naive_path(dtype):
    """Computed in float32 and rounded back: error against float64 at most 2× that of numpy on
    the rounded input, rounded to the same dtype."""
    x = torch.randn(2, 13, 8, dtype=torch.float64)
    mask = with_padding(2, 13, "holes")
    low = x.to(dtype)
    y = fnet_mix(low, mask=mask)
    assert y.dtype == dtype
    exact = numpy_fnet(x, mask)
    naive = numpy_fnet(low.double(), mask).to(dtype)
    err = lambda t: (t.double() - exact).abs().max().item()  # noqa: E731
    assert err(y) <= 2 * err(naive)


def test_layer_is_the_function_with_no_parameters():
    m = FNet(FNetConfig(), dim=8, heads=2, causal=False, max_len=None)
    assert list(m.parameters()) == [] and m.is_layer and not m.info.qk
    x = torch.randn(2, 13, 8, dtype=torch.float64)
    mask = with_padding(2, 13, "end")
    torch.testing.assert_close(m(x, mask), numpy_fnet(x, mask), atol=1e-10, rtol=1e-10)
    assert m(torch.randn(1, 200, 8, dtype=torch.float64)).shape == (1, 200, 8)  # any N without max_len
    assert m.computed_pairs(5).all() and m.computed_pairs(5).shape == (1, 5, 5)


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match="causal=True is not supported.*gmlp or mixer with causal=True"):
        FNet(FNetConfig(), dim=8, heads=2, causal=True, max_len=None)
    m = FNet(FNetConfig(), dim=8, heads=2, causal=False, max_len=64)
    with pytest.raises(ValueError, match=r"N=70 exceeds max_len=64.*max_len>=70"):
        m(torch.randn(1, 70, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"x must be a float tensor \[B, N, C=8\]"):
        m(torch.randn(1, 5, 7, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"mask must be \[B, N\]"):
        fnet_mix(torch.randn(1, 5, 8, dtype=torch.float64), mask=torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="N=0"):
        fnet_mix(torch.randn(1, 0, 8, dtype=torch.float64))
