"""What Nyström's and Sinkhorn's attention cost at the least on this CPU: the products each must do, alone.

    python benchmarks/narrow_products.py          # about two minutes on a quiet machine

Issue 4 asks our nystrom and sinkhorn layers to be 1.5× faster than nystrom-attention's and
sinkhorn-transformer's. benchmarks/clustered_lowrank.py measures what that leaves for the attention
core (its "core budget": peer / 1.5 − our q/k/v/out projections). This script times, forward+backward
at B=1, H=4, D=64, float32, 2 threads, the shapes of those pairs (m = 64 landmarks, blocks of c = 64):

- ``nystrom_products``: the four N·m·D products every Nyström core does, q̃ kᵀ, (·) v, q k̃ᵀ,
  (·)(A⁺ B v), as plain matmuls with no softmax, no pseudo-inverse, no landmark pooling;
- ``nystrom_explicit``: the same with the two softmaxes (the [N, m] and [m, N] maps formed in memory);
- ``nystrom_sdpa``: the same two attentions as two ``scaled_dot_product_attention`` calls (our core's way);
- ``sinkhorn_products``: the sorted blocks Σ_s R_ts K_s and Σ_s R_ts V_s ([T, T] by [T, c·D]) and each
  block's scores and weighted values against its own and its sorted block ([c, D] by [D, 2c], [c, 2c]
  by [2c, D]), as plain batched matmuls with no softmax, no sorting network, no Sinkhorn iterations.

A ``products`` time is a floor for any implementation of the same algorithm built on these BLAS
products: if it exceeds the core budget, the 1.5× target cannot be met that way. Medians of 7 rounds
after 2 warm-ups, the variants interleaved in each round; each run is appended to
benchmarks/results/narrow_products.json with the 2048² matmul rate measured in it (compare runs, not one).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from attnzoo.bench.files import write_atomic
from attnzoo.bench.harness import matmul_gflops

RESULT = Path(__file__).resolve().parent / "results" / "narrow_products.json"
B, H, D, M, C = 1, 4, 64, 64, 64  # batch, heads, head dim, landmarks, sinkhorn block


def nystrom_inputs(n: int) -> tuple:
    q, k, v = (torch.randn(B, H, n, D, requires_grad=True) for _ in range(3))
    ql, kl = (torch.randn(B, H, M, D, requires_grad=True) for _ in range(2))
    return q, k, v, ql, kl, torch.randn(B, H, M, M, requires_grad=True)


def nystrom_products(q, k, v, ql, kl, z):
    bv = (ql @ k.transpose(-1, -2)) @ v  # [B, H, m, D]
    return (q @ kl.transpose(-1, -2)) @ (z @ bv)  # [B, H, N, D]


def nystrom_explicit(q, k, v, ql, kl, z):
    s = D**-0.5
    bv = torch.softmax((ql * s) @ k.transpose(-1, -2), -1) @ v
    return torch.softmax((q * s) @ kl.transpose(-1, -2), -1) @ (z @ bv)


def nystrom_sdpa(q, k, v, ql, kl, z):
    bv = F.scaled_dot_product_attention(ql, k, v)
    return F.scaled_dot_product_attention(q, kl, z @ bv)


def sinkhorn_inputs(n: int) -> tuple:
    t = n // C
    qb, kb, vb = (torch.randn(B, H, t, C, D, requires_grad=True) for _ in range(3))
    return qb, kb, vb, torch.rand(B, H, t, t, requires_grad=True)


def sinkhorn_products(qb, kb, vb, perm):
    t = qb.shape[2]
    sk, sv = ((perm @ x.flatten(3)).view(B, H, t, C, D) for x in (kb, vb))  # [B, H, T, c, D]
    dots = qb @ torch.cat((kb, sk), 3).transpose(-1, -2)  # [B, H, T, c, 2c]
    return dots @ torch.cat((vb, sv), 3)


MACS = {  # multiply-adds of one forward; backward does two products per forward product
    "nystrom": lambda n: 4 * B * H * n * M * D,
    "sinkhorn": lambda n: B * H * (2 * (n // C) * n * D + 2 * n * 2 * C * D),
}
VARIANTS = {
    "nystrom": (nystrom_inputs, {"products": nystrom_products, "explicit": nystrom_explicit, "sdpa": nystrom_sdpa}),
    "sinkhorn": (sinkhorn_inputs, {"products": sinkhorn_products}),
}


def main() -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    rows = []
    for mechanism, (inputs, variants) in VARIANTS.items():
        for n in (4096, 16384):
            args = inputs(n)
            times = {name: [] for name in variants}
            for round_ in range(9):
                for name, f in variants.items():
                    start = time.perf_counter()
                    f(*args).sum().backward()
                    if round_ >= 2:
                        times[name].append(time.perf_counter() - start)
            flop = 2 * 3 * MACS[mechanism](n)
            row = {"mechanism": mechanism, "n": n, "gflop_fwd_bwd": round(flop / 1e9, 3)}
            for name, ts in times.items():
                ms = statistics.median(ts) * 1000
                row[f"{name}_fwd_bwd_ms"] = round(ms, 2)
                row[f"{name}_gflops"] = round(flop / ms / 1e6, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    run = {"matmul_2048_gflops": round(matmul_gflops(threads=2), 1), "rows": rows}
    earlier = json.loads(RESULT.read_text())["runs"] if RESULT.exists() else []
    result = {"command": "python benchmarks/narrow_products.py",
              "shape": {"B": B, "H": H, "D": D, "landmarks": M, "block": C, "dtype": "float32", "threads": 2},
              "runs": earlier + [run]}
    write_atomic(RESULT, json.dumps(result, indent=1) + "\n")
    print(f"2048² matmul: {run['matmul_2048_gflops']} GFLOP/s; appended run {len(result['runs'])} to {RESULT}")


if __name__ == "__main__":
    main()
