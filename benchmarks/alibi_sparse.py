"""What ALiBi costs on the blocked sparse kernel: forward+backward of sparse layers' cores with and
without position="alibi", interleaved in one process, medians after warm-up.

    python benchmarks/alibi_sparse.py            # ~3 minutes on 2 cores

B=1, H=4, D=64, float32, N = 4K and 16K; local (window 256, blocks of 64), bigbird (its defaults:
band, global and random blocks, so the gathered-group path too) and sparse_transformer (stride 128:
permuted parts). Writes benchmarks/results/alibi_sparse.json and alibi_sparse.png (the time ratio).
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import torch

import attnzoo
from attnzoo.bench.files import write_atomic

HERE = Path(__file__).resolve().parent / "results"
CASES = [("local", {"window": 256}), ("bigbird", {}), ("sparse_transformer", {"stride": 128})]
NS = (4096, 16384)
WARMUP, REPEATS = 2, 7


def step_ms(core, position, q, k, v) -> float:
    start = time.perf_counter()
    out = core(q, k, v) if position is None else core(q, k, v, position=position)
    out.sum().backward()
    return 1e3 * (time.perf_counter() - start)


def main() -> None:
    torch.manual_seed(0)
    rows = []
    for name, options in CASES:
        layer = attnzoo.build(name, dim=256, heads=4, position="alibi", **options)
        core, position = layer.core, layer.position
        for n in NS:
            q, k, v = (torch.randn(1, 4, n, 64, requires_grad=True) for _ in range(3))
            times = {"plain": [], "alibi": []}
            for rep in range(WARMUP + REPEATS):
                for label, pos in (("plain", None), ("alibi", position)) if rep % 2 else (("alibi", position), ("plain", None)):
                    ms = step_ms(core, pos, q, k, v)
                    if rep >= WARMUP:
                        times[label].append(ms)
            plain, alibi = statistics.median(times["plain"]), statistics.median(times["alibi"])
            rows.append({"name": name, "options": options, "n": n, "plain_ms": round(plain, 2), "alibi_ms": round(alibi, 2),
                         "ratio": round(alibi / plain, 3), "plain_all_ms": [round(t, 1) for t in times["plain"]],
                         "alibi_all_ms": [round(t, 1) for t in times["alibi"]]})
            print(f"{name:20s} N={n:6d}  plain {plain:8.1f} ms  alibi {alibi:8.1f} ms  ratio {alibi / plain:.3f}")
    meta = {"command": "python benchmarks/alibi_sparse.py", "threads": torch.get_num_threads(), "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(), "shape": "B=1, H=4, D=64, float32, forward+backward of the core",
            "repeats": REPEATS, "warmup": WARMUP}
    write_atomic(HERE / "alibi_sparse.json", json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    from attnzoo.viz.figure import pyplot, save

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    labels = [f"{r['name']}\nN={r['n'] // 1024}K" for r in rows]
    ax.bar(range(len(rows)), [r["ratio"] for r in rows], color="#2b6cb0")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylabel("time with ALiBi / without")
    ax.set_title("ALiBi on the blocked sparse kernel (fwd+bwd, median of 7)", fontsize=9)
    save(fig, HERE / "alibi_sparse.png", dpi=110)
    print(f"wrote {HERE / 'alibi_sparse.json'} and alibi_sparse.png")


if __name__ == "__main__":
    main()
