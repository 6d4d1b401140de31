"""Summaries of result rows: series, fitted slopes, the LRA efficiency view against hand-computed ratios,
errors, the fastest point per N and the terminal table."""

from __future__ import annotations

import pytest

from attnzoo.bench.summary import (
    display_name, error_table, fastest, fitted_slope, lra_efficiency, peer_table, peer_terminal_table, series, slopes,
    terminal_table,
)


def make_row(name, n, fb=None, peak=None, *, status="ok", fwd=None, causal=False, label="", device="cpu", message=None, **extra):
    """A result row with every key; numbers None unless given (and all None when not ok)."""
    ok = status == "ok"
    row = {
        "key": f"{name}|{label}|n={n}|{device}|{causal}", "name": name, "label": label, "family": "sparse", "n": n, "batch": 1,
        "heads": 4, "head_dim": 64, "threads": 2, "dtype": "float32", "device": device, "causal": causal, "backward": True,
        "layer": False, "options": {}, "status": status, "message": message,
        "forward_ms": (fwd if fwd is not None else (fb / 3 if fb else None)) if ok else None,
        "forward_backward_ms": fb if ok else None, "forward_spread_ms": None,
        "forward_backward_spread_ms": [fb * 0.9, fb * 1.1] if ok and fb else None, "repeats": 5 if ok else None,
        "tokens_per_s": n / fb * 1000 if ok and fb else None, "peak_bytes": peak if ok else None,
        "error_random": None, "error_peaked": None, "machine": {"cpu": "test"}, "versions": {"torch": "x"},
        "measured_at": "2024-01-01T00:00:00",
    }
    row.update(extra)
    return row


def rows_for_efficiency():
    """full and local, non-causal and causal; full times out at 3K; performer only on cuda (no cuda full), so
    every series name carries its device."""
    return [
        make_row("full", 1024, 10.0, 100), make_row("full", 2048, 40.0, 400),
        make_row("full", 3072, status="timeout", message="ran past 900 s"), make_row("full", 4096, 160.0, 1600),
        make_row("local", 1024, 5.0, 50), make_row("local", 2048, 10.0, 100), make_row("local", 3072, 15.0, 150),
        make_row("local", 4096, 20.0, 200),
        make_row("full", 1024, 6.0, 90, causal=True), make_row("local", 1024, 3.0, 30, causal=True),
        make_row("performer", 1024, 4.0, 80, device="cuda"),
    ]


@pytest.mark.parametrize(("power", "c"), [(1.0, 3.0), (2.0, 0.5), (1.5, 7.0)], ids=["n^1", "n^2", "n^1.5"])
def test_fitted_slope_recovers_exact_power_laws(power, c):
    points = [(n, c * n**power) for n in (256, 512, 1024, 4096)]
    assert fitted_slope(points) == pytest.approx(power, abs=1e-12)


def test_fitted_slope_min_n_and_too_few_points():
    points = [(64, 1024.0), (128, 1024.0), (1024, 1024.0), (2048, 4096.0)]  # a fixed cost, then quadratic
    assert fitted_slope(points, min_n=1024) == pytest.approx(2.0)
    assert fitted_slope(points) < 2.0
    assert fitted_slope([(1024, 5.0)]) is None
    assert fitted_slope([(1024, 5.0), (1024, 6.0), (2048, None)]) is None  # one distinct n after dropping None


def test_slopes_per_series_and_field():
    rows = [make_row("full", n, 1e-4 * n**2, 10 * n**2) for n in (512, 1024, 2048)]
    rows += [make_row("local", n, 0.01 * n, 1000 * n) for n in (512, 1024, 2048)] + [make_row("local", 4096, status="oom")]
    assert slopes(rows, "forward_backward_ms") == pytest.approx({"full": 2.0, "local": 1.0})
    assert slopes(rows, "peak_bytes") == pytest.approx({"full": 2.0, "local": 1.0})
    with pytest.raises(ValueError, match="field must be one of"):
        slopes(rows, "tokens_per_s")


def test_series_sorted_ok_only_and_suffixed_only_when_devices_mix():
    rows = [make_row("local", 2048, 2.0, 1), make_row("local", 1024, 1.0, 1), make_row("local", 4096, status="timeout")]
    got = series(rows)
    assert list(got) == ["local"] and [r["n"] for r in got["local"]] == [1024, 2048]
    assert display_name(make_row("local", 8, 1.0, causal=True)) == "local causal"
    assert display_name(make_row("local", 8, 1.0, causal=True, label="window 16")) == "window 16"
    mixed = series(rows + [make_row("local", 1024, 0.5, 1, device="cuda")])
    assert sorted(mixed) == ["local (cpu)", "local (cuda)"]


