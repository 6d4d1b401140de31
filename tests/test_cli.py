"""The attnzoo command as a user runs it."""

from __future__ import annotations

import json

import pytest
import torch

import attnzoo
from attnzoo.bench.store import Store
from attnzoo.cli import main


def test_list_shows_every_mechanism(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in attnzoo.list_mechanisms():
        assert f"\n{name} " in out
    assert "arxiv.org/abs/2007.14062" in out


def test_show_draws_the_pattern_in_the_terminal_and_as_png(tmp_path, capsys):
    png = tmp_path / "local.png"
    assert main(["show", "local", "--n", "12", "--opt", "window=2", "--out", str(png)]) == 0
    out = capsys.readouterr().out
    grid = [line for line in out.splitlines() if set(line) <= {"█", "·"} and len(line) == 12]
    i, j = torch.meshgrid(torch.arange(12), torch.arange(12), indexing="ij")
    want = ["".join("█" if c else "·" for c in row) for row in ((i - j).abs() <= 2).tolist()]
    assert grid == want
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_show_reports_bad_options_without_a_traceback(capsys):
    assert main(["show", "local", "--opt", "windw=2"]) == 2
    assert "no option(s) ['windw']" in capsys.readouterr().err


def test_show_cost_counts_both_multiplication_orders(capsys):
    assert main(["show", "linear", "performer", "--cost", "--n", "256", "--head-dim", "16", "--opt", "performer.nb_features=40"]) == 0
    out = capsys.readouterr().out
    assert f"(M+E)·N² = {(16 + 16) * 256**2:.3g}" in out and f"2·M·E·N  = {2 * 16 * 16 * 256:.3g}" in out  # linear: M = d
    assert f"(M+E)·N² = {(40 + 16) * 256**2:.3g}" in out and f"2·M·E·N  = {2 * 40 * 16 * 256:.3g}" in out  # performer: M = 40
    assert out.count(" ms") == 4 and out.count("same result") == 2
    assert main(["show", "local", "--cost"]) == 2
    assert "kernel mechanisms" in capsys.readouterr().err


def test_bench_stores_rows_writes_the_report_and_resumes(tmp_path, capsys):
    args = ["bench", "--names", "full", "local", "--n", "64", "--heads", "1", "--head-dim", "8", "--opt", "local.window=4", "--out", str(tmp_path)]
    assert main(args) == 0
    with Store(tmp_path / "bench.sqlite") as store:
        rows = store.rows()
    assert {r["name"] for r in rows} == {"full", "local"} and all(r["status"] == "ok" for r in rows)
    assert all(r["forward_ms"] > 0 and r["forward_backward_ms"] > 0 and r["peak_bytes"] is not None for r in rows)
    page = (tmp_path / "report.html").read_text()
    assert "local" in page and "full" in page and "data:image/png;base64," in page
    out = capsys.readouterr().out
    assert "2 points (2 to measure" in out and "wrote" in out
    # the sweep's rows also land as JSON beside the report, exactly as the store holds them
    by_key = lambda rs: sorted(rs, key=lambda r: r["key"])  # noqa: E731
    assert by_key(json.loads((tmp_path / "results.json").read_text())["rows"]) == by_key(rows)
    # A second run finds every point measured and measures nothing again; report rebuilds from the store.
    assert main(args) == 0
    assert "2 points (0 to measure" in capsys.readouterr().out
    # a sweep of one name into the same store writes only its own rows
    assert main(["bench", "--names", "full", "--n", "64", "--heads", "1", "--head-dim", "8", "--out", str(tmp_path)]) == 0
    assert [r["name"] for r in json.loads((tmp_path / "results.json").read_text())["rows"]] == ["full"]
    capsys.readouterr()
    with Store(tmp_path / "bench.sqlite") as store:
        assert {r["key"]: r["measured_at"] for r in store.rows()} == {r["key"]: r["measured_at"] for r in rows}
        local = next(r for r in rows if r["name"] == "local")
        store.put({**local, "status": "timeout", "message": "timed out after 1e+06 s", "limits": {"timeout_s": 1e6, "memory_limit_bytes": None}})
    # a point that timed out under a longer limit is settled too: not announced as to measure, not measured
    assert main(args) == 0
    assert "2 points (0 to measure" in capsys.readouterr().out
    (tmp_path / "report.html").unlink()
    assert main(["report", "--out", str(tmp_path), "--json", str(tmp_path / "rows.json"), "--csv", str(tmp_path / "rows.csv")]) == 0
    assert (tmp_path / "report.html").exists()
    assert {r["key"] for r in json.loads((tmp_path / "rows.json").read_text())["rows"]} == {r["key"] for r in rows}
    assert len((tmp_path / "rows.csv").read_text().strip().splitlines()) == 3
    # the JSON export alone rebuilds the report elsewhere (as from the committed benchmarks/results/*.json)
    elsewhere = tmp_path / "elsewhere"
    assert main(["report", "--out", str(elsewhere), "--from-json", str(tmp_path / "rows.json")]) == 0
    assert f"put 2 rows from {tmp_path / 'rows.json'}" in capsys.readouterr().out
    with Store(elsewhere / "bench.sqlite") as store, Store(tmp_path / "bench.sqlite") as original:
        assert store.rows() == original.rows()
    assert "local" in (elsewhere / "report.html").read_text()


def test_bench_causal_points_are_their_own_rows(tmp_path, capsys):
    args = ["bench", "--names", "full", "linear", "--n", "64", "--heads", "1", "--head-dim", "8", "--causal", "--out", str(tmp_path)]
    assert main(args) == 0
    with Store(tmp_path / "bench.sqlite") as store:
        rows = store.rows()
    assert len(rows) == 2 and all(r["causal"] and r["key"].endswith("|causal") for r in rows)
    linear = next(r for r in rows if r["name"] == "linear")
    # against causal exact attention on the point's inputs (seed 0), not the non-causal one
    from attnzoo.functional import full_attention, linear_attention

    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 1, 64, 8) for _ in range(3))
    exact = full_attention(q, k, v, causal=True)
    want = float((linear_attention(q, k, v, causal=True) - exact).norm() / exact.norm())
    assert abs(linear["error_random"] - want) < 1e-5
    out = capsys.readouterr().out
    assert "linear causal" in out and "full causal" in out


