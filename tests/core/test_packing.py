"""pack_real / unpack_real against boolean indexing, one sequence at a time."""

from __future__ import annotations

import pytest
import torch

from attnzoo.core.packing import pack_real, unpack_real

MASKS = {
    "none": None,
    "tail": torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0, 0]], dtype=torch.bool),
    "holes": torch.tensor([[1, 0, 1, 1, 0, 1, 0], [0, 1, 1, 0, 1, 0, 0]], dtype=torch.bool),
    "one empty": torch.tensor([[1, 0, 1, 1, 0, 1, 1], [0, 0, 0, 0, 0, 0, 0]], dtype=torch.bool),
}


@pytest.mark.parametrize("kind", MASKS)
def test_packed_rows_are_the_real_rows_in_order_and_unpack_puts_them_back(kind):
    x = torch.randn(2, 7, 3, dtype=torch.float64, requires_grad=True)
    mask = MASKS[kind]
    packed, lengths, order = pack_real(x, mask)
    real = torch.ones(2, 7, dtype=torch.bool) if mask is None else mask
    assert packed.shape[1] == int(real.sum(1).max())
    for b in range(2):
        want = x[b][real[b]]
        assert lengths[b] == len(want)
        torch.testing.assert_close(packed[b, : len(want)], want, atol=0, rtol=0)
        assert (packed[b, len(want) :] == 0).all()
    back = unpack_real(packed, order, 7)
    torch.testing.assert_close(back, x * real[..., None], atol=0, rtol=0)
    back.sum().backward()
    torch.testing.assert_close(x.grad, real[..., None].expand_as(x).to(x.dtype), atol=0, rtol=0)
