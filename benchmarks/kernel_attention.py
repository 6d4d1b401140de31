"""Issue 3 benchmark: kernel attention (linear, efficient, Performer, RFA) against exact attention,
N = 1K .. 256K, causal and not; and the causal prefix-sum path against the public
``performer-pytorch`` package (an optional extra: pip install -e '.[bench]').

    python benchmarks/kernel_attention.py                # all points (resumes; ~25 min on 2 cores)
    python benchmarks/kernel_attention.py --max-n 16384  # a quicker subset

Each point runs in a fresh process (peak memory is that process's), B=1, H=4, D=64, float32,
2 threads; times are medians after warm-up. Writes benchmarks/results/kernel_attention.json and
kernel_attention.png, then prints the targets: fwd+bwd speed-ups over full at 16K (causal and
not), the exponent p of time ∝ N^p and memory ∝ N^p (least squares over N ≥ 4K, and for time
also over 64K..256K), the 256K peak,
and the speed-up over performer-pytorch's causal path at 4K with the same features.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

from attnzoo.bench.harness import Point, Results, display_name, matmul_gflops, measure_in_fresh_process, table
from attnzoo.viz.scaling import plot_scaling

HERE = Path(__file__).resolve().parent
# label -> (registry name, options)
MECHANISMS = {
    "full": ("full", {}),
    "linear": ("linear", {}),
    "efficient": ("efficient", {}),
    "performer": ("performer", {}),  # FAVOR+, M = round(64 ln 64) = 266
    "performer-lra": ("performer", {"kernel": "relu", "features": "deterministic"}),
    "rfa": ("rfa", {}),
}
NS = [1024, 4096, 16384, 65536, 262144]
FULL_MAX_N = 16384  # exact attention is O(N²): 64K fwd+bwd alone takes minutes here


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-n", type=int, default=max(NS))
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--performer-pytorch-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.performer_pytorch_child:
        print(json.dumps(compare_performer_pytorch()))
        return

    rate_before = matmul_gflops(threads=2)
    results = Results(args.out / "kernel_attention.json", {})
    for causal in (False, True):
        for label, (name, options) in MECHANISMS.items():
            for n in NS:
                if n > args.max_n or (name == "full" and n > FULL_MAX_N):
                    continue
                point = Point(name, n, batch=1, heads=4, head_dim=64, dtype="float32", threads=2, options=options, causal=causal,
                              label=label + (" causal" if causal else ""))
                if not results.has(point):
                    row = measure_in_fresh_process(point, timeout_s=1800)
                    results.add(row)
                    print(json.dumps({k: row.get(k) for k in ("key", "forward_ms", "forward_backward_ms", "peak_rss_bytes", "error")}), flush=True)
    stored = json.loads(results.path.read_text()).get("performer_pytorch") if results.path.exists() else None
    results.data["performer_pytorch"] = stored or run_child()  # measured once, like every point
    results.data["meta"] = {
        "command": "python benchmarks/kernel_attention.py",
        "matmul_gflops_before": round(rate_before, 1),
        "matmul_gflops_after": round(matmul_gflops(threads=2), 1),
        "shape": "B=1, H=4, D=64, float32, 2 threads",
    }
    results.data["summary"] = summary(results.rows(), results.data["performer_pytorch"])
    results.save()
    print(table(results.rows()))
    print(json.dumps(results.data["summary"], indent=1))
    plot_scaling(results.rows(), args.out / "kernel_attention.png", title="attnzoo kernel attention vs SDPA (B=1, H=4, D=64, fp32, 2 CPU threads; dashed: causal)")


def exponent(rows: list[dict], field: str, min_n: int = 4096) -> float | None:
    """p in field ∝ N^p, least squares in log-log over N >= min_n."""
    pts = [(math.log(r["point"]["n"]), math.log(r[field])) for r in rows if r["point"]["n"] >= min_n and r.get(field)]
    if len(pts) < 2:
        return None
    mx, my = sum(x for x, _ in pts) / len(pts), sum(y for _, y in pts) / len(pts)
    return round(sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts), 3)


def summary(rows: list[dict], vs_package: dict) -> dict:
    ok = [r for r in rows if "error" not in r]
    by = {(display_name(r["point"]), r["point"]["n"]): r for r in ok}
    out: dict = {}
    for label in MECHANISMS:
        for suffix in ("", " causal"):
            name = label + suffix
            mine = [r for r in ok if display_name(r["point"]) == name]
            if not mine:
                continue
            entry = {
                "time_exponent_fwd_bwd": exponent(mine, "forward_backward_ms"),
                # the last interval, once every tensor is far out of cache
                "time_exponent_fwd_bwd_64k_256k": exponent(mine, "forward_backward_ms", min_n=65536),
                "memory_exponent": exponent(mine, "peak_above_inputs_bytes"),
            }
            full16, row16 = by.get(("full" + suffix, 16384)), by.get((name, 16384))
            if full16 and row16 and label != "full":
                entry["speedup_vs_full_fwd_bwd_16k"] = round(full16["forward_backward_ms"] / row16["forward_backward_ms"], 1)
            if (name, 262144) in by:
                entry["peak_rss_gib_256k_fwd_bwd"] = round(by[(name, 262144)]["peak_rss_bytes"] / 2**30, 2)
            out[name] = entry
    out["vs_performer_pytorch_causal_4k"] = vs_package
    return out


def run_child() -> dict:
    """The performer-pytorch comparison in its own process (2 threads, nothing else loaded)."""
    env_cmd = [sys.executable, __file__, "--performer-pytorch-child"]
    res = subprocess.run(env_cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
    lines = [line for line in res.stdout.strip().splitlines() if line.startswith("{")]
    if res.returncode != 0 or not lines:
        return {"error": (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]}
    return json.loads(lines[-1])


def compare_performer_pytorch(n: int = 4096, heads: int = 4, d: int = 64, repeats: int = 7) -> dict:
    """attnzoo's causal FAVOR+ (chunked prefix sums) against performer-pytorch's causal path on CPU,
    same projection (theirs), same inputs, timed alternately in one process."""
    import statistics
    import time

    import torch

    from attnzoo.functional import full_attention, performer_attention

    torch.set_num_threads(2)
    try:
        from performer_pytorch import FastAttention
    except ImportError:
        return {"error": "performer-pytorch is not installed: pip install -e '.[bench]'"}
    torch.manual_seed(0)
    theirs = FastAttention(dim_heads=d, causal=True)  # CPU: its non-CUDA causal path
    projection = theirs.projection_matrix
    q, k, v = (torch.randn(1, heads, n, d, requires_grad=True) for _ in range(3))

    def fb(fn):
        def run():
            fn().sum().backward()
            q.grad = k.grad = v.grad = None
        return run

    def fwd(fn):
        def run():
            with torch.no_grad():
                fn()
        return run

    ours_fn = lambda: performer_attention(q, k, v, projection, causal=True)  # noqa: E731
    theirs_fn = lambda: theirs(q, k, v)  # noqa: E731
    times: dict[str, list[float]] = {"ours_fwd": [], "theirs_fwd": [], "ours_fwd_bwd": [], "theirs_fwd_bwd": []}
    runs = {"ours_fwd": fwd(ours_fn), "theirs_fwd": fwd(theirs_fn), "ours_fwd_bwd": fb(ours_fn), "theirs_fwd_bwd": fb(theirs_fn)}
    for run in runs.values():
        run()  # warm-up
    for _ in range(repeats):
        for key, run in runs.items():
            start = time.perf_counter()
            run()
            times[key].append(time.perf_counter() - start)
    ms = {key: round(statistics.median(t) * 1e3, 2) for key, t in times.items()}
    with torch.no_grad():  # agreement, at a logit scale where FAVOR+ with 266 features is accurate
        qs, ks = q * 0.3, k * 0.3
        exact = full_attention(qs, ks, v, causal=True)
        err = lambda o: round(float((o - exact).norm() / exact.norm()), 4)  # noqa: E731
        agreement = {"ours_rel_err_vs_exact": err(performer_attention(qs, ks, v, projection, causal=True)), "theirs_rel_err_vs_exact": err(theirs(qs, ks, v))}
    return {
        "n": n,
        "nb_features": int(projection.shape[0]),
        "ms": ms,
        "speedup_fwd": round(ms["theirs_fwd"] / ms["ours_fwd"], 1),
        "speedup_fwd_bwd": round(ms["theirs_fwd_bwd"] / ms["ours_fwd_bwd"], 1),
        "inputs_scaled_0.3": agreement,
    }


if __name__ == "__main__":
    main()
