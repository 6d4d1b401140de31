"""The SQLite results store: rows come back as put, survive a reopen and a killed writer, and bad
files and bad rows are refused with the field or the fix named."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from attnzoo.bench.store import COLUMNS, SCHEMA_VERSION, STATUSES, Store


def full_row(key: str = "local[window=64]|n=1024", **changes) -> dict:
    """Every column set (floats that are not short decimals, nested dicts, a None), plus two extra keys."""
    row = {
        "key": key,
        "name": "local",
        "label": "local w=64",
        "family": "sparse",
        "n": 1024,
        "batch": 2,
        "heads": 4,
        "head_dim": 64,
        "threads": 2,
        "dtype": "float32",
        "device": "cpu",
        "causal": True,
        "backward": True,
        "layer": False,
        "options": {"window": 64, "block": 32, "dilation": [1, 2], "shared": None},
        "status": "ok",
        "message": None,
        "forward_ms": 0.1 + 0.2,
        "forward_backward_ms": 1 / 3,
        "forward_spread_ms": [0.25, 0.5 + 1e-12],
        "forward_backward_spread_ms": [0.3, 0.4],
        "repeats": 7,
        "tokens_per_s": 6.02e23,
        "peak_bytes": 2**40 + 1,
        "error_random": 1.2345678901234567e-7,
        "error_peaked": None,
        "machine": {"cpu": "Xeon", "cores": 2, "gpu": None, "hostname": "box", "flags": ["avx2"]},
        "versions": {"torch": "2.5.1", "attnzoo": "0.1.0", "python": "3.11.7"},
        "measured_at": "2026-05-09T07:35:25+00:00",
        "touched_pairs": 123456789012,  # extra keys: kept and given back
        "layout": {"blocks": [[0, 1], [1, 1]], "note": "ünïcode, \"quotes\", commas\nnewline"},
    }
    row.update(changes)
    return row


def minimal_row(key: str, **changes) -> dict:
    """Only the required fields: the rest default (label "", options {}, the nullable ones None)."""
    row = {name: full_row()[name] for name in ("name", "family", "n", "batch", "heads", "head_dim", "threads", "dtype", "device")}
    row.update(key=key, causal=False, backward=False, layer=True, status="ok", machine={}, versions={}, measured_at="2026-01-01T00:00:00Z")
    row.update(changes)
    return row


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "results.sqlite") as s:
        yield s


def test_round_trip(store):
    row = full_row()
    store.put(row)
    got = store.get(row["key"])
    assert got == row
    assert [type(got[k]) for k in ("causal", "layer", "forward_ms", "peak_bytes")] == [bool, bool, float, int]
    assert store.get("absent") is None


def test_tuples_come_back_as_lists(store):
    """JSON has no tuples: --opt dilation=(1,2) gives a tuple option, which comes back (and filters) as a list."""
    store.put(full_row(options={"dilation": (1, 2), "nested": [(3, 4)]}, forward_spread_ms=(0.5, 0.75)))
    got = store.get(full_row()["key"])
    assert (got["options"], got["forward_spread_ms"]) == ({"dilation": [1, 2], "nested": [[3, 4]]}, [0.5, 0.75])
    assert store.rows(where={"options": {"dilation": (1, 2), "nested": [(3, 4)]}}) == [got]


def test_omitted_optional_fields_come_back_as_defaults(store):
    store.put(minimal_row("m"))
    got = store.get("m")
    assert got == {**minimal_row("m"), "label": "", "options": {}, **{c.name: None for c in COLUMNS if c.nullable}}
    assert len(got) == len(COLUMNS)  # no extra keys invented


@pytest.mark.parametrize("status", [s for s in STATUSES if s != "ok"])
def test_put_replaces_and_has_is_only_for_ok(store, status):
    key = "full|n=65536"
    store.put(full_row(key, status=status, message="why", forward_ms=None))
    assert (store.has(key), store.status(key)) == (False, status)
    store.put(full_row(key, forward_ms=2.5))  # the re-try succeeded
    assert (store.has(key), store.status(key), store.get(key)["forward_ms"]) == (True, "ok", 2.5)
    assert len(store) == 1
    assert (store.has("absent"), store.status("absent")) == (False, None)


def test_rows_order_and_filters(store):
    specs = [  # (name, label, causal, n, status)
        ("local", "", True, 512, "ok"),
        ("full", "", False, 4096, "oom"),
        ("local", "", False, 1024, "ok"),
        ("local", "", False, 512, "ok"),
        ("full", "", False, 512, "ok"),
        ("local", "local w=8", False, 256, "timeout"),
        ("peer:linformer", "", False, 512, "ok"),
    ]
    for i, (name, label, causal, n, status) in enumerate(specs):
        family = "peer" if name.startswith("peer:") else "sparse"
        store.put(full_row(f"p{i}", name=name, label=label, causal=causal, n=n, status=status, message=None if status == "ok" else "why",
                           family=family, options={"i": i % 2}))
    ordered = sorted(range(len(specs)), key=lambda i: specs[i][:4])
    assert [r["key"] for r in store.rows()] == [f"p{i}" for i in ordered]
    assert [r["key"] for r in store.rows(status="ok")] == [f"p{i}" for i in ordered if specs[i][4] == "ok"]
    assert [r["key"] for r in store.rows(where={"name": "local", "causal": False})] == ["p3", "p2", "p5"]  # label "" before "local w=8"
    assert [r["key"] for r in store.rows(status="ok", where={"n": 512, "options": {"i": 0}})] == ["p4", "p0", "p6"]
    assert [r["key"] for r in store.rows(where={"message": None})] == [r["key"] for r in store.rows(status="ok")]
    assert [r["key"] for r in store.rows(where={"message": None, "family": "peer"})] == ["p6"]
    assert store.rows(where={"name": "absent"}) == []
    with pytest.raises(ValueError, match="cannot filter on 'touched_pairs'"):
        store.rows(where={"touched_pairs": 1})
    with pytest.raises(ValueError, match="'status' must be one of"):
        store.rows(status="fine")
    with pytest.raises(ValueError, match="'causal' must be a bool"):
        store.rows(where={"causal": "yes"})


def test_delete(store):
    for key in ("alpha", "beta", "gamma", "delta", "a"):
        store.put(full_row(key))
    assert store.delete(["alpha", "gamma", "absent"]) == 2
    assert store.delete("beta") == 1  # one key, not its characters
    assert store.delete([]) == 0
    assert [r["key"] for r in store.rows()] == ["a", "delta"]


def test_persists_across_instances_and_reads_beside_a_writer(tmp_path):
    path = tmp_path / "deeper" / "still" / "results.sqlite"  # parent folders are created
    with Store(path) as writer:
        writer.put(full_row("a"))
        with Store(path) as reader:  # a second connection (a report) sees committed rows
            assert reader.get("a") == full_row("a")
            writer.put(full_row("b"))
            assert [r["key"] for r in reader.rows()] == ["a", "b"]
    with Store(path) as again:
        assert again.rows() == [full_row("a"), full_row("b")]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    import attnzoo.bench.store as store_module
    path, base, blob, mode = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    base["blob"] = "x" * blob

    class Stalled(store_module._Transaction):
        def __exit__(self, *exc):  # the row is written, its COMMIT not yet
            print("inside", os.path.getsize(path + "-wal"), flush=True)
            time.sleep(600)

    with store_module.Store(path) as store:
        for i in range(1_000_000):
            if mode == "inside-a-transaction" and i == 25:
                store._db.execute("PRAGMA wal_autocheckpoint = 0")
                store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # an empty WAL: what it holds at the stall is uncommitted
                store._db.execute("PRAGMA cache_size = 4")  # so the row's dirty pages spill to the WAL before COMMIT
                store._transaction = lambda: Stalled(store._db)
            store.put(dict(base, key=f"k{i:06d}", n=i + 1))
            print(i + 1, flush=True)  # after the commit
    """
)


