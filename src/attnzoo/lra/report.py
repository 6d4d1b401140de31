"""``attnzoo lra report``: the LRA table from the results store beside the published numbers, and
the score / speed / memory bubble chart, and the validation curves of the runs in the table.

A cell is the test accuracy (%) of the best validation checkpoint of the finished run of that task
and mechanism (several runs: the one with the best validation accuracy, so the test split never
chooses). Averages, as labelled: over LRA's five tasks without Path-X (the LRA paper's "Avg"),
and over six tasks with a missing or failed Path-X counted as 50 (chance). An average needs every
one of its tasks. Pathfinder-32 drawn at another difficulty than LRA's (``--data-opt contour_length=6``,
LRA's "easy") gets a column of its own after Path-X, outside the averages.
"""

from __future__ import annotations

from pathlib import Path

from attnzoo.lra.pathfinder import PathfinderConfig
from attnzoo.lra.presets import PUBLISHED, PUBLISHED_TASKS

TASK_ORDER = ("listops", "text", "retrieval", "image", "pathfinder32", "pathx")
TASK_TITLES = {"listops": "ListOps", "text": "Text", "retrieval": "Retrieval", "image": "Image", "pathfinder32": "Pathfinder",
               "pathx": "Path-X"}


LRA_CONTOUR = PathfinderConfig.contour_length  # Pathfinder-32 as LRA reports it ("hard"); LEVELS has the others


def column_of(run: dict) -> str:
    """The table column a run fills: its task, except Pathfinder-32 drawn with snakes of another length
    than LRA's reported 14 paddles (``--pathfinder-level easy``: 6), which is not the published task and
    gets a column of its own, "pathfinder32@contour6", outside the averages."""
    options = (run.get("config") or {}).get("data_options") or {}
    contour = options.get("contour_length", LRA_CONTOUR)
    return run["task"] if run["task"] != "pathfinder32" or contour == LRA_CONTOUR else f"pathfinder32@contour{contour}"


def column_title(column: str) -> str:
    if column in TASK_TITLES:
        return TASK_TITLES[column]
    return f"Pathfinder (contour {column.split('@contour')[1]})"


def _extra_columns(columns: set[str]) -> list[str]:
    """The columns beyond LRA's six, by contour length."""
    return sorted(set(columns) - set(TASK_ORDER), key=lambda c: int(c.split("@contour")[1]))


def best_runs(runs: list[dict]) -> dict[tuple[str, str], dict]:
    """{(mechanism, column): the finished run with the best validation accuracy} (ties: the newest);
    the column is the task (``column_of``)."""
    chosen: dict[tuple[str, str], dict] = {}
    for run in runs:
        if run["status"] != "done" or run.get("test_accuracy") is None:
            continue
        key = (run["name"], column_of(run))
        mine = (run["valid_accuracy"] or 0.0, run["updated_at"])
        if key not in chosen or mine > (chosen[key]["valid_accuracy"] or 0.0, chosen[key]["updated_at"]):
            chosen[key] = run
    return chosen


def averages(scores: dict[str, float]) -> tuple[float | None, float | None]:
    """(five-task average without Path-X, six-task average with Path-X = 50 when missing), in %;
    None where a needed task has no score."""
    five = [scores.get(t) for t in PUBLISHED_TASKS]
    if any(s is None for s in five):
        return None, None
    six = five + [scores.get("pathx", 50.0)]
    return sum(five) / 5, sum(six) / 6


def table(runs: list[dict]) -> list[dict]:
    """One entry per mechanism with a finished run: {"name", "scores" {task: %}, "avg5", "avg6",
    "published" {task: %} or None, "published_avg5"}. Full first, then by name."""
    chosen = best_runs(runs)
    names = sorted({name for name, _ in chosen}, key=lambda n: (n != "full", n))
    columns = [*TASK_ORDER, *_extra_columns({column for _, column in chosen})]
    out = []
    for name in names:
        scores = {task: 100.0 * chosen[(name, task)]["test_accuracy"] for task in columns if (name, task) in chosen}
        avg5, avg6 = averages(scores)
        published = dict(zip(PUBLISHED_TASKS, PUBLISHED[name])) if name in PUBLISHED else None
        out.append({"name": name, "scores": scores, "avg5": avg5, "avg6": avg6, "published": published,
                    "published_avg5": sum(PUBLISHED[name]) / 5 if name in PUBLISHED else None,
                    "presets": sorted({chosen[(name, t)].get("preset", "?") for t in scores})})
    return out


