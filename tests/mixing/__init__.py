"""Mixing tests. Shared helpers: real-position outputs and gradients, compared under conftest's
tolerance table."""

from __future__ import annotations

import torch

from tests.conftest import TOLERANCE


def real_outputs_and_grads(fn, inputs, mask):
    """fn(*inputs) [B, N, ...] at real positions (padded ones may hold any finite value), and the
    gradients of a fixed non-symmetric loss on them with respect to every input."""
    out = fn(*inputs)
    keep = torch.ones(out.shape[:2], dtype=out.dtype) if mask is None else mask.to(out.dtype)
    keep = keep.view(*keep.shape, *([1] * (out.dim() - 2)))
    weight = torch.linspace(-1.0, 1.0, out.numel(), dtype=out.dtype).view_as(out) * keep
    grads = torch.autograd.grad((out * weight).sum(), inputs, allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, inputs)]
    return (out * keep, *grads)


def assert_close(got, want, names=None, dtype=torch.float64):
    atol_fwd, atol_grad = TOLERANCE[dtype]
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        name = names[i] if names else f"output {i}"
        assert torch.isfinite(g).all(), f"{name} has non-finite values"
        tol = atol_fwd if i == 0 else atol_grad
        torch.testing.assert_close(g, w, atol=tol, rtol=tol, msg=lambda m, name=name: f"{name}: {m}")


def with_padding(b, n, kind):
    """'none', 'end' (last third of batch 1 padded), 'holes' (a middle run of batch 0 and the end
    of batch 1 padded), 'empty' (batch 1 all padding)."""
    if kind == "none":
        return None
    mask = torch.ones(b, n, dtype=torch.bool)
    if kind in ("end", "holes"):
        mask[-1, n - max(1, n // 3) :] = False
    if kind == "holes":
        mask[0, n // 3 : max(n // 3 + 1, 2 * n // 3)] = False
    if kind == "empty":
        mask[-1] = False
    return mask


def assert_future_does_not_reach_the_past(m, dim: int, n: int = 45, t: int = 20) -> None:
    """Changing x after position t leaves outputs up to t exactly as they were, and does change later ones."""
    x = torch.randn(2, n, dim, dtype=torch.float64)
    x2 = x.clone()
    x2[:, t + 1 :] = 1e2 * torch.randn_like(x2[:, t + 1 :])
    torch.testing.assert_close(m(x2)[:, : t + 1], m(x)[:, : t + 1], atol=1e-10, rtol=1e-10)
    assert not torch.allclose(m(x2)[:, t + 1 :], m(x)[:, t + 1 :])


def assert_padding_is_invisible(m, dim: int, n: int = 45, end_padding_is_the_shorter_sequence: bool = True) -> None:
    """Padded content (holes) never reaches a real output; with padding only at the end, the real
    positions get what the unpadded, shorter sequence gets."""
    x = torch.randn(2, n, dim, dtype=torch.float64)
    mask = with_padding(2, n, "holes")
    y = m(x, mask)
    x2 = x.clone()
    x2[~mask] = 1e3 * torch.randn_like(x2[~mask])
    y2 = m(x2, mask)
    assert torch.isfinite(y2).all()
    torch.testing.assert_close(y2[mask], y[mask], atol=1e-10, rtol=1e-10)
    if end_padding_is_the_shorter_sequence:
        end = with_padding(2, n, "end")
        length = int(end[1].sum())
        torch.testing.assert_close(m(x, end)[1, :length], m(x[1:, :length])[0], atol=1e-10, rtol=1e-10)
