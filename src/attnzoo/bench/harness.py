"""Speed / memory / error harness: one measurement point per fresh process, results merged into one JSON.

A point = (mechanism, N, batch, heads, head dim, dtype, options). Its process times forward and
forward+backward (median after warm-up), reads its own peak memory, and, where N is small
enough for exact attention, the error against exact softmax attention on the same q, k, v.
The results file is rewritten atomically after every point, and points already in it are
skipped, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from attnzoo.registry import describe, list_mechanisms, make_config

ERROR_MAX_N = 4096  # exact attention for the error column only up to here


@dataclass
class Point:
    name: str
    n: int
    batch: int = 1
    heads: int = 4
    head_dim: int = 64
    dtype: str = "float32"
    threads: int = 2
    backward: bool = True
    options: dict = field(default_factory=dict)
    causal: bool = False
    label: str = ""  # display name in tables and plots (default: name, plus "causal"); not part of the key
    layer: bool = False  # time the whole layer on x [B, N, H·D] (projections included); mixers always are layers

    def key(self) -> str:
        opts = ",".join(f"{k}={self.options[k]}" for k in sorted(self.options))
        key = f"{self.name}[{opts}]|n={self.n}|b={self.batch}|h={self.heads}|d={self.head_dim}|{self.dtype}|t={self.threads}"
        return key + ("|causal" if self.causal else "") + ("|layer" if self.layer else "")


def display_name(point: dict) -> str:
    """A row's name in tables and plots: its label, or the mechanism name (+ " causal")."""
    return point.get("label") or point["name"] + (" causal" if point.get("causal") else "")


def _status(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field_name))
    except (OSError, StopIteration):
        return None


