"""Issue 7 results on this CPU: ListOps (full LRA length, 500–2,000 tokens) and Pathfinder-32 with the
``cpu`` preset (the small xformers model: 2 layers, width 64, 2 heads) for full attention and
efficient mechanisms of every family.

    python benchmarks/lra_cpu.py                         # every task × mechanism below; resumable
    python benchmarks/lra_cpu.py --tasks listops --mechanisms full linear
    python benchmarks/lra_cpu.py --tasks pathfinder32 --pathfinder-level easy   # LRA's easier Pathfinder (contour 6)
    python benchmarks/lra_cpu.py --export                # only rewrite benchmarks/lra/ from the store

Each run is ``torchrun --standalone --nproc-per-node 2 -m attnzoo.lra.train TASK --mechanism NAME
--preset cpu --resume`` into the store attnzoo-out/lra-cpu/results.sqlite: two single-threaded
processes train a ListOps step 1.4x faster here than one process with two threads (measured:
linear, 123k vs 88k positions/s). A finished run is skipped and an interrupted one resumes from its
checkpoint, so killing this script loses at most the steps since the last validation (the store and
checkpoints live in attnzoo-out/, which is not committed: a run finished in benchmarks/lra/runs.json
is skipped too, and the export merges that file with the store). Afterwards
benchmarks/lra/ gets runs.json (every finished run: accuracies, the validation history, wall time,
tokens/s, peak RSS), table.txt (``attnzoo lra report``'s table), curves.png (validation accuracy per step) and bubbles.png (score against
the speed and memory of the committed default benchmark at N = 2K, benchmarks/results/bench_default.json).
Data comes from ``attnzoo lra prepare`` (run on demand; Pathfinder-32 with the preset's data options, at
``--pathfinder-level``: LRA's hard by default, or easy / intermediate, reported in a column of their own).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from attnzoo.bench.files import write_atomic
from attnzoo.bench.store import Store
from attnzoo.lra.pathfinder import LEVELS
from attnzoo.lra.report import format_table, table, write_chart, write_curves
from attnzoo.lra.train import make_config

HERE = Path(__file__).resolve().parent
OUT = HERE / "lra"
STORE = Path("attnzoo-out/lra-cpu/results.sqlite")
RUNS = Path("attnzoo-out/lra-cpu/runs")
TASKS = ("listops", "pathfinder32")
# full, then efficient mechanisms of every family (sparse, clustered, low rank, kernel, mixing): the
# first seven cover the "full and six efficient mechanisms", the last two a second of a family
MECHANISMS = ("full", "local", "reformer", "linformer", "performer", "fnet", "bigbird", "nystrom", "linear")


KEEP = ("key", "task", "name", "test_accuracy", "valid_accuracy", "best_step", "step", "train_seconds", "steps_per_s",
        "tokens_per_s", "peak_bytes", "world_size", "device", "length", "history", "config", "machine", "versions", "updated_at")


def committed_runs() -> list[dict]:
    """The finished runs in the committed benchmarks/lra/runs.json (none before the first export)."""
    return json.loads((OUT / "runs.json").read_text()) if (OUT / "runs.json").exists() else []


def finished_runs() -> list[dict]:
    """The committed runs.json merged with the store's finished runs (the store wins on a shared key).

    The store lives in attnzoo-out/, which a fresh checkout does not have: without the merge, the first
    run finished there would export a runs.json holding only itself and drop every earlier result."""
    merged = {r["key"]: {**r, "status": "done", "preset": r["config"]["preset"]} for r in committed_runs()}
    if STORE.exists():
        with Store(STORE) as store:
            merged.update({r["key"]: r for r in store.runs() if r["status"] == "done"})
    return list(merged.values())


def export() -> None:
    runs = finished_runs()
    entries = table(runs)
    OUT.mkdir(parents=True, exist_ok=True)
    write_atomic(OUT / "runs.json", json.dumps([{k: r.get(k) for k in KEEP} for r in runs], indent=1) + "\n")
    write_atomic(OUT / "table.txt", format_table(entries) + "\n")
    bench = json.loads((HERE / "results" / "bench_default.json").read_text())["rows"]
    chart = write_chart(entries, [r for r in bench if r["status"] == "ok"], OUT / "bubbles.png", n=2048)
    curves = write_curves(runs, OUT / "curves.png")
    print(format_table(entries))
    print(f"\nwrote {OUT / 'runs.json'}, {OUT / 'table.txt'}" + "".join(f", {p}" for p in (chart, curves) if p))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--mechanisms", nargs="+", default=list(MECHANISMS))
    parser.add_argument("--procs", type=int, default=2, help="data-parallel processes under torchrun; 1: one plain process (no torchrun)")
    parser.add_argument("--pathfinder-level", choices=list(LEVELS), default="hard",
                        help="Pathfinder-32's difficulty (LRA reports hard; easy draws snakes of 6 paddles, not 14)")
    parser.add_argument("--export", action="store_true", help="only export the finished runs")
    args = parser.parse_args()
    if not args.export:
        # a fresh checkout has no store, so the committed results say what is already finished
        committed = {r["key"] for r in committed_runs()}
        for task in args.tasks:
            for name in args.mechanisms:
                data = make_config(task, name, "cpu").data_options
                if task == "pathfinder32":
                    data = {**data, **LEVELS[args.pathfinder_level]}
                key = make_config(task, name, "cpu", data_options=data).key()  # checks the names before anything starts
                if key in committed:
                    print(f"{key}: finished in {OUT / 'runs.json'}; skipped", flush=True)
                    continue
                command = ["attnzoo.lra.train", task, "--mechanism", name, "--preset", "cpu", "--resume",
                           "--store", str(STORE), "--out", str(RUNS), "--set", "log_every=50",
                           *(f"--data-opt={k}={v}" for k, v in data.items())]
                launcher = [sys.executable, "-m"] if args.procs == 1 else \
                    [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.procs}", "-m"]
                start = time.perf_counter()
                code = subprocess.call(launcher + command)
                print(f"{key}: exit {code} after {time.perf_counter() - start:.0f} s in this call", flush=True)
                if code:
                    sys.exit(code)
    export()


if __name__ == "__main__":
    main()
