"""The sweep behind ``attnzoo bench``: which points to measure, each in a fresh process, every row
stored the moment it lands (so a killed sweep resumes where it stopped), with a progress line.

A point that times out, runs out of memory or fails is stored with that status and the sweep goes
on; the next run retries it (finished "ok" points are skipped unless ``force``).
"""

from __future__ import annotations

import itertools
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone

import torch

from attnzoo.bench.harness import Point, measure_in_forked_process, start_fork_server
from attnzoo.bench.summary import peer_label
from attnzoo.clustered.routing import paper_clusters
from attnzoo.registry import REGISTRY, describe, list_mechanisms, make_config

FAMILIES = ("exact", "sparse", "clustered", "lowrank", "kernel", "mixing")

# Options whose paper value depends on N, set at each N unless --opt gives them. Routing's default of
# 8 clusters is O(N²/8): it ran out of 24 GiB at 64K, where √N clusters peaked at 1.4 GiB (benchmarks/README.md).
LENGTH_OPTIONS = {"routing": ("clusters", paper_clusters, "√N, the paper's")}  # name -> (option, n -> value, what it is)


@dataclass
class SweepConfig:
    names: tuple[str, ...] = ()  # mechanisms by name (with families: their union; neither: every mechanism)
    families: tuple[str, ...] = ()  # whole families, e.g. ("kernel", "lowrank")
    ns: tuple[int, ...] = (1024, 2048, 4096)
    batch: int | tuple[int, ...] = 1  # a tuple sweeps each value (likewise heads, head_dim, dtype)
    heads: int | tuple[int, ...] = 4
    head_dim: int | tuple[int, ...] = 64
    dtype: str | tuple[str, ...] = "float32"
    device: str = "cpu"
    causal: tuple[bool, ...] = (False,)  # (False, True): both directions, the causal one where a mechanism has it
    backward: bool = True  # also time forward+backward
    threads: int = 2
    layer: bool = False  # time whole layers (projections included) rather than cores on q, k, v
    options: dict = field(default_factory=dict)  # {name: {option: value}}
    timeout_s: float = 300.0  # per point, then recorded as "timeout"
    memory_limit_bytes: int | None = None  # per point, above its start-up; past it the point is "oom"
    budget_s: float = 20.0  # seconds of timing repeats per measurement
    max_full_n: int | None = None  # exact attention only up to here (it is O(N²)); None = every N
    peers: bool = False  # add the installed public packages (attnzoo.bench.peers) beside our layers, matched settings


def resolve_names(config: SweepConfig) -> list[str]:
    """The mechanisms a sweep covers, in registry order; unknown names or families raise."""
    known = list_mechanisms()
    unknown = [n for n in config.names if n not in known]
    if unknown:
        raise ValueError(f"unknown mechanism(s) {unknown}; choose from {', '.join(known)} (attnzoo list)")
    bad = [f for f in config.families if f not in FAMILIES]
    if bad:
        raise ValueError(f"unknown family(ies) {bad}; choose from {', '.join(FAMILIES)}")
    if not config.names and not config.families:
        return known
    return [n for n in known if n in config.names or describe(n)["family"] in config.families]


def plan(config: SweepConfig) -> tuple[list[Point], list[str]]:
    """(points to measure, notes on what was left out and why). Impossible settings raise."""
    _check_config(config)
    names = resolve_names(config)
    for name, opts in config.options.items():
        if name not in names:
            raise ValueError(f"options given for {name!r}, which this sweep does not run ({', '.join(names)})")
        make_config(name, **opts)  # unknown options fail here, before any measurement
    if config.causal == (True,):
        cannot = [n for n in names if not describe(n)["causal"]]
        if cannot:
            raise ValueError(f"causal sweep: {', '.join(cannot)} have no causal form; drop them or sweep both directions")
    points, notes = [], []
    for name in names:
        for causal in config.causal:
            if causal and not describe(name)["causal"]:
                notes.append(f"{name}: no causal form, measured non-causal only")
                continue
            for shape in grid(config):
                for n in sorted(config.ns):
                    if name == "full" and config.max_full_n is not None and n > config.max_full_n:
                        notes.append(f"full N={n}: exact attention stops at N={config.max_full_n} (O(N²) time)")
                        continue
                    options = _options_at(config, name, n)
                    points.append(Point(name, n, options=options, scaled_options=_scaled(name, options, config), **_settings(config, shape, causal)))
    for name in names:
        if name in LENGTH_OPTIONS and LENGTH_OPTIONS[name][0] not in config.options.get(name, {}):
            option, _, what = LENGTH_OPTIONS[name]
            notes.append(f"{name}: {option} = {what} at each N (--opt {name}.{option}=K fixes it)")
    notes = list(dict.fromkeys(notes))
    mixers = [n for n in names if getattr(REGISTRY[n][1], "is_layer", False)]
    if mixers and "full" in names and not config.layer:  # mixers are whole layers: give them full attention as a layer too
        points += [replace(p, layer=True) for p in points if p.name == "full"]
        notes.append(f"full also measured as a whole layer, the yardstick of the mixers ({', '.join(mixers)})")
    if config.peers:
        points += _peer_points(config, names, notes)
    return points, notes


