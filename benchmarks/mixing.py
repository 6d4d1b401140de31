"""Issue 5 benchmark: the mixers (synthesizer in its four kinds, FNet, gMLP, MLP-Mixer) against
full attention, N = 1K .. 16K, as whole layers x [1, N, 256] -> [1, N, 256] (4 heads of 64 where
there are heads; projections included on both sides, since a mixer has no q, k, v to hand over).

    python benchmarks/mixing.py            # all points (resumes from the JSON; --force re-measures)
    python benchmarks/mixing.py --max-n 4096

Each point runs in a fresh process (peak memory is that process's high-water mark over one
forward+backward, above what it held before: parameters are in the baseline, their gradients
are not), float32, 2 threads; times are medians after warm-up. Writes
benchmarks/results/mixing.json and mixing.png and prints the table and the memory exponents
p of memory ∝ N^p over N ≥ 4K (the target: FNet and the factorized random synthesizer
sub-quadratic, p < 2 clearly).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from attnzoo.bench.harness import Point, Results, matmul_gflops, measure_in_fresh_process, table
from attnzoo.viz.scaling import plot_scaling

HERE = Path(__file__).resolve().parent
# label -> (registry name, options, largest N). Explicit synthetic logits are H·N² floats (4 GiB at
# 16K, several copies in forward+backward) and the random kind's table as many parameters, so those
# kinds stop at 8K on this 24 GiB machine.
MECHANISMS = {
    "full": ("full", {}, 16384),
    "synthesizer dense": ("synthesizer", {"kind": "dense"}, 8192),
    "synthesizer random": ("synthesizer", {"kind": "random"}, 8192),
    "synthesizer factorized dense": ("synthesizer", {"kind": "factorized_dense"}, 8192),
    "synthesizer factorized random": ("synthesizer", {"kind": "factorized_random"}, 16384),
    "fnet": ("fnet", {}, 16384),
    "gmlp": ("gmlp", {}, 16384),
    "mixer": ("mixer", {}, 16384),
}
NS = [1024, 2048, 4096, 8192, 16384]
SUBQUADRATIC = ("fnet", "synthesizer factorized random")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-n", type=int, default=max(NS))
    parser.add_argument("--names", nargs="+", default=list(MECHANISMS), choices=list(MECHANISMS), metavar="LABEL")
    parser.add_argument("--force", action="store_true", help="re-measure the chosen points")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()

    rate_before = matmul_gflops(threads=2)
    results = Results(args.out / "mixing.json", {})
    for label in args.names:
        name, options, largest = MECHANISMS[label]
        for n in NS:
            if n > min(args.max_n, largest):
                continue
            point = Point(name, n, batch=1, heads=4, head_dim=64, dtype="float32", threads=2, options=options, label=label, layer=True)
            if args.force or not results.has(point):
                row = measure_in_fresh_process(point, timeout_s=1800)
                results.add(row)
                print(json.dumps({k: row.get(k) for k in ("key", "forward_ms", "forward_backward_ms", "peak_above_inputs_bytes", "error")}),
                      flush=True)
    results.data["meta"] = {
        "command": "python benchmarks/mixing.py",
        "matmul_gflops_before": round(rate_before, 1),
        "matmul_gflops_after": round(matmul_gflops(threads=2), 1),
        "shape": "layers x [1, N, 256] -> [1, N, 256], H=4, D=64 where there are heads, float32, 2 threads",
    }
    results.data["summary"] = summary(results.rows())
    results.save()
    print(table(results.rows()))
    print(json.dumps(results.data["summary"], indent=1))
    plot_scaling(results.rows(), args.out / "mixing.png", title="attnzoo mixers vs full attention, whole layers (B=1, C=256, fp32, 2 CPU threads)")


def exponent(rows: list[dict], label: str, field: str, min_n: int = 4096) -> float | None:
    """Least-squares slope of log(field) against log(N) over N >= min_n."""
    pts = [(r["point"]["n"], r[field]) for r in rows if r["point"].get("label") == label and r["point"]["n"] >= min_n and r.get(field)]
    if len(pts) < 2:
        return None
    xs, ys = [math.log(n) for n, _ in pts], [math.log(v) for _, v in pts]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return round(sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs), 2)


def summary(rows: list[dict]) -> dict:
    by = {(r["point"].get("label"), r["point"]["n"]): r for r in rows if "error" not in r}
    out = {"memory_exponent_n_ge_4k": {}, "time_exponent_n_ge_4k": {}, "fwd_bwd_speedup_over_full": {}}
    for label in MECHANISMS:
        out["memory_exponent_n_ge_4k"][label] = exponent(rows, label, "peak_above_inputs_bytes")
        out["time_exponent_n_ge_4k"][label] = exponent(rows, label, "forward_backward_ms")
        out["fwd_bwd_speedup_over_full"][label] = {
            n: round(by[("full", n)]["forward_backward_ms"] / by[(label, n)]["forward_backward_ms"], 2)
            for n in NS
            if ("full", n) in by and (label, n) in by
        }
    out["subquadratic_memory"] = {
        label: (p is not None and p < 1.5) for label, p in out["memory_exponent_n_ge_4k"].items() if label in SUBQUADRATIC
    }
    return out


if __name__ == "__main__":
    main()