def _median_ms(fn, *, warmup: int, budget_s: float, max_repeats: int) -> tuple[float, int]:
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < max_repeats and (not times or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3, len(times)


def measure(point: Point) -> dict:
    """Run in a fresh process: timings, peak memory and error for one point."""
    from attnzoo.functional import full_attention
    from attnzoo.registry import REGISTRY

    torch.set_num_threads(point.threads)
    torch.manual_seed(0)
    dtype = getattr(torch, point.dtype)
    config_cls, core_cls = REGISTRY[point.name]
    if point.layer or getattr(core_cls, "is_layer", False):
        from attnzoo.registry import build

        dim = point.heads * point.head_dim
        core = build(point.name, dim=dim, heads=point.heads, causal=point.causal, max_len=point.n, **point.options).to(dtype)
        inputs = (torch.randn(point.batch, point.n, dim, dtype=dtype, requires_grad=point.backward),)
    else:
        core = core_cls(make_config(point.name, **point.options), heads=point.heads, head_dim=point.head_dim, causal=point.causal,
                        max_len=point.n)
        shape = (point.batch, point.heads, point.n, point.head_dim)
        inputs = tuple(torch.randn(shape, dtype=dtype, requires_grad=point.backward) for _ in range(3))
    core.eval()  # inference behaviour (no dropout) for timing and the error column

    def forward():
        with torch.no_grad():
            core(*inputs)

    def forward_backward():
        core(*inputs).sum().backward()
        for t in inputs:
            t.grad = None
        core.zero_grad(set_to_none=True)

    result = {"point": asdict(point), "key": point.key()}
    # Peak memory first, before any warm-up leaves freed-but-kept allocator pages behind (Linux: reset
    # the high-water mark, then read it after one forward+backward; layout building is included).
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False
    before = _status("VmRSS:")
    (forward_backward if point.backward else forward)()
    peak = _status("VmHWM:")
    result["peak_rss_bytes"] = peak
    result["peak_above_inputs_bytes"] = peak - before if (reset and peak and before) else None
    # Slow points get fewer repeats: each timing stops after ~budget seconds, with at least one run.
    result["forward_ms"], result["forward_repeats"] = _median_ms(forward, warmup=1, budget_s=20, max_repeats=7)
    if point.backward:
        # The memory run above was this path's warm-up.
        result["forward_backward_ms"], result["forward_backward_repeats"] = _median_ms(
            forward_backward, warmup=0, budget_s=30, max_repeats=5
        )
    if point.n <= ERROR_MAX_N and len(inputs) == 3:  # cores approximate softmax attention; a layer is its own thing
        q, k, v = inputs
        with torch.no_grad():
            exact = full_attention(q, k, v, causal=point.causal)
            approx = core(q, k, v)
            result["rel_error_vs_full"] = float((approx - exact).norm() / exact.norm())
    layout_pairs = pairs_of(core, point)
    if layout_pairs is not None:
        result["touched_pairs"], result["allowed_block_pairs"] = layout_pairs
    return result


def pairs_of(core, point: Point):
    """(computed, allowed-block) (query, key) pairs of a sparse core's layouts, or None for other mechanisms.

    Cores that run as parts in their own position orders (sparse.union) are counted part by part.
    """
    if not hasattr(core, "pattern"):
        return None
    from attnzoo.sparse.layout import build_layout

    cpu = torch.device("cpu")
    n = point.n + getattr(core.config, "num_tokens", 0)  # learned global tokens lengthen the sequence
    parts = core.parts(n, cpu)
    patterns = [p.pattern for p in parts] if parts is not None else [core.pattern(n, point.heads, cpu)]
    layouts = [build_layout(p, n, core.config.block, point.heads, cpu) for p in patterns]
    touched = sum(layout.touched_pairs(point.heads) for layout in layouts)
    allowed = sum(layout.allowed_block_pairs(point.heads) for layout in layouts)
    return touched * point.batch, allowed * point.batch


def measure_in_fresh_process(point: Point, timeout_s: float | None = None) -> dict:
    cmd = [sys.executable, "-m", "attnzoo.bench.point", json.dumps(asdict(point))]
    env = dict(os.environ, OMP_NUM_THREADS=str(point.threads), MKL_NUM_THREADS=str(point.threads))
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return {"point": asdict(point), "key": point.key(), "error": f"timed out after {timeout_s} s"}
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"point": asdict(point), "key": point.key(), "error": f"exit {res.returncode}: {tail[0]}"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def matmul_gflops(threads: int, size: int = 2048, repeats: int = 7) -> float:
    """The machine's float32 matmul rate (GFLOP/s): median of ``repeats`` size×size products."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    ms, _ = _median_ms(lambda: a @ b, warmup=2, budget_s=60, max_repeats=repeats)
    return 2 * size**3 / (ms / 1e3) / 1e9


def attention_matmul_gflops(threads: int, block: int = 64, keys: int = 576, d: int = 64, rows: int = 256) -> float:
    """Rate of the two batched products a band chunk runs: [block, d] @ [d, keys] and [block, keys] @ [keys, d]."""
    torch.set_num_threads(threads)
    q, k, p = torch.randn(rows, block, d), torch.randn(rows, keys, d), torch.randn(rows, block, keys)
    ms, _ = _median_ms(lambda: (torch.bmm(q, k.transpose(1, 2)), torch.bmm(p, k)), warmup=2, budget_s=30, max_repeats=9)
    return 2 * 2 * rows * block * keys * d / (ms / 1e3) / 1e9


class Results:
    """A JSON file of measurement rows keyed by point, rewritten atomically (write temp, then rename)."""

    def __init__(self, path: Path, meta: dict):
        self.path = Path(path)
        self.data = {"meta": meta, "rows": {}}
        if self.path.exists():
            try:
                old = json.loads(self.path.read_text())
            except json.JSONDecodeError as err:
                raise ValueError(f"{self.path} is not valid JSON ({err}); move it away to start a fresh run") from None
            self.data["rows"] = {k: r for k, r in old.get("rows", {}).items() if "error" not in r}

    def has(self, point: Point) -> bool:
        return point.key() in self.data["rows"]

    def add(self, row: dict) -> None:
        self.data["rows"][row["key"]] = row
        self.save()

    def save(self) -> None:
        write_atomic(self.path, json.dumps(self.data, indent=1, sort_keys=True))

    def rows(self) -> list[dict]:
        return list(self.data["rows"].values())


DEFAULT_NAMES = ("full", "local", "longformer", "bigbird", "sparse_transformer", "strided", "global", "random", "linear", "efficient", "performer", "rfa")
DEFAULT_NS = (512, 1024, 2048, 4096)


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--names", nargs="+", default=list(DEFAULT_NAMES), help="mechanisms (default: full, the sparse and the kernel families)")
    parser.add_argument("--n", nargs="+", type=int, default=list(DEFAULT_NS), help="sequence lengths")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--forward-only", action="store_true")
    parser.add_argument("--causal", action="store_true", help="causal attention (every mechanism must support it)")
    parser.add_argument("--opt", action="append", default=[], metavar="NAME.KEY=VALUE", help="option for one mechanism, repeatable")
    parser.add_argument("--out", type=Path, default=Path("attnzoo-out/bench"), help="folder for results.json and plots")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per point before it is recorded as timed out")


def bench_command(args) -> int:
    names = list(args.names)
    for name in names:
        if name not in list_mechanisms():
            raise ValueError(f"unknown mechanism {name!r}; choose from {', '.join(list_mechanisms())}")
    if args.causal:
        unsupported = [name for name in names if not describe(name)["causal"]]
        if unsupported:
            raise ValueError(f"--causal: {', '.join(unsupported)} cannot run causal; drop them from --names")
    if any(n < 1 for n in args.n):
        raise ValueError(f"--n values must be >= 1, got {args.n}")
    options = _per_name_options(args.opt, names)
    meta = {"matmul_gflops": round(matmul_gflops(args.threads), 1), "torch": torch.__version__, "threads": args.threads}
    results = Results(args.out / "results.json", meta)
    results.data["meta"] = meta
    points = [
        Point(name, n, args.batch, args.heads, args.head_dim, args.dtype, args.threads, not args.forward_only, options.get(name, {}), args.causal)
        for name in names
        for n in sorted(args.n)
    ]
    print(f"matmul rate {meta['matmul_gflops']} GFLOP/s on {args.threads} threads; {len(points)} points -> {results.path}")
    for point in points:
        if results.has(point):
            continue
        row = measure_in_fresh_process(point, args.timeout)
        results.add(row)
        print(_row_line(row), flush=True)
    print()
    print(table(results.rows()))
    from attnzoo.viz.scaling import plot_scaling

    plot = plot_scaling(results.rows(), args.out / "scaling.png")
    report = write_report(results, plot, " ".join(sys.argv[1:]) or "bench")
    print(f"wrote {results.path}, {plot} and {report}")
    return 0


def write_report(results: Results, plot: Path, command: str) -> Path:
    """A markdown report beside the JSON: the command, the machine's matmul rate, the table and the plot."""
    meta = results.data["meta"]
    text = "\n".join(
        [
            "# attnzoo bench",
            "",
            f"Command: `attnzoo {command}`. torch {meta['torch']}, {meta['threads']} threads, "
            f"matmul rate {meta['matmul_gflops']} GFLOP/s (2048² float32).",
            "Times are medians after warm-up. Peak memory is each point's own fresh process.",
            "`vs full` is full attention's fwd+bwd time over this row's, at the same N.",
            "",
            "```",
            table(results.rows()),
            "```",
            "",
            f"![time and memory against N]({plot.name})",
            "",
        ]
    )
    path = results.path.with_name("report.md")
    write_atomic(path, text)
    return path


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: an interrupted write never
    leaves a half-written result."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _per_name_options(items: list[str], names: list[str]) -> dict:
    from attnzoo.cli import parse_options

    out: dict[str, dict] = {}
    for item in items:
        target, dot, rest = item.partition(".")
        if not dot or target not in names:
            raise ValueError(f"--opt {item!r} must look like NAME.KEY=VALUE with NAME one of {names}")
        out.setdefault(target, {}).update(parse_options([rest]))
    for name, opts in out.items():
        make_config(name, **opts)  # unknown options fail here, before any measurement
    return out


def _fmt(value, unit=""):
    if value is None:
        return "-"
    return f"{value:.1f}{unit}" if isinstance(value, float) else f"{value}{unit}"


def _row_line(row: dict) -> str:
    p = row["point"]
    if "error" in row:
        return f"{display_name(p):<20} N={p['n']:<7} {row['error']}"
    mem = row.get("peak_rss_bytes")
    return (
        f"{display_name(p):<20} N={p['n']:<7} fwd {_fmt(row['forward_ms'], ' ms'):>10}  fwd+bwd {_fmt(row.get('forward_backward_ms'), ' ms'):>10}"
        f"  peak {_fmt(mem / 2**20 if mem else None, ' MiB'):>11}  err {row.get('rel_error_vs_full', float('nan')):.3g}"
    )


def table(rows: list[dict]) -> str:
    """Terminal table: one line per point, grouped by mechanism, with speed-up over full at the same N."""
    full = {(r["point"]["n"], r["point"].get("causal", False)): r for r in rows if r["point"]["name"] == "full" and "error" not in r}
    lines = [f"{'mechanism':<24} {'N':>7} {'fwd ms':>10} {'fwd+bwd ms':>11} {'vs full':>8} {'peak MiB':>9} {'rel err':>8}"]
    for row in sorted(rows, key=lambda r: (display_name(r["point"]), r["point"]["n"])):
        p = row["point"]
        if "error" in row:
            lines.append(f"{display_name(p):<24} {p['n']:>7}  {row['error']}")
            continue
        fb = row.get("forward_backward_ms")
        ref = full.get((p["n"], p.get("causal", False)), {}).get("forward_backward_ms")
        speedup = f"{ref / fb:.1f}x" if fb and ref else "-"
        err = row.get("rel_error_vs_full")
        lines.append(
            f"{display_name(p):<24} {p['n']:>7} {row['forward_ms']:>10.1f} {_fmt(fb):>11} {speedup:>8} "
            f"{(row['peak_rss_bytes'] or 0) / 2**20:>9.0f} {'-' if err is None else f'{err:.3f}':>8}"
        )
    return "\n".join(lines)
