"""`attnzoo lra report` against hand-computed expectations: which run fills a cell, the two averages,
the table beside LRA's published numbers, the chart's accuracy figure, and the files it writes."""

from __future__ import annotations

import re

import pytest

from attnzoo.bench.store import Store
from attnzoo.cli import main
from attnzoo.lra.report import averages, best_runs, curve_series, format_table, report, scores_for_chart, table, write_curves
from tests.bench.test_store import minimal_row

# Long Range Arena, Table 1 (Tay et al. 2021, arxiv.org/abs/2011.04006), copied from the paper, not
# from attnzoo.lra.presets: ListOps, Text, Retrieval, Image, Pathfinder (Path-X: FAIL for all).
LRA_TRANSFORMER = ("36.37", "64.27", "57.46", "42.44", "71.40")  # Avg 54.39
LRA_BIGBIRD = ("36.05", "64.02", "59.29", "40.83", "74.87")  # Avg 55.01
FIVE = ("listops", "text", "retrieval", "image", "pathfinder32")
COLUMNS = ["mechanism", "ListOps", "Text", "Retrieval", "Image", "Pathfinder", "Path-X",
           "Avg (5, no Path-X)", "Avg (6, Path-X fail = 50)", "preset"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run(name, task, *, valid, test, status="done", at="2026-01-01T00:00:00+00:00", key=None, preset="cpu"):
    """A run as Store.runs gives it back (record keys merged in)."""
    return {"key": key or f"{task}/{name}/{valid}/{test}/{status}/{at}", "task": task, "name": name, "status": status, "step": 100,
            "valid_accuracy": valid, "test_accuracy": test, "updated_at": at, "preset": preset}


def parse(text: str) -> dict[str, dict[str, str]]:
    """format_table's text -> {mechanism: {column title: cell}}; checks the header and the rule under it."""
    lines = text.splitlines()
    assert re.split(r"\s{2,}", lines[0].strip()) == COLUMNS
    assert set(lines[1]) == {"-"} and len(lines[1]) == len(lines[0])
    out = {}
    for line in lines[2:]:
        if line.startswith("[x]"):  # the notes close the table
            break
        cells = re.split(r"\s{2,}", line.strip())
        assert len(cells) == len(COLUMNS), line
        out[cells[0]] = dict(zip(COLUMNS, cells))
    return out


# -- best_runs -----------------------------------------------------------------------------------


def test_best_run_is_chosen_by_validation_never_by_test():
    best_valid = run("full", "listops", valid=0.60, test=0.30)
    best_test = run("full", "listops", valid=0.50, test=0.90)
    for runs in ([best_valid, best_test], [best_test, best_valid]):
        assert best_runs(runs) == {("full", "listops"): best_valid}


def test_best_run_ignores_unfinished_runs_and_runs_without_a_test_accuracy():
    done = run("full", "text", valid=0.55, test=0.52)
    better_but_unfinished = [
        run("full", "text", valid=0.99, test=0.99, status=status) for status in ("running", "interrupted", "failed")
    ] + [run("full", "text", valid=0.98, test=None)]
    assert best_runs([*better_but_unfinished, done]) == {("full", "text"): done}
    assert best_runs(better_but_unfinished) == {}


def test_best_run_tie_goes_to_the_newest():
    old = run("local", "image", valid=0.40, test=0.41, at="2026-01-01T00:00:00+00:00")
    new = run("local", "image", valid=0.40, test=0.35, at="2026-03-01T12:00:00+00:00")
    for runs in ([old, new], [new, old]):
        assert best_runs(runs) == {("local", "image"): new}


def test_best_run_is_per_mechanism_and_task():
    runs = [
        run("full", "listops", valid=0.3, test=0.31),
        run("full", "image", valid=0.2, test=0.21),
        run("local", "listops", valid=0.1, test=0.11),
        run("local", "listops", valid=0.15, test=0.12),
    ]
    assert best_runs(runs) == {("full", "listops"): runs[0], ("full", "image"): runs[1], ("local", "listops"): runs[3]}


# -- averages ------------------------------------------------------------------------------------

SCORES = {"listops": 40.0, "text": 60.0, "retrieval": 70.0, "image": 50.0, "pathfinder32": 80.0}  # sum 300


@pytest.mark.parametrize(
    "pathx, avg5, avg6",
    [
        (None, 60.0, 350.0 / 6),  # Path-X missing: counted as chance, (300 + 50) / 6 = 58.33
        (62.0, 60.0, 362.0 / 6),  # Path-X present: used in the six, never in the five: 60.33
        (20.0, 60.0, 320.0 / 6),  # below chance is still used as is: 53.33
    ],
    ids=["pathx-missing", "pathx-62", "pathx-20"],
)
def test_averages(pathx, avg5, avg6):
    scores = dict(SCORES) if pathx is None else {**SCORES, "pathx": pathx}
    got5, got6 = averages(scores)
    assert got5 == pytest.approx(avg5, abs=1e-12)
    assert got6 == pytest.approx(avg6, abs=1e-12)


@pytest.mark.parametrize("missing", FIVE)
def test_averages_need_all_five_tasks(missing):
    scores = {task: s for task, s in SCORES.items() if task != missing}
    assert averages(scores) == (None, None)
    assert averages({**scores, "pathx": 70.0}) == (None, None)  # Path-X does not stand in for a missing task


# -- table / format_table ------------------------------------------------------------------------

FULL_TEST = {"listops": 0.4012, "text": 0.6543, "retrieval": 0.7766, "image": 0.4321, "pathfinder32": 0.7000}
FULL_AVG5 = "59.28"  # (40.12 + 65.43 + 77.66 + 43.21 + 70.00) / 5 = 296.42 / 5 = 59.284
FULL_AVG6 = "57.74"  # (296.42 + 50) / 6 = 57.7367


def mixed_runs():
    """full: all five (plus a worse-validation decoy), no Path-X; bigbird (published): ListOps and
    Path-X only; nystrom (not in LRA): Text and Path-X; a running local run that must not show."""
    runs = [run("full", task, valid=0.5, test=acc) for task, acc in FULL_TEST.items()]
    runs.append(run("full", "listops", valid=0.1, test=0.99))
    runs += [run("bigbird", "listops", valid=0.3, test=0.3333), run("bigbird", "pathx", valid=0.6, test=0.5555, preset="lra")]
    runs += [run("nystrom", "text", valid=0.7, test=0.6125), run("nystrom", "pathx", valid=0.5, test=0.5)]
    runs.append(run("local", "listops", valid=0.9, test=0.9, status="running"))
    return runs


def test_table_entries():
    entries = table(mixed_runs())
    assert [e["name"] for e in entries] == ["full", "bigbird", "nystrom"]  # full first, then by name
    full, bigbird, nystrom = entries
    assert full["scores"] == pytest.approx({task: 100 * acc for task, acc in FULL_TEST.items()}, abs=1e-9)
    assert full["avg5"] == pytest.approx(59.284, abs=1e-9)
    assert full["avg6"] == pytest.approx(346.42 / 6, abs=1e-9)
    assert full["published"] == pytest.approx(dict(zip(FIVE, map(float, LRA_TRANSFORMER))), abs=1e-9)
    assert full["published_avg5"] == pytest.approx(54.388, abs=1e-9)
    assert bigbird["scores"] == pytest.approx({"listops": 33.33, "pathx": 55.55}, abs=1e-9)
    assert (bigbird["avg5"], bigbird["avg6"]) == (None, None)
    assert bigbird["published"] == pytest.approx(dict(zip(FIVE, map(float, LRA_BIGBIRD))), abs=1e-9)
    assert bigbird["presets"] == ["cpu", "lra"]
    assert nystrom["scores"] == pytest.approx({"text": 61.25, "pathx": 50.0}, abs=1e-9)
    assert (nystrom["published"], nystrom["published_avg5"]) == (None, None)


def test_format_table_cells():
    cells = parse(format_table(table(mixed_runs())))
    assert list(cells) == ["full", "bigbird", "nystrom"]
    ours = ("40.12", "65.43", "77.66", "43.21", "70.00")
    assert [cells["full"][t] for t in COLUMNS[1:6]] == [f"{a} [{b}]" for a, b in zip(ours, LRA_TRANSFORMER)]
    assert cells["full"]["Path-X"] == "- [FAIL]"
    assert cells["full"]["Avg (5, no Path-X)"] == f"{FULL_AVG5} [54.39]"
    assert cells["full"]["Avg (6, Path-X fail = 50)"] == FULL_AVG6
    assert cells["full"]["preset"] == "cpu"

    assert [cells["bigbird"][t] for t in COLUMNS[1:7]] == [
        "33.33 [36.05]", "- [64.02]", "- [59.29]", "- [40.83]", "- [74.87]", "55.55 [FAIL]"
    ]
    assert cells["bigbird"]["Avg (5, no Path-X)"] == "- [55.01]"
    assert cells["bigbird"]["Avg (6, Path-X fail = 50)"] == "-"
    assert cells["bigbird"]["preset"] == "cpu,lra"

    # nystrom is not in LRA's table: no brackets anywhere, and no [FAIL] under Path-X
    assert [cells["nystrom"][t] for t in COLUMNS[1:10]] == ["-", "61.25", "-", "-", "-", "50.00", "-", "-", "cpu"]


def test_format_table_notes_and_empty_store():
    text = format_table(table(mixed_runs()))
    assert "Tay et al. 2021" in text.splitlines()[-1]
    empty = format_table(table([run("full", "listops", valid=0.9, test=0.9, status="running")]))
    assert empty == format_table([])
    assert "no finished LRA runs" in empty and "attnzoo lra train" in empty


def pathfinder(name, *, valid, test, contour=None):
    config = {"data_options": {"train": 20_000} if contour is None else {"train": 20_000, "contour_length": contour}}
    return {**run(name, "pathfinder32", valid=valid, test=test, key=f"{name}/{contour}/{valid}"), "config": config}


def test_pathfinder_at_another_difficulty_is_a_column_of_its_own_outside_the_averages():
    hard = pathfinder("full", valid=0.51, test=0.50)
    easy = pathfinder("full", valid=0.80, test=0.79, contour=6)  # better on validation, but a different task
    also_hard = pathfinder("full", valid=0.49, test=0.99, contour=14)  # 14 written out is still LRA's task
    longer = pathfinder("full", valid=0.70, test=0.70, contour=10)  # columns by contour length, not as strings
    runs = [hard, easy, also_hard, longer, *(run("full", t, valid=0.5, test=0.6) for t in FIVE[:4])]
    assert best_runs(runs)[("full", "pathfinder32")] is hard and best_runs(runs)[("full", "pathfinder32@contour6")] is easy
    (full,) = table(runs)
    assert full["scores"]["pathfinder32"] == pytest.approx(50.0) and full["scores"]["pathfinder32@contour6"] == pytest.approx(79.0)
    assert full["avg5"] == pytest.approx((4 * 60 + 50) / 5)  # the easy 79 is in no average
    lines = format_table([full]).splitlines()
    header = re.split(r"\s{2,}", lines[0].strip())
    assert header == [*COLUMNS[:7], "Pathfinder (contour 6)", "Pathfinder (contour 10)", *COLUMNS[7:]]
    cells = dict(zip(header, re.split(r"\s{2,}", lines[2].strip())))
    assert (cells["Pathfinder"], cells["Pathfinder (contour 6)"], cells["Avg (5, no Path-X)"]) == ("50.00 [71.40]", "79.00", "58.00 [54.39]")
    assert "instead of LRA's 14" in lines[-1]
    assert "contour" not in format_table(table(runs[:1] + runs[4:]))  # no such run, no such column


# -- scores_for_chart ----------------------------------------------------------------------------


def entry(name, **scores):
    s = {t: float(v) for t, v in scores.items()}
    avg5, avg6 = averages(s)
    return {"name": name, "scores": s, "avg5": avg5, "avg6": avg6}


def test_chart_uses_the_five_task_average_when_everyone_has_it():
    entries = [entry("full", **SCORES), entry("local", listops=20, text=30, retrieval=40, image=50, pathfinder32=60, pathx=99)]
    scores, label = scores_for_chart(entries)
    assert scores == pytest.approx({"full": 60.0, "local": 40.0}, abs=1e-12)
    assert label == "LRA average (5 tasks)"


def test_chart_falls_back_to_the_common_tasks():
    entries = [entry("full", **SCORES), entry("nystrom", listops=30, image=70, pathx=55), entry("local", listops=20, image=40, text=90)]
    scores, label = scores_for_chart(entries)
    # common: ListOps and Image. full (40 + 50) / 2, nystrom (30 + 70) / 2, local (20 + 40) / 2
    assert scores == pytest.approx({"full": 45.0, "nystrom": 50.0, "local": 30.0}, abs=1e-12)
    assert "ListOps" in label and "Image" in label
    assert not any(t in label for t in ("Text", "Retrieval", "Pathfinder", "Path-X", "average (5"))


def test_chart_has_nothing_without_a_common_task():
    assert scores_for_chart([entry("full", listops=40, text=50), entry("local", image=60)]) == ({}, "")


# -- report and the CLI --------------------------------------------------------------------------

BENCH = {  # mechanism: (family, fwd+bwd ms at N = 1024, 2048, 4096, peak bytes at the same N)
    "full": ("exact", (10.0, 40.0, 160.0), (1 << 20, 1 << 22, 1 << 24)),
    "local": ("sparse", (5.0, 10.0, 20.0), (1 << 19, 1 << 20, 1 << 21)),
    "nystrom": ("lowrank", (4.0, 8.0, 16.0), (1 << 18, 1 << 19, 1 << 20)),
}


def fill(path, *, bench: bool):
    """Runs for full (five tasks), local (five tasks) and nystrom (ListOps only); the benchmark rows
    LRA's chart reads (non-causal, fwd+bwd), plus a causal one and a failed one it must skip."""
    with Store(path) as store:
        for name, base in (("full", 0.50), ("local", 0.40)):
            for i, task in enumerate(FIVE):
                store.put_run(f"{task}/{name}", task=task, name=name, status="done", step=10, record={"preset": "cpu"},
                              valid_accuracy=base, test_accuracy=base + i / 100)
        store.put_run("listops/nystrom", task="listops", name="nystrom", status="done", step=10, record={"preset": "cpu"},
                      valid_accuracy=0.3, test_accuracy=0.35)
        store.put_run("text/nystrom", task="text", name="nystrom", status="running", step=10, record={})
        if bench:
            for name, (family, times, peaks) in BENCH.items():
                for n, ms, peak in zip((1024, 2048, 4096), times, peaks):
                    store.put(minimal_row(f"{name}|n={n}", name=name, family=family, n=n, backward=True,
                                          forward_backward_ms=ms, peak_bytes=peak))
            store.put(minimal_row("local causal|n=4096", name="local", family="sparse", n=4096, causal=True, backward=True,
                                  forward_backward_ms=1.0, peak_bytes=1))
            store.put(minimal_row("nystrom|n=8192", name="nystrom", family="lowrank", n=8192, status="oom", message="out of memory"))


def test_report_writes_the_table_and_the_chart(tmp_path):
    fill(tmp_path / "results.sqlite", bench=True)
    out = tmp_path / "lra"
    text = report(tmp_path / "results.sqlite", out)
    table_text, _, tail = text.partition("\n\nwrote ")
    assert (out / "lra_table.txt").read_text() == table_text + "\n"
    assert (out / "lra_bubbles.png").read_bytes()[:8] == PNG_SIGNATURE
    assert "lra_table.txt" in tail and "lra_bubbles.png" in tail
    cells = parse(table_text)
    assert list(cells) == ["full", "local", "nystrom"]
    # full: 50, 51, 52, 53, 54 -> avg5 52.00, avg6 (260 + 50) / 6 = 51.67
    assert [cells["full"][c] for c in COLUMNS[1:6]] == [f"{50 + i}.00 [{p}]" for i, p in enumerate(LRA_TRANSFORMER)]
    assert cells["full"]["Avg (5, no Path-X)"] == "52.00 [54.39]"
    assert cells["full"]["Avg (6, Path-X fail = 50)"] == "51.67"
    assert [cells["nystrom"][c] for c in COLUMNS[1:7]] == ["35.00", "-", "-", "-", "-", "-"]  # the running Text run is left out


def with_history(r, history, best_step):
    return {**r, "history": history, "best_step": best_step}


def test_curves_follow_the_tables_runs_in_table_order():
    h1 = [[250, 2.2, 0.2, 0.18], [500, 2.0, 0.3, 0.35]]
    h2 = [[250, 2.1, 0.2, 0.30], [500, 1.9, 0.4, 0.25]]
    easy = {**run("full", "pathfinder32", valid=0.9, test=0.88), "config": {"data_options": {"contour_length": 6}}}
    runs = [
        with_history(run("linear", "listops", valid=0.35, test=0.36), h1, 500),
        with_history(run("linear", "listops", valid=0.30, test=0.40, at="2026-02-01T00:00:00+00:00"), h2, 250),  # worse validation
        with_history(run("full", "listops", valid=0.30, test=0.31), h2, 250),
        with_history(run("bigbird", "listops", valid=0.30, test=0.31), h2, 250),
        with_history(easy, [[100, 0.6, 0.7, 0.9]], 100),
        with_history(run("full", "pathfinder32", valid=0.5, test=0.5), [[100, 0.69, 0.5, 0.5]], 100),
        run("local", "listops", valid=0.9, test=0.9),  # no history: no line
        with_history(run("nystrom", "listops", valid=0.9, test=None, status="running"), h1, 500),  # unfinished: no line
    ]
    series = curve_series(runs)
    assert list(series) == ["listops", "pathfinder32", "pathfinder32@contour6"]
    assert [line["name"] for line in series["listops"]] == ["full", "bigbird", "linear"]  # full first, then by name
    linear = series["listops"][2]
    assert linear == {"name": "linear", "steps": [250, 500], "valid": [18.0, 35.0], "best_step": 500, "test": 36.0}


def test_write_curves_draws_a_png_or_nothing(tmp_path):
    runs = [with_history(run("full", "listops", valid=0.3, test=0.31), [[250, 2.2, 0.2, 0.3]], 250)]
    assert write_curves(runs, tmp_path / "c.png").read_bytes()[:8] == PNG_SIGNATURE
    assert write_curves([run("full", "listops", valid=0.3, test=0.31)], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_report_without_benchmark_rows_has_no_chart(tmp_path):
    fill(tmp_path / "results.sqlite", bench=False)
    with Store(tmp_path / "results.sqlite") as store:  # a failed benchmark row is no benchmark row
        store.put(minimal_row("full|n=1024", name="full", family="exact", n=1024, backward=True, status="error", message="boom"))
    out = tmp_path / "lra"
    text = report(tmp_path / "results.sqlite", out)
    assert "no chart" in text
    assert not (out / "lra_bubbles.png").exists()
    assert (out / "lra_table.txt").read_text() == text.partition("\n\nwrote ")[0] + "\n"
    assert list(parse(text)) == ["full", "local", "nystrom"]


def test_report_needs_a_store(tmp_path):
    missing = tmp_path / "nowhere.sqlite"
    with pytest.raises(ValueError, match="attnzoo lra train"):
        report(missing, tmp_path / "lra")
    assert not missing.exists()  # the report does not create an empty store


def test_cli_lra_report(tmp_path, capsys):
    fill(tmp_path / "results.sqlite", bench=False)
    out = tmp_path / "lra"
    assert main(["lra", "report", "--store", str(tmp_path / "results.sqlite"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith((out / "lra_table.txt").read_text())
    assert list(parse(printed)) == ["full", "local", "nystrom"]


def test_report_lists_the_runs_not_finished_with_their_progress(tmp_path):
    fill(tmp_path / "results.sqlite", bench=False)
    with Store(tmp_path / "results.sqlite") as store:
        store.put_run("image/full", task="image", name="full", status="interrupted", step=40, valid_accuracy=0.25,
                      record={"config": {"steps": 100}, "best_step": 20})
        store.put_run("pathx/full", task="pathx", name="full", status="failed", step=3, record={"message": "FloatingPointError: nan"})
    text = report(tmp_path / "results.sqlite", tmp_path / "lra")
    unfinished = text.split("not finished")[1].splitlines()[1:4]
    assert unfinished == [
        "  image/full: interrupted at step 40/100, best valid 0.2500 at step 20",
        "  pathx/full: failed at step 3/?, not validated yet (FloatingPointError: nan)",
        "  text/nystrom: running at step 10/?, not validated yet",
    ]
    assert "image/full" in (tmp_path / "lra" / "lra_table.txt").read_text()