def format_table(entries: list[dict]) -> str:
    """The table as text: ours, and the published figure in brackets where LRA reported one."""
    if not entries:
        return "no finished LRA runs in the store yet: run attnzoo lra train TASK --mechanism NAME"
    # columns beyond LRA's six (Pathfinder at another difficulty) only when some run has them
    columns = [*TASK_ORDER, *_extra_columns({t for e in entries for t in e["scores"]})]
    header = ["mechanism", *(column_title(t) for t in columns), "Avg (5, no Path-X)", "Avg (6, Path-X fail = 50)", "preset"]
    rows = [header]
    for e in entries:
        cells = [e["name"]]
        for task in columns:
            ours = e["scores"].get(task)
            theirs = e["published"].get(task) if e["published"] else None
            text = "-" if ours is None else f"{ours:.2f}"
            if theirs is not None:
                text += f" [{theirs:.2f}]"
            elif task == "pathx" and e["published"]:
                text += " [FAIL]"
            cells.append(text)
        avg5 = "-" if e["avg5"] is None else f"{e['avg5']:.2f}"
        if e["published_avg5"] is not None:
            avg5 += f" [{e['published_avg5']:.2f}]"
        cells += [avg5, "-" if e["avg6"] is None else f"{e['avg6']:.2f}", ",".join(e["presets"])]
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    notes = ("[x]: LRA's published test accuracy (Tay et al. 2021, Table 1; its averages computed from the five tasks). "
             "Ours: test accuracy of the best validation checkpoint; '-': no finished run.")
    if len(columns) > len(TASK_ORDER):
        notes += (" Pathfinder (contour N): Pathfinder-32 with snakes of N paddles instead of LRA's 14 (not the published "
                  "task; not in the averages).")
    return "\n".join(lines) + "\n" + notes


def format_unfinished(runs: list[dict]) -> str:
    """Runs that are not done (running, interrupted, failed), one line each, or "" when none."""
    lines = []
    for run in runs:
        if run["status"] == "done":
            continue
        steps = (run.get("config") or {}).get("steps", "?")
        best = f"best valid {run['valid_accuracy']:.4f} at step {run.get('best_step')}" if run.get("best_step") else "not validated yet"
        why = f" ({run['message']})" if run.get("message") else ""
        lines.append(f"  {run['key']}: {run['status']} at step {run['step']}/{steps}, {best}{why}")
    return "not finished (attnzoo lra train ... --resume continues a run):\n" + "\n".join(lines) if lines else ""


def scores_for_chart(entries: list[dict]) -> tuple[dict[str, float], str]:
    """The accuracy figure each mechanism gets on the bubble chart: the five-task average when every
    mechanism shown has it, else the mean over the tasks every mechanism has (named in the label)."""
    if entries and all(e["avg5"] is not None for e in entries):
        return {e["name"]: e["avg5"] for e in entries}, "LRA average (5 tasks)"
    common = [t for t in TASK_ORDER if all(t in e["scores"] for e in entries)]
    if not common:
        return {}, ""
    label = "mean test accuracy over " + ", ".join(TASK_TITLES[t] for t in common)
    return {e["name"]: sum(e["scores"][t] for t in common) / len(common) for e in entries}, label


def write_chart(entries: list[dict], bench_rows: list[dict], path: Path, n: int = 4096) -> Path | None:
    """The bubble chart: speed and memory relative to full at ``n`` from the benchmark rows (fwd+bwd,
    non-causal), the accuracy figure from ``scores_for_chart``. None when nothing can be drawn."""
    from attnzoo.bench.summary import lra_efficiency
    from attnzoo.viz.bubble import bubble_points, plot_bubbles

    scores, label = scores_for_chart(entries)
    rows = [r for r in bench_rows if not r.get("causal") and not r["name"].startswith("peer:")]
    if not scores or not rows:
        return None
    ns = sorted({r["n"] for r in rows})
    if n not in ns:
        n = max((m for m in ns if m <= n), default=ns[0])
    points = bubble_points(lra_efficiency(rows, ns=ns), scores, n)
    if not points:
        return None
    return plot_bubbles(points, path, title=f"{label} vs speed at N = {n}; bubble area = peak memory (relative to full)")