@pytest.mark.parametrize("mode", ["anywhere", "inside-a-transaction"])
def test_killed_writer_leaves_whole_rows(tmp_path, mode):
    """SIGKILL a process that is putting rows: the file opens, is intact, holds every row the child
    reported committed, and each row it holds is complete. A 256 KiB extra value makes each put span
    ~64 pages. "anywhere": killed after its 25th commit, wherever it then is; "inside-a-transaction":
    killed while its 26th put has written that row's pages to the WAL but not committed them."""
    path = tmp_path / "results.sqlite"
    base, blob = full_row(), 2**18
    cmd = [sys.executable, "-c", CHILD, str(path), json.dumps(base), str(blob), mode]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reported, uncommitted_wal_bytes = 0, None
    try:
        while reported < 25 or (mode == "inside-a-transaction" and uncommitted_wal_bytes is None):
            line = child.stdout.readline()
            assert line, f"the writer exited early (rc {child.poll()}): {child.stderr.read()[-2000:]}"
            if line.startswith("inside"):
                uncommitted_wal_bytes = int(line.split()[1])
            else:
                reported = int(line)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    db.close()
    with Store(path) as store:
        rows = store.rows()
        if mode == "inside-a-transaction":
            assert uncommitted_wal_bytes > blob // 2  # most of the half-put row really was on disk when the writer died
            assert len(rows) == reported == 25
        assert len(rows) >= reported
        assert rows == [dict(base, blob="x" * blob, key=f"k{i:06d}", n=i + 1) for i in range(len(rows))]  # whole, and no gaps
        store.put(full_row("after"))  # and it takes new rows
        assert store.has("after")


