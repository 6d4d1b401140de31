"""``attnzoo bench`` and ``attnzoo report``: the sweep's options, presets, the store and the report.

    attnzoo bench                       # the default sweep (every mechanism, N = 1K, 2K, 4K; a few minutes on 2 cores)
    attnzoo bench --preset full         # N = 1K .. 64K, both directions (hours)
    attnzoo bench --family kernel --n 4096 16384 --causal both
    attnzoo report                      # rebuild tables and plots from the store; --json / --csv export
    attnzoo report --from-json F.json   # ... from an export, e.g. the committed benchmarks/results/bench_full.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from attnzoo.bench.sweep import FAMILIES, SweepConfig, pending, plan, resolve_names, run

def _ram_share(share: float) -> int | None:
    """``share`` of this machine's physical memory in bytes (None where the OS does not say)."""
    try:
        return int(share * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


# Each preset is a SweepConfig's fields; options given on the command line override them.
PRESETS = {
    # Every mechanism at the LRA efficiency table's end points, short timing budgets: the whole
    # sweep finishes in a few minutes on a 2-core CPU (benchmarks/README.md has the measured time).
    "default": dict(ns=(1024, 2048, 4096), causal=(False,), budget_s=1.0, timeout_s=120.0),
    # The long sweep: N = 1K .. 64K both directions, exact attention up to 16K (O(N²) time).
    # A point may use 60% of the machine's memory: past that it is recorded as out of memory
    # (position-indexed N×N weights at 64K need 16 GiB and more) rather than swapping or waking
    # the kernel's OOM killer.
    "full": dict(ns=(1024, 2048, 3072, 4096, 8192, 16384, 32768, 65536), causal=(False, True), budget_s=20.0, timeout_s=1800.0,
                 max_full_n=16384, memory_limit_bytes=_ram_share(0.6)),
}
CAUSAL_CHOICES = {"no": (False,), "yes": (True,), "both": (False, True)}


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=list(PRESETS), default="default", help="default: every mechanism at 1K/2K/4K; full: to 64K")
    parser.add_argument("--names", nargs="+", default=[], metavar="NAME", help="mechanisms (default: every one, or --family)")
    parser.add_argument("--family", nargs="+", default=[], choices=FAMILIES, help="whole families")
    parser.add_argument("--n", nargs="+", type=int, default=None, help="sequence lengths (default: the preset's)")
    parser.add_argument("--batch", nargs="+", type=int, default=[1], help="batch sizes (several: each is swept)")
    parser.add_argument("--heads", nargs="+", type=int, default=[4], help="head counts")
    parser.add_argument("--head-dim", nargs="+", type=int, default=[64], help="head dims")
    parser.add_argument("--dtype", nargs="+", default=["float32"], choices=["float32", "float64", "bfloat16", "float16"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--causal", nargs="?", const="yes", default=None, choices=list(CAUSAL_CHOICES),
                        help="causal attention: yes (alone: --causal), no, or both (default: the preset's)")
    parser.add_argument("--forward-only", action="store_true")
    parser.add_argument("--layer", action="store_true", help="time whole layers on x [B, N, C] (projections included)")
    parser.add_argument("--opt", action="append", default=[], metavar="NAME.KEY=VALUE", help="option for one mechanism, repeatable")
    parser.add_argument("--out", type=Path, default=Path("attnzoo-out/bench"), help="folder of the store (bench.sqlite) and the report")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per point before it is recorded as timed out")
    parser.add_argument("--memory-limit", type=float, default=None, metavar="GIB", help="memory a point may add; past it: out of memory")
    parser.add_argument("--force", action="store_true", help="measure again points already in the store")
    parser.add_argument("--lra", type=Path, default=None,
                        help="LRA scores (JSON {name: score}) for the bubble chart (default: the LRA runs in the store)")
    parser.add_argument("--peers", action="store_true", help="add the installed public packages at matched settings (layers)")


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("attnzoo-out/bench"), help="folder of the store (bench.sqlite)")
    parser.add_argument("--json", type=Path, default=None, help="also export every row as JSON here")
    parser.add_argument("--csv", type=Path, default=None, help="also export every row as CSV here")
    parser.add_argument("--from-json", type=Path, default=None, metavar="FILE",
                        help="first put the rows of an --json export (e.g. benchmarks/results/bench_full.json) into the store")
    parser.add_argument("--lra", type=Path, default=None,
                        help="LRA scores (JSON {name: score}) for the bubble chart (default: the LRA runs in the store)")