def curve_series(runs: list[dict]) -> dict[str, list[dict]]:
    """{column: [{"name", "steps", "valid" (%), "best_step", "test" (%)}, ...]}, columns in table order and
    in each, full first and then by name: the validation history of each mechanism's run in the
    table (``best_runs``); runs without a history are left out."""
    chosen = {key: run for key, run in best_runs(runs).items() if run.get("history")}
    present = {column for _, column in chosen}
    series: dict[str, list[dict]] = {}
    for column in [c for c in TASK_ORDER if c in present] + _extra_columns(present):
        for (name, col), run in sorted(chosen.items(), key=lambda item: (item[0][0] != "full", item[0][0])):
            if col == column:
                series.setdefault(column, []).append({
                    "name": name, "steps": [h[0] for h in run["history"]], "valid": [100 * h[3] for h in run["history"]],
                    "best_step": run.get("best_step"), "test": 100 * run["test_accuracy"],
                })
    return series


def write_curves(runs: list[dict], path: Path) -> Path | None:
    """Validation accuracy against training step (``curve_series``), a panel per task column; a dot
    marks the checkpoint whose test accuracy the table reports. None when there is nothing to draw."""
    from attnzoo.viz.figure import pyplot, save

    series = curve_series(runs)
    if not series:
        return None
    plt = pyplot()
    names = sorted({line["name"] for lines in series.values() for line in lines}, key=lambda name: (name != "full", name))
    colour = {name: plt.get_cmap("tab20")(i % 20) for i, name in enumerate(names)}  # one colour per mechanism in every panel
    fig, axes = plt.subplots(1, len(series), figsize=(6.4 * len(series), 4.4), squeeze=False)
    for ax, (column, lines) in zip(axes[0], series.items()):
        for line in lines:
            ax.plot(line["steps"], line["valid"], marker=".", markersize=3, linewidth=1.2, color=colour[line["name"]],
                    label=f"{line['name']} (test {line['test']:.2f})")
            if line["best_step"] in line["steps"]:
                best = line["valid"][line["steps"].index(line["best_step"])]
                ax.plot([line["best_step"]], [best], "o", color=colour[line["name"]], markersize=7)
        ax.set_title(f"{column_title(column)}: validation accuracy; dots: the checkpoints tested", fontsize=10)
        low, high = ax.get_ylim()
        if high - low < 10:  # at least 10 points tall, so noise around chance does not look like learning
            ax.set_ylim((low + high) / 2 - 5, (low + high) / 2 + 5)
        ax.set_xlabel("training step")
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    return save(fig, path, dpi=110)


def report(store_path: str | Path, out: str | Path) -> str:
    """The table as text, and the chart written beside it when benchmark rows exist in the store."""
    from attnzoo.bench.files import write_atomic
    from attnzoo.bench.store import Store

    store_path, out = Path(store_path), Path(out)
    if not store_path.exists():
        raise ValueError(f"no results store at {store_path}; train first (attnzoo lra train ...) or pass --store")
    with Store(store_path) as store:
        runs, rows = store.runs(), store.rows(status="ok")
    entries = table(runs)
    text = format_table(entries)
    unfinished = format_unfinished(runs)
    if unfinished:
        text += "\n\n" + unfinished
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "lra_table.txt", text + "\n")
    chart = write_chart(entries, rows, out / "lra_bubbles.png")
    curves = write_curves(runs, out / "lra_curves.png")
    written = f"wrote {out / 'lra_table.txt'}" + (f", {curves}" if curves else "")
    written += f" and {chart}" if chart else " (no chart: no benchmark rows or no scores)"
    return text + "\n\n" + written