@pytest.mark.parametrize(
    "args,message",
    [
        (["bench", "--names", "fulll"], "unknown mechanism(s) ['fulll']"),
        (["bench", "--names", "linformer", "--causal"], "linformer have no causal form"),
        (["bench", "--names", "local", "--opt", "full.scale=1.0"], "--opt 'full.scale=1.0' must look like NAME.KEY=VALUE"),
        (["bench", "--memory-limit", "0"], "--memory-limit must be a positive number"),
        (["report", "--out", "/nonexistent/attnzoo"], "no results at /nonexistent/attnzoo/bench.sqlite"),
    ],
    ids=["unknown-name", "impossible-causal", "option-for-absent", "memory-limit", "no-store"],
)
def test_bench_and_report_refuse_bad_input_with_the_fix(args, message, capsys):
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_describe_prints_the_mechanism_and_which_encodings_it_honours(capsys):
    assert main(["describe", "full", "fnet"]) == 0
    out = capsys.readouterr().out
    assert "fnet (mixing): Lee-Thorp et al. 2021" in out and "positional encodings: sinusoidal, learned, floater, rnn" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith(("full ", "fnet "))}
    assert rows == {"full": ["yes"] * 7, "fnet": ["yes", "yes", "-", "-", "-", "yes", "yes"]}


def test_describe_without_names_is_the_whole_compatibility_table(capsys):
    assert main(["describe"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("mechanism"))
    assert header.split() == ["mechanism", "sinusoidal", "learned", "relative", "rotary", "alibi", "floater", "rnn"]
    assert sum(line.split()[0] in attnzoo.list_mechanisms() for line in out.splitlines() if line.strip()) == len(attnzoo.list_mechanisms())


def test_describe_unknown_name_is_a_clear_error(capsys):
    assert main(["describe", "fullz"]) == 2
    assert "unknown mechanism 'fullz'" in capsys.readouterr().err


def test_show_draws_a_mixer(tmp_path, capsys):
    assert main(["show", "gmlp", "--causal", "--n", "6", "--out", str(tmp_path / "g.png")]) == 0
    assert "gmlp: 21 of 36 (query, key) pairs computed" in capsys.readouterr().out