@pytest.mark.parametrize("kind", ["foreign-sqlite", "text", "damaged-store"])
def test_refuses_a_file_that_is_not_a_store(tmp_path, kind):
    path = tmp_path / "results.sqlite"
    if kind == "text":
        path.write_text("key,name\nlocal|n=1,local\n" * 100)
        match = "is not an SQLite file"
    else:
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE rows (key TEXT)")
            if kind == "damaged-store":  # our application id but no schema version
                db.execute(f"PRAGMA application_id = {0x617A6F6F}")
        db.close()
        match = "not an attnzoo results store" if kind == "foreign-sqlite" else "without a schema version"
    before = path.read_bytes()
    with pytest.raises(ValueError, match=match):
        Store(path)
    assert path.read_bytes() == before  # refused without touching it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.sqlite"]


def test_refuses_a_newer_schema_version(tmp_path):
    path = tmp_path / "results.sqlite"
    with Store(path) as store:
        store.put(full_row())
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(ValueError, match=f"schema version {SCHEMA_VERSION + 1}, newer than this attnzoo reads .*upgrade attnzoo"):
        Store(path)


def _without(field):
    row = full_row()
    del row[field]
    return row


BAD_ROWS = {  # id: (row, the field the message must name)
    "status-weird": (full_row(status="weird"), "'status' must be one of"),
    "n-str": (full_row(n="1024"), "'n' must be an int"),
    "n-bool": (full_row(n=True), "'n' must be an int"),
    "n-zero": (full_row(n=0), "'n' must be >= 1"),
    "causal-int": (full_row(causal=1), "'causal' must be a bool"),
    "forward_ms-nan": (full_row(forward_ms=float("nan")), "'forward_ms' must be finite"),
    "forward_ms-str": (full_row(forward_ms="3.1"), "'forward_ms' must be a float"),
    "spread-three": (full_row(forward_spread_ms=[1.0, 2.0, 3.0]), "'forward_spread_ms' must be a \\[low, high\\]"),
    "spread-reversed": (full_row(forward_spread_ms=[2.0, 1.0]), "'forward_spread_ms' must be \\[low, high\\] with low <= high"),
    "machine-missing": (_without("machine"), "lacks required field\\(s\\) machine"),
    "key-none": (full_row(key=None), "'key' must not be None"),
    "key-empty": (full_row(key=""), "'key' must not be empty"),
    "options-list": (full_row(options=[1]), "'options' must be a dict"),
    "options-int-key": (full_row(options={"window": {3: 4}}), "'options' has a non-str key 3 in \\['window'\\]"),
    "options-nan": (full_row(options={"eps": [1.0, float("nan")]}), "'options'\\['eps'\\]\\[1\\] is nan"),
    "machine-object": (full_row(machine={"cpu": object()}), "'machine'\\['cpu'\\] is not JSON: object"),
    "extra-set": (full_row(pairs={1, 2}), "extra field 'pairs' is not JSON: set"),
    "device-gpu": (full_row(device="gpu"), "'device' must be one of"),
    "timeout-without-message": (full_row(status="timeout", message=None), "'message' must say why"),
    "peer-family": (full_row(name="peer:linformer"), "'family' is 'sparse' for name 'peer:linformer'"),
    "measured_at-local": (full_row(measured_at="2026-05-09T09:35:25+02:00"), "'measured_at' must be an ISO-8601 UTC time"),
    "measured_at-junk": (full_row(measured_at="yesterday"), "'measured_at' must be an ISO-8601 UTC time"),
}


@pytest.mark.parametrize("row, match", BAD_ROWS.values(), ids=BAD_ROWS.keys())
def test_put_names_the_bad_field(store, row, match):
    with pytest.raises(ValueError, match=match):
        store.put(row)
    assert len(store) == 0


def _from_csv(record: dict) -> dict:
    """A csv.DictReader record back to a row: per-column decoding, then the extra keys merged in."""
    row = {}
    for c in COLUMNS:
        text = record[c.name]
        if text == "" and c.nullable:
            row[c.name] = None
        elif c.kind == "int":
            row[c.name] = int(text)
        elif c.kind == "float":
            row[c.name] = float(text)
        elif c.kind in ("bool", "json", "spread"):
            row[c.name] = json.loads(text)
        else:
            row[c.name] = text
    return {**row, **json.loads(record["extra"])}


