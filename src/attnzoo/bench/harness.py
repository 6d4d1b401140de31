"""Speed / memory / error harness: one measurement point per fresh process, results merged into one JSON.

A point = (mechanism, N, batch, heads, head dim, dtype, options). Its process times forward and
forward+backward (median after warm-up), reads its own peak memory, and, where N is small
enough for exact attention, the error against exact softmax attention on the same q, k, v.
The results file is rewritten atomically after every point, and points already in it are
skipped, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from attnzoo.bench.files import write_atomic
from attnzoo.registry import make_config

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
    # options the sweep sets from N (routing's √N clusters): one curve across N, not a curve per value; not part of the key
    scaled_options: list = field(default_factory=list)
    label: str = ""  # display name in tables and plots (default: name, plus "causal"); not part of the key
    layer: bool = False  # time the whole layer on x [B, N, H·D] (projections included); mixers always are layers
    device: str = "cpu"  # "cpu" or "cuda"
    memory_limit_bytes: int | None = None  # address space the point may add after start-up (a simulated small machine); not part of the key
    budget_s: float = 20.0  # seconds of repeats per timing (at least 3 runs where time allows); not part of the key

    def key(self) -> str:
        opts = ",".join(f"{k}={self.options[k]}" for k in sorted(self.options))
        key = f"{self.name}[{opts}]|n={self.n}|b={self.batch}|h={self.heads}|d={self.head_dim}|{self.dtype}|t={self.threads}"
        return key + ("|causal" if self.causal else "") + ("|layer" if self.layer else "") + ("" if self.device == "cpu" else f"|{self.device}")


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
    median, _, repeats = _timing_ms(fn, warmup=warmup, budget_s=budget_s, max_repeats=max_repeats)
    return median, repeats


def _timing_ms(fn, *, warmup: int, budget_s: float, max_repeats: int, min_repeats: int = 1) -> tuple[float, list[float], int]:
    """(median, [p25, p75], repeats) in ms of fn after ``warmup`` calls; repeats stop at
    ``max_repeats`` or once ``budget_s`` is spent (after at least ``min_repeats``)."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < max_repeats and (len(times) < min_repeats or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    quartiles = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else [times[0]] * 3
    return statistics.median(times), [quartiles[0], quartiles[2]], len(times)


PEAKED = 3.0  # q and k scaled by this for the peaked-attention error: logits ×9, most rows nearly one-hot


