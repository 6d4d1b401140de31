"""The multiplication-order lesson: (φ(Q)φ(K)ᵀ)V and φ(Q)(φ(K)ᵀV) are the same numbers at very
different prices, (M + E)·N² multiplies against 2·M·E·N.

n positions, m features, e value dim.
"""

from __future__ import annotations

import statistics
import time

import torch

QUADRATIC_MAX_BYTES = 2 * 2**30  # the expensive order materializes [N, N]; skip timing it beyond this


def multiplication_order(n: int, m: int, e: int, *, repeats: int = 5, threads: int | None = None) -> dict:
    """Multiply counts and measured median times (one head, float32) of both orders, plus the
    largest difference between their outputs relative to the output's size."""
    if threads is not None:
        torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    q, k, v = torch.rand(n, m, generator=gen), torch.rand(n, m, generator=gen), torch.randn(n, e, generator=gen)
    cheap = lambda: q @ (k.T @ v)  # noqa: E731
    expensive = lambda: (q @ k.T) @ v  # noqa: E731
    out = {
        "n": n,
        "m": m,
        "e": e,
        "quadratic_multiplies": (m + e) * n * n,
        "linear_multiplies": 2 * m * e * n,
        "linear_ms": _median_ms(cheap, repeats),
    }
    if 4 * n * n <= QUADRATIC_MAX_BYTES:
        out["quadratic_ms"] = _median_ms(expensive, repeats)
        a, b = expensive(), cheap()
        out["max_relative_difference"] = float((a - b).abs().max() / b.abs().max())
    return out


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def format_cost(name: str, cost: dict) -> str:
    n, m, e = cost["n"], cost["m"], cost["e"]
    quad, lin = cost["quadratic_multiplies"], cost["linear_multiplies"]
    quad_ms, lin_ms = cost.get("quadratic_ms"), cost["linear_ms"]
    quad_time = f"{quad_ms:10.2f} ms" if quad_ms is not None else f"skipped (N×N is {4 * n * n / 2**30:.0f} GiB)"
    lines = [
        f"{name}: N={n}, M={m} features per query/key (d, or the random features), E={e} value dims (d′); one head, float32",
        f"  {'order':<13}{'multiplies':<24}time",
        f"  {'(φQ φKᵀ) V':<13}{f'(M+E)·N² = {quad:.3g}':<24}{quad_time}",
        f"  {'φQ (φKᵀ V)':<13}{f'2·M·E·N  = {lin:.3g}':<24}{lin_ms:10.2f} ms",
        f"  {'ratio':<13}{f'{quad / lin:.1f}×':<24}" + (f"{quad_ms / lin_ms:10.1f}×" if quad_ms is not None else ""),
    ]
    if "max_relative_difference" in cost:
        lines.append(f"  same result: largest difference {cost['max_relative_difference']:.1e} of the output's size")
    return "\n".join(lines)