def _options_at(config: SweepConfig, name: str, n: int) -> dict:
    """A mechanism's options at length n: the user's (--opt), over the length-scaled ones."""
    scaled = {}
    if name in LENGTH_OPTIONS:
        option, at, _ = LENGTH_OPTIONS[name]
        scaled[option] = at(n)
    return {**scaled, **config.options.get(name, {})}


def _scaled(name: str, options: dict, config: SweepConfig) -> list[str]:
    """The options in ``options`` that the sweep set from N (not the user's --opt)."""
    option = LENGTH_OPTIONS.get(name, (None,))[0]
    return [option] if option in options and option not in config.options.get(name, {}) else []


def _peer_points(config: SweepConfig, names: list[str], notes: list[str]) -> list[Point]:
    """For each installed peer whose mechanism is swept: our layer and the peer's layer at matched
    settings, both whole layers (projections included), every N and direction both have."""
    from attnzoo.bench.peers import NOT_CAUSAL, PEERS, installed

    present = installed()
    points = []
    for package, (_, mechanism, ours, _) in PEERS.items():
        if package not in present:
            notes.append(f"peer {package} is not installed (pip install {package}); skipped")
            continue
        if mechanism not in names:
            continue
        for causal in config.causal:
            if causal and (not describe(mechanism)["causal"] or package in NOT_CAUSAL):
                continue
            for shape in grid(config):
                for n in sorted(config.ns):
                    common = _settings(config, shape, causal, layer=True)
                    options = ours(n)
                    points.append(Point(mechanism, n, options=options, scaled_options=_scaled(mechanism, options, config), label=peer_label(mechanism, package), **common))
                    points.append(Point(f"peer:{package}", n, label=package, **common))
    return points


def _settings(config: SweepConfig, shape: dict, causal: bool, layer: bool | None = None) -> dict:
    """A point's fields other than mechanism, N, options and label: the config's, at one grid shape."""
    return dict(**shape, threads=config.threads, backward=config.backward, causal=causal, layer=config.layer if layer is None else layer,
                device=config.device, memory_limit_bytes=config.memory_limit_bytes, budget_s=config.budget_s)


GRID = ("batch", "heads", "head_dim", "dtype")


def grid(config: SweepConfig) -> list[dict]:
    """Every combination of the swept batch sizes, head counts, head dims and dtypes."""
    return [dict(zip(GRID, combo)) for combo in itertools.product(*(_values(getattr(config, f)) for f in GRID))]


