"""Input validation shared by every attention function. Each helper raises ValueError naming the fix."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def check_qkv(q: Tensor, k: Tensor, v: Tensor, where: str) -> None:
    """q, k, v must be [B, H, N, D] with matching batch, heads, length, dtype and device."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise ValueError(f"{where}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(
                f"{where}: {name} must be [B, H, N, D] (4 dims), got shape {tuple(t.shape)}; "
                "split heads first, e.g. rearrange(x, 'b n (h d) -> b h n d', h=heads)"
            )
        if not t.is_floating_point():
            raise ValueError(f"{where}: {name} must be floating point, got {t.dtype}")
    if q.shape[:3] != k.shape[:3] or k.shape[:3] != v.shape[:3]:
        raise ValueError(
            f"{where}: q, k, v must agree on [B, H, N], got q {tuple(q.shape)}, k {tuple(k.shape)}, "
            f"v {tuple(v.shape)} (self-attention: keys and values come from the same sequence)"
        )
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"{where}: q and k need the same head dim D, got {q.shape[-1]} and {k.shape[-1]}; project them to one size"
        )
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"{where}: q, k, v dtypes differ ({q.dtype}, {k.dtype}, {v.dtype}); cast them to one dtype")
    if not (q.device == k.device == v.device):
        raise ValueError(f"{where}: q, k, v are on different devices ({q.device}, {k.device}, {v.device}); move them to one")
    if q.shape[2] == 0:
        raise ValueError(f"{where}: empty sequence (N=0); attention needs at least one position")


def check_mask(mask: Tensor | None, q: Tensor, where: str) -> None:
    """mask must be a BoolTensor[B, N] on q's device, True marking real tokens."""
    if mask is None:
        return
    b, _, n, _ = q.shape
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"{where}: mask must be a bool tensor [B, N] with True = real token, got {got}; use mask.bool()")
    if tuple(mask.shape) != (b, n):
        raise ValueError(f"{where}: mask must be [B, N] = [{b}, {n}], got {tuple(mask.shape)}")
    if mask.device != q.device:
        raise ValueError(f"{where}: mask is on {mask.device} but q is on {q.device}; move it with mask.to(q.device)")


def check_layer_input(x, mask: Tensor | None, dim: int, max_len: int | None, where: str, why: str = "") -> int:
    """x must be a float tensor [B, N, C=dim] with 1 <= N (<= max_len when given; ``why`` says what
    ties the layer to max_len); mask a BoolTensor[B, N] or None. Returns N."""
    if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != dim or not x.is_floating_point():
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{where}: x must be a float tensor [B, N, C={dim}], got {got}")
    n = x.shape[1]
    if n == 0:
        raise ValueError(f"{where}: empty sequence (N=0); the layer needs at least one position")
    if max_len is not None and n > max_len:
        raise ValueError(f"{where}: N={n} exceeds max_len={max_len}{why}; build with max_len>={n}")
    check_mask(mask, x[:, None], where)
    return n


def check_dropout(dropout_p: float, where: str) -> None:
    if not (0.0 <= float(dropout_p) < 1.0):
        raise ValueError(f"{where}: dropout_p must be in [0, 1), got {dropout_p}")


def resolve_scale(scale: float | None, d: int, where: str) -> float:
    """None means 1/sqrt(D); any finite float is honoured exactly."""
    if scale is None:
        return 1.0 / math.sqrt(d)
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not math.isfinite(scale):
        raise ValueError(f"{where}: scale must be a finite float or None (1/sqrt(D)), got {scale!r}")
    return float(scale)


def as_int_tuple(value, name: str, where: str) -> tuple[int, ...]:
    """An int or a sequence of ints as a tuple of ints (CLI and JSON give lists or scalars)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    try:
        out = tuple(value)
    except TypeError:
        raise ValueError(f"{where}: {name} must be an int or a sequence of ints, got {value!r}") from None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in out):
        raise ValueError(f"{where}: {name} must hold ints, got {value!r}")
    return out


def check_int(value, name: str, *, minimum: int, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{where}: {name} must be an integer >= {minimum}, got {value!r}")
