"""The attnzoo command as a user runs it."""

from __future__ import annotations

import json

import torch

import attnzoo
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


def test_bench_writes_results_and_resumes(tmp_path, capsys):
    args = ["bench", "--names", "full", "local", "--n", "64", "--heads", "1", "--head-dim", "8", "--opt", "local.window=4", "--out", str(tmp_path)]
    assert main(args) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    rows = list(data["rows"].values())
    assert {r["point"]["name"] for r in rows} == {"full", "local"}
    assert all(r["forward_ms"] > 0 and r["forward_backward_ms"] > 0 and r["peak_rss_bytes"] > 0 for r in rows)
    assert (tmp_path / "scaling.png").exists()
    report = (tmp_path / "report.md").read_text()
    assert "local" in report and "full" in report and "scaling.png" in report
    # A second run finds every point measured and measures nothing again.
    before = {k: r["forward_ms"] for k, r in data["rows"].items()}
    assert main(args) == 0
    after = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert {k: r["forward_ms"] for k, r in after.items()} == before


def test_bench_causal_points_are_their_own_rows(tmp_path, capsys):
    args = ["bench", "--names", "full", "linear", "--n", "64", "--heads", "1", "--head-dim", "8", "--causal", "--out", str(tmp_path)]
    assert main(args) == 0
    rows = list(json.loads((tmp_path / "results.json").read_text())["rows"].values())
    assert len(rows) == 2 and all(r["point"]["causal"] and r["key"].endswith("|causal") for r in rows)
    linear = next(r for r in rows if r["point"]["name"] == "linear")
    # against causal exact attention on the point's inputs (seed 0), not the non-causal one
    from attnzoo.functional import full_attention, linear_attention

    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 1, 64, 8) for _ in range(3))
    exact = full_attention(q, k, v, causal=True)
    want = float((linear_attention(q, k, v, causal=True) - exact).norm() / exact.norm())
    assert abs(linear["rel_error_vs_full"] - want) < 1e-5
    out = capsys.readouterr().out
    assert "linear causal" in out and "full causal" in out
    assert main(["bench", "--names", "linear", "--causal", "--n", "64", "--out", str(tmp_path)]) == 0  # resumes: nothing new


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