def measure(point: Point) -> dict:
    """Run in a fresh process: timings, peak memory and error for one point."""
    from attnzoo.functional import full_attention
    from attnzoo.registry import REGISTRY

    torch.set_num_threads(point.threads)
    torch.manual_seed(0)
    dtype, device = getattr(torch, point.dtype), torch.device(point.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{point.key()}: device cuda asked for, but torch sees no CUDA device here")
    _limit_memory(point.memory_limit_bytes)
    config_cls, core_cls = REGISTRY.get(point.name, (None, None))
    if point.name.startswith("peer:"):  # a public package's layer (attnzoo.bench.peers)
        from attnzoo.bench.peers import build_peer

        dim = point.heads * point.head_dim
        core = build_peer(point.name.removeprefix("peer:"), dim=dim, heads=point.heads, n=point.n, causal=point.causal).to(device, dtype)
        inputs = (torch.randn(point.batch, point.n, dim, dtype=dtype, device=device, requires_grad=point.backward),)
    elif point.layer or getattr(core_cls, "is_layer", False):
        from attnzoo.registry import build

        dim = point.heads * point.head_dim
        core = build(point.name, dim=dim, heads=point.heads, causal=point.causal, max_len=point.n, **point.options).to(device, dtype)
        inputs = (torch.randn(point.batch, point.n, dim, dtype=dtype, device=device, requires_grad=point.backward),)
    else:
        core = core_cls(make_config(point.name, **point.options), heads=point.heads, head_dim=point.head_dim, causal=point.causal,
                        max_len=point.n).to(device)
        shape = (point.batch, point.heads, point.n, point.head_dim)
        inputs = tuple(torch.randn(shape, dtype=dtype, device=device, requires_grad=point.backward) for _ in range(3))
    core.eval()  # inference behaviour (no dropout) for timing and the error column
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def forward():
        with torch.no_grad():
            core(*inputs)
        sync()

    def forward_backward():
        core(*inputs).sum().backward()
        for t in inputs:
            t.grad = None
        core.zero_grad(set_to_none=True)
        sync()

    result = {"point": asdict(point), "key": point.key()}
    # Peak memory first, before any warm-up leaves freed-but-kept allocator pages behind (Linux: reset
    # the high-water mark, then read it after one forward+backward; layout building is included).
    if device.type == "cuda":
        sync()
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        (forward_backward if point.backward else forward)()
        result["peak_rss_bytes"] = _status("VmHWM:")
        result["peak_above_inputs_bytes"] = torch.cuda.max_memory_allocated(device) - before
    else:
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
    result["forward_ms"], result["forward_spread_ms"], result["forward_repeats"] = _timing_ms(
        forward, warmup=1, budget_s=point.budget_s, max_repeats=7, min_repeats=3 if point.budget_s >= 1 else 1
    )
    if point.backward:
        # The memory run above was this path's warm-up.
        result["forward_backward_ms"], result["forward_backward_spread_ms"], result["forward_backward_repeats"] = _timing_ms(
            forward_backward, warmup=0, budget_s=1.5 * point.budget_s, max_repeats=5, min_repeats=3 if point.budget_s >= 1 else 1
        )
    seconds = (result.get("forward_backward_ms") or result["forward_ms"]) / 1e3
    result["tokens_per_s"] = point.batch * point.n / seconds
    if point.n <= ERROR_MAX_N and len(inputs) == 3:  # cores approximate softmax attention; a layer is its own thing
        q, k, v = inputs
        with torch.no_grad():
            for field_name, sharpen in (("rel_error_vs_full", 1.0), ("rel_error_peaked", PEAKED)):
                qs, ks = q * sharpen, k * sharpen
                exact = full_attention(qs, ks, v, causal=point.causal)
                result[field_name] = float((core(qs, ks, v) - exact).norm() / exact.norm())
    layout_pairs = pairs_of(core, point)
    if layout_pairs is not None:
        result["touched_pairs"], result["allowed_block_pairs"] = layout_pairs
    return result


def _limit_memory(extra_bytes: int | None) -> None:
    """Cap the address space at what the process holds now plus ``extra_bytes`` (RLIMIT_AS), so
    an allocation past it fails in this process as it would on a smaller machine."""
    if extra_bytes is None:
        return
    import resource

    now = _status("VmSize:") or 0
    resource.setrlimit(resource.RLIMIT_AS, (now + int(extra_bytes), resource.getrlimit(resource.RLIMIT_AS)[1]))


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
        return failure(point, "timeout", f"timed out after {timeout_s:g} s")
    if res.returncode == -9:  # SIGKILL: on Linux almost always the kernel's out-of-memory killer
        return failure(point, "oom", "killed (SIGKILL), most likely out of memory")
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
        return failure(point, "error", f"exit {res.returncode}: {tail[0]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def failure(point: Point, status: str, message: str) -> dict:
    """The result of a point that did not finish: its status ("timeout", "oom", "error") and why."""
    return {"point": asdict(point), "key": point.key(), "status": status, "error": message}


def measure_in_forked_process(point: Point, timeout_s: float | None = None) -> dict:
    """``measure_in_fresh_process`` without paying torch's import (~2.5 s here) per point: each point
    runs in its own process forked from a server that imported attnzoo once, so it still has its
    own memory high-water mark and dies with everything it allocated."""
    parent, child = _FORKS.Pipe(duplex=False)
    proc = _FORKS.Process(target=_forked_child, args=(child, json.dumps(asdict(point))), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout_s):
            proc.kill()
            return failure(point, "timeout", f"timed out after {timeout_s:g} s")
        return json.loads(parent.recv())
    except EOFError:  # the child died without an answer
        proc.join()
        if proc.exitcode == -9:  # SIGKILL: on Linux almost always the kernel's out-of-memory killer
            return failure(point, "oom", "killed (SIGKILL), most likely out of memory")
        return failure(point, "error", f"exit {proc.exitcode} without a result")
    finally:
        proc.join()
        parent.close()


def _forked_child(conn, point_json: str) -> None:
    import traceback

    from attnzoo.bench.point import run

    point = Point(**json.loads(point_json))
    try:
        result = run(point)
    except Exception as err:  # reported as this point's error; the sweep goes on
        result = failure(point, "error", traceback.format_exception_only(type(err), err)[-1].strip()[:500])
    conn.send(json.dumps(result))
    conn.close()


def _fork_context():
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["attnzoo.bench.point"])  # torch and attnzoo imported once, in the server
    return context


_FORKS = _fork_context()


def start_fork_server() -> None:
    """Start the server and let it finish importing torch (seconds of CPU) now, not during the first
    point, where that work would read as another process contending for the cores."""
    proc = _FORKS.Process(target=_nothing, daemon=True)  # forked only once the server has imported
    proc.start()
    proc.join()


def _nothing() -> None:
    pass


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


def _fmt(value, unit=""):
    if value is None:
        return "-"
    return f"{value:.1f}{unit}" if isinstance(value, float) else f"{value}{unit}"


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