def _values(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _check_config(config: SweepConfig) -> None:
    if not config.ns or any(not isinstance(n, int) or n < 1 for n in config.ns):
        raise ValueError(f"sequence lengths must be positive ints, got {list(config.ns)}")
    for field_name in ("batch", "heads", "head_dim", "threads"):
        for value in _values(getattr(config, field_name)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{field_name} must be a positive int, got {value!r}")
    for dtype in _values(config.dtype):
        if dtype not in ("float32", "float64", "float16", "bfloat16"):
            raise ValueError(f"dtype must be float32, float64, float16 or bfloat16, got {dtype!r}")
        if dtype == "float16" and config.device == "cpu":
            raise ValueError("float16 on the CPU is not a setting anyone runs (most kernels upcast or are missing); use bfloat16 or float32")
    if config.device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {config.device!r}")
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but torch sees no CUDA device on this machine; use --device cpu")
    if not config.causal or any(not isinstance(c, bool) for c in config.causal):
        raise ValueError(f"causal must be a tuple of bools, e.g. (False,) or (False, True), got {config.causal!r}")


def machine() -> dict:
    """What the numbers were measured on."""
    info = {"hostname": platform.node(), "platform": platform.platform(), "cores": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), platform.processor())
    except OSError:
        info["cpu"] = platform.processor()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def versions() -> dict:
    import attnzoo

    return {"torch": torch.__version__, "attnzoo": attnzoo.__version__, "python": platform.python_version()}


def row_from(point: Point, result: dict, machine_info: dict, version_info: dict) -> dict:
    """A measurement (or its failure) as a store row."""
    ok = "error" not in result
    family = "peer" if point.name.startswith("peer:") else describe(point.name)["family"]
    row = {
        "key": point.key(),
        **{k: v for k, v in asdict(point).items() if k not in ("memory_limit_bytes", "budget_s")},
        "family": family,
        "status": result.get("status", "ok" if ok else "error"),
        "message": None if ok else result["error"],
        "forward_ms": result.get("forward_ms"),
        "forward_spread_ms": result.get("forward_spread_ms"),
        "forward_backward_ms": result.get("forward_backward_ms"),
        "forward_backward_spread_ms": result.get("forward_backward_spread_ms"),
        "repeats": result.get("forward_backward_repeats", result.get("forward_repeats")),
        "tokens_per_s": result.get("tokens_per_s"),
        "peak_bytes": result.get("peak_above_inputs_bytes"),
        "error_random": _finite(result.get("rel_error_vs_full")),
        "error_peaked": _finite(result.get("rel_error_peaked")),
        "machine": machine_info,
        "versions": version_info,
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    row["layer"] = bool(point.layer or (family != "peer" and getattr(REGISTRY[point.name][1], "is_layer", False)))  # mixers are layers
    return row


def settled(row: dict | None, point: Point, timeout_s: float) -> bool:
    """Whether a stored row already answers ``point`` under these limits (see ``run``)."""
    if row is None or row["status"] == "error":
        return False
    if row["status"] == "ok":
        return True
    limits = row.get("limits") or {}
    if row["status"] == "timeout":
        return limits.get("timeout_s") is not None and limits["timeout_s"] >= timeout_s
    if "memory_limit_bytes" not in limits:
        return False
    had, has = limits["memory_limit_bytes"], point.memory_limit_bytes  # None: the whole machine
    return had is None or (has is not None and has <= had)  # out of memory with at least as much as now


def cpu_busy_seconds() -> float | None:
    """CPU time the whole machine has spent busy since boot, summed over cores (Linux /proc/stat);
    None elsewhere. Over a point: minus the point's own CPU time, what other processes took."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _finite(value: float | None) -> float | None:
    """A measured error as stored: NaN or infinity (an overflowing approximation) becomes None."""
    return value if value is None or math.isfinite(value) else None


class Progress:
    """One line over the sweep: done/total, the point being measured, elapsed and an ETA (the time
    per unit of N so far, times the N still to come). Rewrites itself on a terminal; prints one
    line per point elsewhere (logs, CI)."""

    def __init__(self, points: list[Point], stream=None):
        self.stream = stream or sys.stderr
        self.total, self.done = len(points), 0
        self.work_left = sum(p.n for p in points)
        self.work_done, self.start = 0, time.perf_counter()
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()

    def show(self, point: Point, what: str = "") -> None:
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.work_done * self.work_left if self.work_done else None
        name = point.label or point.name + (" causal" if point.causal else "")
        text = (
            f"[{self.done + 1:>{len(str(self.total))}}/{self.total}] {100 * self.done // max(self.total, 1):>3}%  "
            f"{name} N={point.n} {what}  elapsed {_clock(elapsed)}  ETA {_clock(eta) if eta is not None else '?'}"
        )
        if self.live:
            print("\r" + text.ljust(100), end="", file=self.stream, flush=True)
        else:
            print(text, file=self.stream, flush=True)

    def step(self, point: Point) -> None:
        self.done += 1
        self.work_done += point.n
        self.work_left -= point.n

    def close(self) -> None:
        if self.live:
            print(file=self.stream, flush=True)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


def pending(points: list[Point], store, *, force: bool = False, timeout_s: float = 300.0) -> list[Point]:
    """The points ``run`` would measure: all with ``force``, else those not settled in ``store``."""
    return [p for p in points if force or not settled(store.get(p.key()), p, timeout_s)]


def run(points: list[Point], store, *, force: bool = False, stream=None, measure=measure_in_forked_process, timeout_s: float = 300.0) -> int:
    """Measure every point not yet settled in ``store`` (all with ``force``), storing each row as it
    lands. Returns how many were measured.

    Settled: "ok", or a time-out under at least this ``timeout_s``, or out of memory under at most
    this point's memory limit; measuring those again would only repeat the failure. Errors, and
    failures under tighter limits (or rows that do not say their limits), are tried again."""
    todo = pending(points, store, force=force, timeout_s=timeout_s)
    progress = Progress(todo, stream)
    machine_info, version_info = machine(), versions()
    if todo and measure is measure_in_forked_process:
        start_fork_server()
    for point in todo:
        progress.show(point, "fwd+bwd" if point.backward else "fwd")
        busy, start = cpu_busy_seconds(), time.monotonic()
        result = measure(point, timeout_s)
        row = row_from(point, result, machine_info, version_info)
        row["limits"] = {"timeout_s": timeout_s, "memory_limit_bytes": point.memory_limit_bytes}
        if busy is not None and "cpu_seconds" in result:  # kept beside the row: contention is flagged, not hidden
            others = (cpu_busy_seconds() - busy - result["cpu_seconds"]) / max(time.monotonic() - start, 1e-9)
            row["others_cores"] = round(max(0.0, others), 2)
        store.put(row)
        progress.step(point)
    progress.close()
    return len(todo)
