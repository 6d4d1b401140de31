"""The sort-and-chunk plumbing (clustered/sorting.py) against loops written out."""

from __future__ import annotations

import pytest
import torch

from attnzoo.clustered.sorting import add_at_positions, gather_positions, sort_by, with_previous_chunk


@pytest.mark.parametrize("b,h,n,m", [(1, 1, 1, 1), (2, 3, 7, 7), (2, 2, 5, 12), (3, 1, 9, 4)], ids=["one", "perm", "repeats", "subset"])
def test_gather_positions_picks_rows_and_adds_gradients_of_repeats(b, h, n, m):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, h, n, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    index = torch.randint(0, n, (b, h, m), generator=gen)
    if m == n:
        index = torch.stack([torch.randperm(n, generator=gen) for _ in range(b * h)]).view(b, h, n)
    got = gather_positions(x, index)
    want = torch.stack([torch.stack([x[i, j, index[i, j]] for j in range(h)]) for i in range(b)])
    assert torch.equal(got, want)
    weight = torch.randn(got.shape, dtype=torch.float64, generator=gen)
    (grad,) = torch.autograd.grad((got * weight).sum(), x)
    expected = torch.zeros_like(x)
    for i in range(b):
        for j in range(h):
            for p in range(m):
                expected[i, j, index[i, j, p]] += weight[i, j, p]  # a row picked twice gets both gradients
    torch.testing.assert_close(grad, expected, atol=1e-12, rtol=0)


def test_gather_positions_of_a_non_contiguous_input():
    x = torch.randn(2, 5, 3, 4).transpose(1, 2)  # [B=2, H=3, N=5, D=4] as a view
    index = torch.tensor([4, 0, 0, 2])[None, None].expand(2, 3, 4)
    assert torch.equal(gather_positions(x, index), x[:, :, [4, 0, 0, 2]])


@pytest.mark.parametrize("b,h,m,n", [(1, 1, 1, 1), (2, 3, 8, 5), (2, 2, 3, 9)], ids=["one", "repeats", "gaps"])
def test_add_at_positions_sums_rows_at_their_positions(b, h, m, n):
    gen = torch.Generator().manual_seed(1)
    src = torch.randn(b, h, m, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    index = torch.randint(0, n, (b, h, m), generator=gen)
    got = add_at_positions(src, index, n)
    want = torch.zeros(b, h, n, 3, dtype=torch.float64)
    for i in range(b):
        for j in range(h):
            for p in range(m):
                want[i, j, index[i, j, p]] += src[i, j, p].detach()
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    weight = torch.randn(got.shape, dtype=torch.float64, generator=gen)
    (grad,) = torch.autograd.grad((got * weight).sum(), src)
    assert torch.equal(grad, torch.stack([torch.stack([weight[i, j, index[i, j]] for j in range(h)]) for i in range(b)]))


def test_sort_by_orders_and_inverts():
    key = torch.tensor([[30, 10, 20, 0]])
    order, inverse = sort_by(key)
    assert order.tolist() == [[3, 1, 2, 0]]
    assert torch.equal(key.gather(-1, order).gather(-1, inverse), key)


def test_with_previous_chunk_pairs_each_chunk_with_the_one_before_and_wraps():
    x = torch.arange(6).view(3, 2)  # chunks [0 1], [2 3], [4 5]
    assert with_previous_chunk(x, chunk_axis=0).tolist() == [[0, 1, 4, 5], [2, 3, 0, 1], [4, 5, 2, 3]]
    single = torch.arange(2).view(1, 2)
    assert torch.equal(with_previous_chunk(single, chunk_axis=0), single)