def test_exports_parse_back_to_the_rows(store, tmp_path):
    store.put(full_row("b"))
    store.put(full_row("a", name="full", family="exact", status="timeout", message='slow, "very"', forward_ms=None, options={}))
    store.put(minimal_row("c", label="", batch=3))
    out = tmp_path / "out"
    assert store.export_json(out / "results.json") == out / "results.json"
    assert store.export_csv(out / "results.csv") == out / "results.csv"
    with open(out / "results.json") as f:
        assert json.load(f) == {"schema_version": SCHEMA_VERSION, "rows": store.rows()}
    with open(out / "results.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == [c.name for c in COLUMNS] + ["extra"]
        assert [_from_csv(r) for r in reader] == store.rows()
    assert sorted(p.name for p in out.iterdir()) == ["results.csv", "results.json"]  # no temporary files left


def test_an_export_imports_into_another_store_row_for_row(store, tmp_path):
    store.put(full_row("b", scaled_options=["clusters"]))  # an extra key travels too
    store.put(full_row("a", name="full", family="exact", status="timeout", message="slow", forward_ms=None, options={}))
    store.put(minimal_row("c", label="", batch=3))
    store.export_json(tmp_path / "rows.json")
    with Store(tmp_path / "other.sqlite") as other:
        other.put(full_row("b", n=8))  # the same key is replaced, another key is kept
        other.put(full_row("d"))
        assert other.import_json(tmp_path / "rows.json") == 3
        assert [r for r in other.rows() if r["key"] != "d"] == store.rows()
        assert other.get("b")["scaled_options"] == ["clusters"] and other.get("d") is not None


@pytest.mark.parametrize(
    "text, match",
    [
        ("{not json", "is not JSON|Expecting"),
        ('{"schema_version": 2}', r'expected \{"schema_version": ..., "rows": \[...\]\}'),
        ('{"schema_version": 99, "rows": []}', "schema_version 99; this attnzoo reads 1 to"),
        ("a valid row, then a bad one", "row 1: row 'x' lacks required field"),
    ],
    ids=["not-json", "no-rows", "newer-schema", "bad-row"],
)
def test_a_bad_import_names_the_problem_and_changes_nothing(store, tmp_path, text, match):
    store.put(full_row("kept"))
    path = tmp_path / "bad.json"
    path.write_text(text if "row 1" not in match else json.dumps({"schema_version": 2, "rows": [full_row("new"), {"key": "x"}]}))
    with pytest.raises(ValueError, match=f"cannot import {path}: .*({match})"):
        store.import_json(path)
    assert [r["key"] for r in store.rows()] == ["kept"]  # the valid first row of a bad file was not written either


# -- training runs ---------------------------------------------------------------------------------


def test_a_version_1_store_gains_the_runs_table_and_keeps_its_rows(tmp_path):
    path = tmp_path / "results.sqlite"
    with Store(path) as store:
        store.put(full_row())
    with sqlite3.connect(path) as db:  # make it a version-1 file, as attnzoo wrote before training runs
        db.execute("DROP TABLE runs")
        db.execute("PRAGMA user_version = 1")
    db.close()
    with Store(path) as store:
        assert store.rows() == [full_row()]
        store.put_run("r1", task="listops", name="full", status="done", step=5, record={"seed": 1}, valid_accuracy=0.5)
        assert [r["key"] for r in store.runs()] == ["r1"]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    db.close()


def test_runs_come_back_as_put_filtered_and_replaced_by_key(tmp_path):
    with Store(tmp_path / "s.sqlite") as store:
        store.put_run("b", task="listops", name="local", status="running", step=3, record={"history": [[1, 0.25]], "config": {"lr": 1e-3}})
        store.put_run("a", task="pathfinder32", name="full", status="done", step=9, record={}, valid_accuracy=0.75, test_accuracy=0.5)
        store.put_run("b", task="listops", name="local", status="done", step=10, record={"history": [[1, 0.25]]}, test_accuracy=1.0)
        runs = store.runs()
        assert [(r["key"], r["status"], r["step"]) for r in runs] == [("b", "done", 10), ("a", "done", 9)]
        assert runs[0]["history"] == [[1, 0.25]] and runs[0]["test_accuracy"] == 1.0 and runs[0]["valid_accuracy"] is None
        assert [r["key"] for r in store.runs(task="pathfinder32")] == ["a"]
        assert store.runs(status="running") == []
        assert len(store) == 0  # runs are not benchmark rows


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"status": "ok"}, "status"),
        ({"step": -1}, "step"),
        ({"task": ""}, "task"),
        ({"valid_accuracy": 1.5}, "valid_accuracy"),
        ({"test_accuracy": float("nan")}, "test_accuracy"),
        ({"record": {1: "x"}}, "non-str key"),
    ],
    ids=["status", "step", "task", "accuracy-range", "accuracy-nan", "record-key"],
)
def test_bad_runs_are_refused_naming_the_field(tmp_path, changes, match):
    run = {"task": "listops", "name": "full", "status": "done", "step": 1, "record": {}, **changes}
    with Store(tmp_path / "s.sqlite") as store:
        with pytest.raises(ValueError, match=match):
            store.put_run("k", **run)
        assert store.runs() == []