def sweep_config(args) -> SweepConfig:
    preset = dict(PRESETS[args.preset])
    if args.n is not None:
        preset["ns"] = tuple(args.n)
    if args.causal is not None:
        preset["causal"] = CAUSAL_CHOICES[args.causal]
    if args.timeout is not None:
        preset["timeout_s"] = args.timeout
    if args.memory_limit is not None:
        if args.memory_limit <= 0:
            raise ValueError(f"--memory-limit must be a positive number of GiB, got {args.memory_limit}")
        preset["memory_limit_bytes"] = int(args.memory_limit * 2**30)
    config = SweepConfig(
        names=tuple(args.names), families=tuple(args.family), batch=tuple(args.batch), heads=tuple(args.heads),
        head_dim=tuple(args.head_dim), dtype=tuple(args.dtype), device=args.device, backward=not args.forward_only, threads=args.threads, layer=args.layer, peers=args.peers,
        **preset,
    )
    config.options = _per_name_options(args.opt, resolve_names(config))
    return config


def bench_command(args) -> int:
    from attnzoo.bench.store import Store

    config = sweep_config(args)
    points, notes = plan(config)
    for note in notes:
        print(f"note: {note}")
    store_path = args.out / "bench.sqlite"
    with Store(store_path) as store:
        todo = len(pending(points, store, force=args.force, timeout_s=config.timeout_s))
        print(f"{len(points)} points ({todo} to measure; the rest are in {store_path}, measured or failed under these limits); each in a fresh process")
        run(points, store, force=args.force, timeout_s=config.timeout_s)
        keys = {p.key() for p in points}
        rows = [r for r in store.rows() if r["key"] in keys]
        runs = store.runs()
        print(f"wrote {store.export_json(args.out / 'results.json', rows)} (this sweep's rows; attnzoo report --from-json reads it back)")
    return _report(rows, args, command="attnzoo " + " ".join(sys.argv[1:] or ["bench"]), runs=runs)


def report_command(args) -> int:
    from attnzoo.bench.store import Store

    store_path = args.out / "bench.sqlite"
    if not store_path.exists() and args.from_json is None:
        raise ValueError(f"no results at {store_path}; run attnzoo bench --out {args.out} first (or give --from-json FILE)")
    with Store(store_path) as store:
        if args.from_json is not None:
            print(f"put {store.import_json(args.from_json)} rows from {args.from_json} into {store_path}")
        rows = store.rows()
        if args.json:
            print(f"wrote {store.export_json(args.json)}")
        if args.csv:
            print(f"wrote {store.export_csv(args.csv)}")
        runs = store.runs()
    return _report(rows, args, command="attnzoo " + " ".join(sys.argv[1:] or ["report"]), runs=runs)


def _report(rows: list[dict], args, command: str, runs: list[dict] = ()) -> int:
    from attnzoo.bench.summary import peer_terminal_table, terminal_table
    from attnzoo.viz.report import write_report

    print()
    print(terminal_table(rows))
    if peers := peer_terminal_table(rows):
        print("\nagainst the public packages (speed-up: theirs / ours; memory: ours / theirs):")
        print(peers)
    scores = _lra_scores(args.lra)
    if scores is None and runs:  # LRA runs trained into this store feed the bubble chart
        from attnzoo.lra.report import scores_for_chart, table

        scores = scores_for_chart(table(list(runs)))[0] or None
    names = list(dict.fromkeys(r["name"] for r in rows if not r["name"].startswith("peer:")))
    path = write_report(rows, args.out, command=command, gallery=names, lra_scores=scores)
    print(f"\nwrote {path}")
    return 0


def _lra_scores(path: Path | None) -> dict[str, float] | None:
    if path is None:
        return None
    try:
        scores = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"--lra {path}: cannot read LRA scores ({err}); give a JSON object {{mechanism: average score}}") from None
    if not isinstance(scores, dict) or not all(isinstance(v, (int, float)) for v in scores.values()):
        raise ValueError(f"--lra {path}: expected a JSON object {{mechanism: average score}}, got {type(scores).__name__}")
    return {str(k): float(v) for k, v in scores.items()}


def _per_name_options(items: list[str], names: list[str]) -> dict:
    from attnzoo.cli import parse_options

    out: dict[str, dict] = {}
    for item in items:
        target, dot, rest = item.partition(".")
        if not dot or target not in names:
            raise ValueError(f"--opt {item!r} must look like NAME.KEY=VALUE with NAME one of the swept mechanisms ({', '.join(names)})")
        out.setdefault(target, {}).update(parse_options([rest]))
    return out