def test_series_with_several_option_sets_are_told_apart():
    rows = [make_row("local", 1024, 1.0, 1, options={"window": 16}), make_row("local", 1024, 2.0, 1, options={"window": 64})]
    assert sorted(series(rows)) == ["local (window=16)", "local (window=64)"]


def test_options_the_sweep_scaled_with_n_make_one_curve():
    scaled = [make_row("routing", n, 1.0, 1, options={"clusters": c, "window": 8}, scaled_options=["clusters"]) for n, c in ((1024, 32), (4096, 64))]
    assert list(series(scaled)) == ["routing"] and [r["n"] for r in series(scaled)["routing"]] == [1024, 4096]
    fixed = make_row("routing", 1024, 1.0, 1, options={"clusters": 8, "window": 8})  # a user's fixed count is its own curve
    assert sorted(series(scaled + [fixed])) == ["routing (clusters=8,window=8)", "routing (window=8)"]


def test_lra_efficiency_against_hand_computed_ratios():
    eff = lra_efficiency(rows_for_efficiency())
    assert eff["ns"] == [1024, 2048, 3072, 4096]
    by = {e["name"]: e for e in eff["rows"]}
    assert eff["rows"][0]["mechanism"] == "full"
    assert by["full (cpu)"]["speed"] == {1024: 1.0, 2048: 1.0, 3072: None, 4096: 1.0}
    # full's time over local's: 10/5, 40/10, full timed out at 3K, 160/20
    assert by["local (cpu)"]["speed"] == {1024: 2.0, 2048: 4.0, 3072: None, 4096: 8.0}
    assert by["local (cpu)"]["memory"] == {1024: 0.5, 2048: 0.25, 3072: None, 4096: 0.125}
    assert by["local (cpu)"]["steps_per_s"] == {1024: 200.0, 2048: 100.0, 3072: pytest.approx(1000 / 15), 4096: 50.0}
    # causal rows against causal full: 6/3 and 30/90, not the non-causal full's 10/3
    assert by["local causal (cpu)"]["speed"][1024] == 2.0 and by["local causal (cpu)"]["memory"][1024] == pytest.approx(1 / 3)
    assert by["local causal (cpu)"]["speed"][2048] is None
    # no full on cuda: relative numbers missing, absolute steps/s still there
    assert by["performer (cuda)"]["speed"][1024] is None and by["performer (cuda)"]["memory"][1024] is None
    assert by["performer (cuda)"]["steps_per_s"][1024] == 250.0


def test_lra_efficiency_forward_field_and_bad_field():
    eff = lra_efficiency(rows_for_efficiency(), ns=[1024], field="forward_ms")
    by = {e["name"]: e for e in eff["rows"]}
    assert by["local (cpu)"]["speed"] == {1024: pytest.approx(2.0)}  # fwd = fb / 3 for both
    with pytest.raises(ValueError, match="field must be one of"):
        lra_efficiency(rows_for_efficiency(), field="peak_bytes")


def test_error_table_per_series_and_n():
    rows = [
        make_row("full", 1024, 1.0, 1, error_random=0.0, error_peaked=1e-7),
        make_row("linear", 1024, 1.0, 1, error_random=0.3, error_peaked=0.9),
        make_row("linear", 2048, 1.0, 1), make_row("linear", 4096, status="oom"),
    ]
    assert error_table(rows) == [
        {"name": "full", "n": 1024, "error_random": 0.0, "error_peaked": 1e-7},
        {"name": "linear", "n": 1024, "error_random": 0.3, "error_peaked": 0.9},
    ]


def test_fastest_per_n_with_speedup_over_full():
    best = {(b["n"], b["group"]): b for b in fastest(rows_for_efficiency())}
    assert best[(1024, "full (cpu)")]["name"] == "local (cpu)" and best[(1024, "full (cpu)")]["speedup"] == 2.0
    assert best[(3072, "full (cpu)")]["name"] == "local (cpu)" and best[(3072, "full (cpu)")]["speedup"] is None  # full timed out
    assert best[(1024, "full causal (cpu)")]["name"] == "local causal (cpu)"
    assert best[(1024, "")]["name"] == "performer (cuda)" and best[(1024, "")]["speedup"] is None


