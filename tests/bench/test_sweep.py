"""The sweep: what it plans, how it records failures, resuming after a kill, and the presets."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import attnzoo
from attnzoo.bench.command import PRESETS
from attnzoo.bench.harness import Point, measure_in_forked_process, measure_in_fresh_process
from attnzoo.bench.store import Store
from attnzoo.bench.sweep import Progress, SweepConfig, plan, resolve_names, run
from attnzoo.functional import full_attention, local_attention
from attnzoo.registry import describe

TINY = dict(heads=1, head_dim=8, budget_s=0.05)


def test_names_and_families_resolve_in_registry_order():
    assert resolve_names(SweepConfig()) == attnzoo.list_mechanisms()
    got = resolve_names(SweepConfig(names=("full",), families=("kernel",)))
    assert got == ["full", "linear", "efficient", "performer", "rfa"]
    with pytest.raises(ValueError, match=r"unknown mechanism\(s\) \['fulll'\]; choose from full, local"):
        resolve_names(SweepConfig(names=("fulll",)))
    with pytest.raises(ValueError, match=r"unknown family\(ies\) \['kernels'\]; choose from exact, sparse"):
        resolve_names(SweepConfig(families=("kernels",)))


def test_plan_covers_every_name_direction_and_length_it_can():
    points, notes = plan(SweepConfig(names=("full", "linformer", "linear"), ns=(64, 32), causal=(False, True), max_full_n=32, **TINY))
    got = {(p.name, p.n, p.causal) for p in points}
    assert got == {("full", 32, False), ("full", 32, True), ("linformer", 32, False), ("linformer", 64, False),
                   ("linear", 32, False), ("linear", 64, False), ("linear", 32, True), ("linear", 64, True)}
    assert any("linformer: no causal form" in n for n in notes) and any("full N=64" in n for n in notes)


@pytest.mark.parametrize(
    "config,match",
    [
        (SweepConfig(names=("linformer",), causal=(True,)), "linformer have no causal form"),
        (SweepConfig(ns=(0,)), "sequence lengths must be positive"),
        (SweepConfig(heads=0), "heads must be a positive int"),
        (SweepConfig(dtype="float8"), "dtype must be"),
        (SweepConfig(device="tpu"), "device must be 'cpu' or 'cuda'"),
        (SweepConfig(names=("local",), options={"local": {"windw": 3}}), r"no option\(s\) \['windw'\]"),
        (SweepConfig(names=("local",), options={"full": {"scale": 1.0}}), "options given for 'full', which this sweep does not run"),
    ],
    ids=["causal-only", "n", "heads", "dtype", "device", "option", "option-for-absent"],
)
def test_impossible_settings_are_clear_errors(config, match):
    with pytest.raises(ValueError, match=match):
        plan(config)


def fake_measure(outcomes):
    """A stand-in for the fresh-process measurement: returns the next outcome per call."""
    calls = []

    def measure(point, timeout_s):
        calls.append(point.key())
        kind = outcomes[len(calls) - 1]
        base = {"point": {}, "key": point.key()}
        if kind == "ok":
            return {**base, "forward_ms": 1.0, "forward_backward_ms": 3.0, "tokens_per_s": point.n / 3e-3, "peak_above_inputs_bytes": 10}
        return {**base, "status": kind, "error": f"{kind} happened"}

    return measure, calls


def test_failed_points_are_stored_with_their_status_and_the_sweep_goes_on(tmp_path):
    points, _ = plan(SweepConfig(names=("full", "local"), ns=(16, 32), **TINY))
    measure, calls = fake_measure(["ok", "timeout", "oom", "ok"])
    with Store(tmp_path / "s.sqlite") as store:
        assert run(points, store, measure=measure, stream=io.StringIO()) == 4
        status = {(r["name"], r["n"]): (r["status"], r["message"]) for r in store.rows()}
        assert status == {("full", 16): ("ok", None), ("full", 32): ("timeout", "timeout happened"),
                          ("local", 16): ("oom", "oom happened"), ("local", 32): ("ok", None)}
        # under the same limits the failures are settled: nothing to measure
        measure, calls = fake_measure([])
        assert run(points, store, measure=measure, stream=io.StringIO()) == 0
        # a longer time-out retries the time-out only
        measure, calls = fake_measure(["ok"])
        assert run(points, store, measure=measure, stream=io.StringIO(), timeout_s=600.0) == 1
        assert calls == [points[1].key()]
        # a row that does not say its limits (written before they were kept) is retried
        old = store.get(points[2].key())
        store.put({k: v for k, v in old.items() if k != "limits"})
        measure, calls = fake_measure(["ok"])
        assert run(points, store, measure=measure, stream=io.StringIO()) == 1 and calls == [points[2].key()]
        assert all(r["status"] == "ok" for r in store.rows())


@pytest.mark.parametrize(
    "status, limits, timeout_s, memory_now, expected",
    [
        ("ok", {}, 300.0, None, True),
        ("error", {"timeout_s": 900.0, "memory_limit_bytes": None}, 300.0, None, False),
        ("timeout", {"timeout_s": 300.0, "memory_limit_bytes": None}, 300.0, None, True),
        ("timeout", {"timeout_s": 300.0, "memory_limit_bytes": None}, 301.0, None, False),
        ("timeout", {}, 300.0, None, False),
        ("oom", {"timeout_s": 300.0, "memory_limit_bytes": None}, 300.0, 2**30, True),
        ("oom", {"timeout_s": 300.0, "memory_limit_bytes": 2**30}, 300.0, 2**30, True),
        ("oom", {"timeout_s": 300.0, "memory_limit_bytes": 2**30}, 300.0, 2**31, False),
        ("oom", {"timeout_s": 300.0, "memory_limit_bytes": 2**30}, 300.0, None, False),
        ("oom", {}, 300.0, None, False),
    ],
    ids=["ok", "error", "timeout-same", "timeout-longer-now", "timeout-unknown", "oom-unlimited-then", "oom-same-limit",
         "oom-more-memory-now", "oom-unlimited-now", "oom-unknown"],
)
def test_which_stored_rows_are_settled(status, limits, timeout_s, memory_now, expected):
    from attnzoo.bench.sweep import settled

    point = Point("full", 16, memory_limit_bytes=memory_now)
    assert settled({"status": status, "limits": limits}, point, timeout_s) is expected
    assert settled(None, point, timeout_s) is False


def test_each_row_says_how_many_cores_other_processes_took_while_its_point_ran(tmp_path, monkeypatch):
    points, _ = plan(SweepConfig(names=("full",), ns=(16, 32), **TINY))
    # machine busy time before / after each point, and the clock: point 1 ran 2 s using 3 CPU-s itself
    # while the machine was busy 3 CPU-s (no one else); point 2 ran 2 s, 2 CPU-s itself, machine busy 4
    busy = iter([100.0, 103.0, 103.0, 107.0])
    clock = iter([0.0, 2.0, 10.0, 12.0])
    monkeypatch.setattr("attnzoo.bench.sweep.cpu_busy_seconds", lambda: next(busy))
    monkeypatch.setattr("attnzoo.bench.sweep.time.monotonic", lambda: next(clock))
    measure, _ = fake_measure(["ok", "ok"])
    own = iter([3.0, 2.0])

    def measure_with_cpu(point, timeout_s):
        return {**measure(point, timeout_s), "cpu_seconds": next(own)}

    with Store(tmp_path / "s.sqlite") as store:
        run(points, store, measure=measure_with_cpu, stream=io.StringIO())
        assert sorted((r["n"], r["others_cores"]) for r in store.rows()) == [(16, 0.0), (32, 1.0)]


def test_the_machine_busy_time_grows_and_a_point_reports_its_own_cpu_time():
    from attnzoo.bench.sweep import cpu_busy_seconds

    before, start = cpu_busy_seconds(), time.monotonic()
    result = measure_in_forked_process(Point("local", 256, heads=2, head_dim=16, budget_s=0.5), 120)
    wall = time.monotonic() - start
    assert result["status"] == "ok" and 0 < result["cpu_seconds"] <= 2 * wall + 0.1  # its own process's time, not the server's
    assert cpu_busy_seconds() - before >= result["cpu_seconds"] - 0.1  # the machine was busy at least while the point ran


PROCESSES = [measure_in_fresh_process, measure_in_forked_process]
PROCESS_IDS = ["fresh", "forked"]


@pytest.mark.parametrize("measure", PROCESSES, ids=PROCESS_IDS)
def test_a_slow_point_times_out_in_its_own_process(measure):
    # ~7 s of work here (8 forwards + 5 forward+backwards of 4 heads × 4K², capped repeats): at 2K it could finish inside 1 s
    point = Point("full", 4096, heads=4, head_dim=64, budget_s=30)
    start = time.perf_counter()
    got = measure(point, timeout_s=1.0)
    assert got["status"] == "timeout" and "timed out after 1 s" in got["error"]
    assert time.perf_counter() - start < 10


@pytest.mark.parametrize("measure", PROCESSES, ids=PROCESS_IDS)
def test_a_point_past_its_memory_limit_is_out_of_memory(measure):
    point = Point("full", 2048, batch=4, heads=4, head_dim=64, budget_s=0.05, memory_limit_bytes=2**20)
    got = measure(point, timeout_s=120)
    assert got["status"] == "oom" and got["error"].startswith("out of memory")


def test_a_failing_point_is_an_error_row_and_not_a_crash():
    point = Point("reformer", 64, options={"bucket_size": 0}, **TINY)
    got = measure_in_forked_process(point, timeout_s=120)
    assert got["status"] == "error" and "bucket_size" in got["error"]


def test_a_real_point_fills_every_field(tmp_path):
    points, _ = plan(SweepConfig(names=("local",), ns=(64,), options={"local": {"window": 4}}, **TINY))
    with Store(tmp_path / "s.sqlite") as store:
        run(points, store, stream=io.StringIO())
        (row,) = store.rows()
    assert row["status"] == "ok" and row["family"] == "sparse" and row["options"] == {"window": 4}
    assert row["forward_ms"] > 0 and row["forward_backward_ms"] > 0 and row["peak_bytes"] is not None
    lo, hi = row["forward_backward_spread_ms"]
    assert lo <= row["forward_backward_ms"] <= hi
    assert row["tokens_per_s"] == pytest.approx(64 / (row["forward_backward_ms"] / 1e3))
    torch.manual_seed(0)  # the point's inputs: seed 0, then q, k, v
    q, k, v = (torch.randn(1, 1, 64, 8) for _ in range(3))
    for field_name, sharpen in (("error_random", 1.0), ("error_peaked", 3.0)):
        exact = full_attention(q * sharpen, k * sharpen, v)
        want = (local_attention(q * sharpen, k * sharpen, v, window=4) - exact).norm() / exact.norm()
        assert row[field_name] == pytest.approx(float(want), rel=1e-4), field_name
    assert row["versions"]["attnzoo"] == attnzoo.__version__ and row["machine"]["cores"] == os.cpu_count()


def test_progress_shows_the_point_and_an_eta():
    points = [Point("full", n) for n in (100, 300)]
    stream = io.StringIO()
    progress = Progress(points, stream)
    progress.show(points[0])
    progress.step(points[0])
    progress.show(points[1])
    first, second = stream.getvalue().splitlines()
    assert first.startswith("[1/2]   0%  full N=100") and "ETA ?" in first
    assert second.startswith("[2/2]  50%  full N=300") and "ETA 0:" in second


def test_a_killed_sweep_resumes_where_it_stopped(tmp_path):
    # 12 points of a second or more each (a fresh process per point): the kill after the second one
    # lands long before the last even when the machine is busy (6 points once raced to the end)
    args = [sys.executable, "-m", "attnzoo.cli", "bench", "--names", "full", "linear", "efficient", "--n", "32", "64", "96", "128",
            "--heads", "1", "--head-dim", "8", "--out", str(tmp_path)]
    child = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store_path = tmp_path / "bench.sqlite"
    deadline = time.time() + 120
    while time.time() < deadline:
        if store_path.exists():
            with Store(store_path) as store:
                if len(store.rows()) >= 2:
                    break
        time.sleep(0.2)
    child.send_signal(signal.SIGKILL)
    child.wait()
    with Store(store_path) as store:
        done = {r["key"]: r["measured_at"] for r in store.rows()}
    assert 2 <= len(done) < 12
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with Store(store_path) as store:
        rows = store.rows()
    assert len(rows) == 12 and all(r["status"] == "ok" for r in rows)
    assert {r["key"]: r["measured_at"] for r in rows if r["key"] in done} == done  # finished points were not measured again


def test_the_default_sweep_is_every_mechanism_at_the_lra_end_points():
    points, notes = plan(SweepConfig(**PRESETS["default"]))
    assert {p.name for p in points} == set(attnzoo.list_mechanisms())
    assert notes == ["routing: clusters = √N, the paper's at each N (--opt routing.clusters=K fixes it)",
                     "full also measured as a whole layer, the yardstick of the mixers (synthesizer, fnet, gmlp, mixer)"]
    assert {p.n for p in points if p.name == "full" and p.layer} == {1024, 2048, 4096}
    assert {p.n for p in points} == {1024, 2048, 4096} and not any(p.causal for p in points)
    full_points, _ = plan(SweepConfig(**PRESETS["full"]))
    assert max(p.n for p in full_points) == 65536 and max(p.n for p in full_points if p.name == "full") == 16384
    causal = {p.name for p in full_points if p.causal}
    assert causal == {n for n in attnzoo.list_mechanisms() if describe(n)["causal"]}
    json.dumps(PRESETS)  # presets are plain data


def test_routing_takes_the_papers_square_root_cluster_count_at_each_length_unless_given():
    points, notes = plan(SweepConfig(names=("routing",), ns=(1024, 4096, 16384), **TINY))
    assert [p.options for p in points] == [{"clusters": 32}, {"clusters": 64}, {"clusters": 128}]  # √N
    assert [p.scaled_options for p in points] == [["clusters"]] * 3  # one curve in the report, not three
    assert "routing: clusters = √N, the paper's at each N (--opt routing.clusters=K fixes it)" in notes
    points, notes = plan(SweepConfig(names=("routing",), ns=(1024, 4096), options={"routing": {"clusters": 4}}, **TINY))
    assert [p.options for p in points] == [{"clusters": 4}, {"clusters": 4}] and not [n for n in notes if "√N" in n]
    assert [p.scaled_options for p in points] == [[], []]


def test_batch_heads_head_dim_and_dtype_sweep_as_a_grid():
    points, _ = plan(SweepConfig(names=("local",), ns=(32,), batch=(1, 2), heads=(1, 2), head_dim=8, dtype=("float32", "float64")))
    got = {(p.batch, p.heads, p.head_dim, p.dtype) for p in points}
    assert got == {(b, h, 8, t) for b in (1, 2) for h in (1, 2) for t in ("float32", "float64")} and len(points) == 8
    assert len({p.key() for p in points}) == 8  # each its own row
    with pytest.raises(ValueError, match="heads must be a positive int, got 0"):
        plan(SweepConfig(heads=(2, 0)))


def test_peers_add_our_layer_and_theirs_at_matched_settings(monkeypatch):
    import attnzoo.bench.peers as peers

    monkeypatch.setattr(peers, "installed", lambda: ["routing-transformer", "nystrom-attention"])
    points, notes = plan(SweepConfig(names=("routing", "nystrom", "local"), ns=(4096,), causal=(False, True), peers=True, **TINY))
    layers = [(p.name, p.label, p.options, p.causal) for p in points if p.layer]
    assert layers == [
        ("routing", "routing layer (vs routing-transformer)", {"clusters": 64}, False),  # √N clusters, as the package
        ("peer:routing-transformer", "routing-transformer", {}, False),
        ("routing", "routing layer (vs routing-transformer)", {"clusters": 64}, True),
        ("peer:routing-transformer", "routing-transformer", {}, True),
        ("nystrom", "nystrom layer (vs nystrom-attention)", {"landmarks": 64, "pinv_iterations": 6}, False),  # no causal form
        ("peer:nystrom-attention", "nystrom-attention", {}, False),
    ]
    assert [p.scaled_options for p in points if p.layer and p.name != "full"] == [["clusters"], [], ["clusters"], [], [], []]
    assert "peer local-attention is not installed (pip install local-attention); skipped" in notes


def test_a_missing_peer_package_is_a_clear_error(monkeypatch):
    import importlib.util

    from attnzoo.bench.peers import build_peer

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match=r"linformer is not installed: pip install linformer \(or pip install -e '\.\[bench\]'\)"):
        build_peer("linformer", dim=16, heads=2, n=64)
    with pytest.raises(ValueError, match="no peer 'xformers'; peers: performer-pytorch"):
        build_peer("xformers", dim=16, heads=2, n=64)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())  # as if installed
    with pytest.raises(ValueError, match="nystrom-attention has no causal form; compare it non-causal"):
        build_peer("nystrom-attention", dim=16, heads=2, n=64, causal=True)


def test_cuda_without_a_gpu_is_refused_with_the_fix():
    config = SweepConfig(names=("full",), ns=(32,), device="cuda", **TINY)
    if torch.cuda.is_available():
        points, _ = plan(config)
        assert all(p.device == "cuda" and p.key().endswith("|cuda") for p in points)
    else:
        with pytest.raises(ValueError, match="torch sees no CUDA device on this machine; use --device cpu"):
            plan(config)