def test_terminal_table_lists_every_series_and_failed_points():
    rows = rows_for_efficiency() + [make_row("linear", 8192, status="oom", message="CUDA out of memory.\nTried to allocate 2 GiB")]
    text = terminal_table(rows)
    lines = text.splitlines()
    for name in ("full (cpu)", "local (cpu)", "full causal (cpu)", "local causal (cpu)", "performer (cuda)", "linear (cpu)"):
        assert any(line.startswith(name + " ") for line in lines), name
    assert any(line.startswith("full (cpu) ") and "timeout: ran past 900 s" in line for line in lines)
    assert any("oom: CUDA out of memory. Tried to allocate 2 GiB" in line for line in lines)
    local_4k = next(line for line in lines if line.startswith("local (cpu) ") and " 4096 " in line)
    assert "8.00×" in local_4k and "205k" in local_4k  # 160 ms / 20 ms; 4096 tokens / 20 ms
    assert "nan" not in text


def peer_rows():
    """linformer vs its package at 4K (ours 100 ms / 200 B, theirs 150 ms / 300 B) and at 16K (theirs timed out), a
    causal reformer pair, a package with no layer of ours beside it, ours at 8 heads against the package at 4 (not a
    pair), and a labelled row that is not a peer comparison."""
    vs = "linformer layer (vs linformer)"  # the label the sweep gives our layer beside the package
    return [
        make_row("linformer", 4096, 100.0, 200, label=vs, layer=True),
        make_row("peer:linformer", 4096, 150.0, 300, label="linformer", family="peer", layer=True),
        make_row("linformer", 16384, 400.0, 800, label=vs, layer=True),
        make_row("peer:linformer", 16384, status="timeout", message="ran past 1800 s", label="linformer", family="peer", layer=True),
        make_row("reformer", 4096, 90.0, 50, fwd=20.0, causal=True, label="reformer layer (vs reformer-pytorch)", layer=True),
        make_row("peer:reformer-pytorch", 4096, 45.0, 100, fwd=40.0, causal=True, label="reformer-pytorch", family="peer", layer=True),
        make_row("peer:sinkhorn-transformer", 4096, 10.0, 10, label="sinkhorn-transformer", family="peer", layer=True),
        make_row("nystrom", 4096, 10.0, 10, label="nystrom layer (vs nystrom-attention)", heads=8, layer=True),
        make_row("peer:nystrom-attention", 4096, 20.0, 10, label="nystrom-attention", family="peer", layer=True),
        make_row("local", 4096, 10.0, 10, label="local <w=16>"),
    ]


def test_peer_table_pairs_each_package_with_our_layer_at_the_same_settings():
    table = peer_table(peer_rows())
    got = [(p["package"], p["mechanism"], p["n"], p["causal"], p["speedup_forward"], p["speedup_forward_backward"], p["memory"])
           for p in table]
    assert got == [
        ("linformer", "linformer", 4096, False, pytest.approx(1.5), pytest.approx(1.5), pytest.approx(2 / 3)),
        ("linformer", "linformer", 16384, False, None, None, None),  # the package timed out
        ("nystrom-attention", None, 4096, False, None, None, None),  # ours ran at 8 heads: no pair
        ("nystrom-attention", "nystrom", 4096, False, None, None, None),
        ("reformer-pytorch", "reformer", 4096, True, pytest.approx(2.0), pytest.approx(0.5), pytest.approx(0.5)),
        ("sinkhorn-transformer", None, 4096, False, None, None, None),
    ]
    assert table[1]["peer"]["status"] == "timeout" and table[1]["ours"]["forward_backward_ms"] == 400.0
    assert table[5]["ours"] is None and table[2]["ours"] is None and table[3]["peer"] is None
    assert peer_table([make_row("local", 1024, 1.0, 1, label="local <w=16>")]) == []


def test_peer_terminal_table_one_line_per_pair_with_failures_named():
    lines = peer_terminal_table(peer_rows()).splitlines()
    assert lines[0].split() == ["package", "ours", "N", "ours", "ms", "package", "ms", "speed-up", "ours", "MiB", "package", "MiB",
                                "memory"]
    assert lines[1].split()[:6] == ["linformer", "linformer", "4096", "100", "150", "1.50×"] and lines[1].split()[-1] == "0.67×"
    assert lines[2].split()[:6] == ["linformer", "linformer", "16384", "400", "timeout", "–"]
    assert lines[5].split()[:7] == ["reformer-pytorch", "causal", "reformer", "4096", "90.0", "45.0", "0.50×"]
    assert "not measured" in lines[6] and len(lines) == 7
    assert peer_terminal_table([make_row("full", 1024, 1.0, 1)]) == ""
