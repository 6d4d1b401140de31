"""Embedded SQLite store of benchmark results: one row per measured point, safe to kill mid-sweep.

A row is a plain dict. Its columns (``COLUMNS``; ``?`` = may be None, ``=x`` = default when omitted):

    key                                       unique id of the point (primary key; the sweep makes it)
    name, label="", family                    registry name ("peer:<package>" for a public package, family "peer")
    n, batch, heads, head_dim, threads        ints >= 1
    dtype, device                             "float32", ...; "cpu" | "cuda"
    causal, backward, layer                   bools: causal mask; fwd+bwd timed too; whole layer x [B, N, C] timed
    options={}                                the mechanism's options (JSON)
    status, message?                          "ok" | "timeout" | "oom" | "error"; why, required for non-ok rows
    forward_ms?, forward_backward_ms?         medians
    forward_spread_ms?, forward_backward_spread_ms?   [low, high] over the repeats ([p25, p75] or [min, max])
    repeats?, tokens_per_s?, peak_bytes?      batch·n / (fwd+bwd or fwd) seconds; peak above the process's baseline
    error_random?, error_peaked?              relative error vs exact softmax attention (None: not measured)
    machine, versions                         dicts (JSON): {"cpu", "cores", "gpu", "hostname"}, {"torch", "attnzoo", "python"}
    measured_at                               ISO-8601 UTC, e.g. "2026-05-09T07:35:25+00:00"

Training runs (``attnzoo lra train``) land in the same file, in the ``runs`` table: one row per run,
keyed by the run's identity, with its task, mechanism, status and accuracies as columns and
everything else (config, history, machine) in one JSON ``record`` (``put_run`` / ``runs``).

Any other key is kept in the ``extra`` JSON column and given back, so the schema can grow without a
migration. Rows come back as put, except that JSON values come back as JSON reads them: a tuple
(``--opt dilation=(1,2)``) as a list. Floats must be finite (SQLite would store NaN as NULL).
Each ``put`` is one transaction, so a killed sweep leaves every row whole or absent; the file is in
WAL mode, so readers (a report) never wait on the sweep. The file says what it is in its SQLite
header: ``PRAGMA application_id`` = ``APPLICATION_ID``, ``PRAGMA user_version`` = ``SCHEMA_VERSION``.

    with Store("attnzoo-out/bench/results.sqlite") as store:
        if not store.has(key):
            store.put(row)
        table = store.rows(status="ok", where={"causal": False})
"""

from __future__ import annotations

import csv
import io
import json
import math
import sqlite3
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import NamedTuple

from attnzoo.bench.files import write_atomic

SCHEMA_VERSION = 2  # 1: rows only; 2: + runs (a version-1 file gains the table when opened)
APPLICATION_ID = 0x617A6F6F  # "azoo": marks an attnzoo store in the SQLite header
STATUSES = ("ok", "timeout", "oom", "error")
RUN_STATUSES = ("running", "interrupted", "done", "failed")
DEVICES = ("cpu", "cuda")

_REQUIRED = object()


class Column(NamedTuple):
    name: str
    kind: str  # "text" | "int" | "bool" | "float" | "json" (a dict) | "spread" (a [low, high] list)
    nullable: bool = False
    default: object = _REQUIRED  # a value, or _REQUIRED; nullable columns default to None


COLUMNS = (
    Column("key", "text"),
    Column("name", "text"),
    Column("label", "text", default=""),
    Column("family", "text"),
    Column("n", "int"),
    Column("batch", "int"),
    Column("heads", "int"),
    Column("head_dim", "int"),
    Column("threads", "int"),
    Column("dtype", "text"),
    Column("device", "text"),
    Column("causal", "bool"),
    Column("backward", "bool"),
    Column("layer", "bool"),
    Column("options", "json", default={}),
    Column("status", "text"),
    Column("message", "text", nullable=True),
    Column("forward_ms", "float", nullable=True),
    Column("forward_backward_ms", "float", nullable=True),
    Column("forward_spread_ms", "spread", nullable=True),
    Column("forward_backward_spread_ms", "spread", nullable=True),
    Column("repeats", "int", nullable=True),
    Column("tokens_per_s", "float", nullable=True),
    Column("peak_bytes", "int", nullable=True),
    Column("error_random", "float", nullable=True),
    Column("error_peaked", "float", nullable=True),
    Column("machine", "json"),
    Column("versions", "json"),
    Column("measured_at", "text"),
)
_BY_NAME = {c.name: c for c in COLUMNS}
_NAMES = tuple(_BY_NAME)
_INSERT_ROW = f"INSERT OR REPLACE INTO rows ({', '.join((*_NAMES, 'extra'))}) VALUES ({', '.join('?' * (len(_NAMES) + 1))})"  # a row: its columns, then extra
_SQL_TYPE = {"text": "TEXT", "int": "INTEGER", "bool": "INTEGER", "float": "REAL", "json": "TEXT", "spread": "TEXT"}
_POSITIVE = ("n", "batch", "heads", "head_dim", "threads", "repeats")
_NON_EMPTY = ("key", "name", "family", "dtype")
_ORDER = "ORDER BY name, label, causal, n, key"


def _schema_sql() -> tuple[str, ...]:
    cols = []
    for c in COLUMNS:
        col = f"{c.name} {_SQL_TYPE[c.kind]}" + ("" if c.nullable else " NOT NULL")
        if c.name == "key":
            col += " PRIMARY KEY"
        if c.kind == "bool":
            col += f" CHECK ({c.name} IN (0, 1))"
        if c.name == "status":
            col += f" CHECK (status IN ({', '.join(repr(s) for s in STATUSES)}))"
        cols.append(col)
    cols.append("extra TEXT NOT NULL DEFAULT '{}'")  # unknown keys, as one JSON object
    return (
        "CREATE TABLE rows (\n    " + ",\n    ".join(cols) + "\n)",
        "CREATE INDEX rows_order ON rows (name, label, causal, n)",
        "CREATE INDEX rows_status ON rows (status)",
        *RUNS_SQL,
        f"PRAGMA application_id = {APPLICATION_ID}",
        f"PRAGMA user_version = {SCHEMA_VERSION}",
    )


RUNS_SQL = (
    "CREATE TABLE runs (\n    key TEXT PRIMARY KEY,\n    task TEXT NOT NULL,\n    name TEXT NOT NULL,\n"
    f"    status TEXT NOT NULL CHECK (status IN ({', '.join(repr(s) for s in RUN_STATUSES)})),\n"
    "    step INTEGER NOT NULL,\n    valid_accuracy REAL,\n    test_accuracy REAL,\n    record TEXT NOT NULL,\n"
    "    updated_at TEXT NOT NULL\n)",
    "CREATE INDEX runs_task ON runs (task, name)",
)
SCHEMA_SQL = _schema_sql()  # run in order, in one transaction, on a new file


class Store:
    """Benchmark rows in one SQLite file; one connection per Store (use it from the thread that made it).

    Args:
        path: the file; created, with its parent folders, when missing.

    Raises:
        ValueError: the file is not SQLite, is SQLite but not an attnzoo store, or was written by a
            newer attnzoo (schema version above ``SCHEMA_VERSION``).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; every write below opens and commits its own.
        self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            self._open()
        except BaseException:
            self._db.close()
            raise

    def _open(self) -> None:
        app, version, objects = self._header()
        if app == 0 and objects == 0:  # a new (or empty) file: make it a store, once, under a write lock
            self._db.execute("BEGIN IMMEDIATE")
            try:
                app, version, objects = self._header()
                if app == 0 and objects == 0:
                    for statement in SCHEMA_SQL:  # not executescript: it would commit the open transaction first
                        self._db.execute(statement)
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            app, version, objects = self._header()
        _check_header(self.path, app, version)
        if version == 1:  # a store from before training runs: add their table, once, under a write lock
            with self._transaction():
                if self._db.execute("PRAGMA user_version").fetchone()[0] == 1:
                    for statement in RUNS_SQL:
                        self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._db.execute("PRAGMA journal_mode = WAL")  # persistent in the file; readers never block the writer
        self._db.execute("PRAGMA synchronous = FULL")  # a committed row survives a power cut too, not only a kill

    def _header(self) -> tuple[int, int, int]:
        try:
            app = self._db.execute("PRAGMA application_id").fetchone()[0]
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            objects = self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        except sqlite3.DatabaseError as err:
            raise ValueError(
                f"{self.path} is not an SQLite file ({err}); it is not an attnzoo results store: move it away or choose another path"
            ) from None
        return app, version, objects

    # -- reading ---------------------------------------------------------------------------------

    def status(self, key: str) -> str | None:
        """The row's status ("ok", "timeout", "oom", "error"), or None when no row has this key."""
        found = self._db.execute("SELECT status FROM rows WHERE key = ?", (key,)).fetchone()
        return None if found is None else found[0]

    def has(self, key: str) -> bool:
        """Whether an "ok" row exists for key: a sweep skips these and re-tries timeouts, ooms and errors.

        Equivalent to: ``store.status(key) == "ok"``.
        """
        return self.status(key) == "ok"

    def get(self, key: str) -> dict | None:
        """The row as put (omitted optional fields filled with their defaults, tuples back as lists), or None."""
        found = self._db.execute(f"SELECT {', '.join(_NAMES)}, extra FROM rows WHERE key = ?", (key,)).fetchone()
        return None if found is None else _decode(found)

    def rows(self, *, status: str | None = None, where: dict | None = None) -> list[dict]:
        """Rows ordered by (name, label, causal, n, key), optionally only those whose columns equal the given values.

        Args:
            status: keep only rows with this status.
            where: {column: value}; each column must equal the value (None matches NULL; a dict or a
                list matches the same JSON). Only columns, not extra keys.

        Equivalent to: ``sorted((r for r in all_rows if r["status"] == status and all(r[c] == v for c, v in
        where.items())), key=lambda r: (r["name"], r["label"], r["causal"], r["n"], r["key"]))``.
        """
        where = dict(where or {})
        if status is not None:
            _check_choice("status", status, STATUSES)
            if where.setdefault("status", status) != status:
                raise ValueError(f"rows(): status={status!r} and where['status']={where['status']!r} disagree; give one")
        clauses, params = [], []
        for column, value in where.items():
            if column not in _BY_NAME:
                raise ValueError(f"rows(): cannot filter on {column!r}; filter on one of the columns {', '.join(_NAMES)}")
            if value is None:
                clauses.append(f"{column} IS NULL")
            else:
                _check_field(_BY_NAME[column], value)  # a value of the wrong type would match nothing, silently
                clauses.append(f"{column} = ?")
                params.append(_encode_value(_BY_NAME[column], value))
        sql = f"SELECT {', '.join(_NAMES)}, extra FROM rows"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        return [_decode(r) for r in self._db.execute(f"{sql} {_ORDER}", params)]

    def __len__(self) -> int:
        return self._db.execute("SELECT count(*) FROM rows").fetchone()[0]

    # -- writing ---------------------------------------------------------------------------------

    def put(self, row: dict) -> None:
        """Insert the row, or replace the row with the same key, in one transaction.

        Raises:
            ValueError: a required field is missing or a field has the wrong type or value; the message names it.
        """
        values = _encode_row(row)
        with self._transaction():
            self._db.execute(_INSERT_ROW, values)

    def import_json(self, path: str | Path) -> int:
        """Put every row of a file ``export_json`` wrote (insert, or replace the same key); returns how many.

        All rows are checked before any is written, so a bad file leaves the store as it was.

        Raises:
            ValueError: the file is not such an export (not JSON, no "rows" list, a newer schema) or a row is
                invalid; the message names the file and the row.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot import {path}: {err}; give a file written by attnzoo report --json") from None
        if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
            raise ValueError(f"cannot import {path}: expected {{\"schema_version\": ..., \"rows\": [...]}} as attnzoo report --json writes")
        version = data.get("schema_version")
        if not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
            raise ValueError(f"cannot import {path}: schema_version {version!r}; this attnzoo reads 1 to {SCHEMA_VERSION}")
        values = []
        for i, row in enumerate(data["rows"]):
            try:
                values.append(_encode_row(row))
            except (ValueError, TypeError, AttributeError) as err:
                raise ValueError(f"cannot import {path}: row {i}: {err}") from None
        with self._transaction():
            self._db.executemany(_INSERT_ROW, values)
        return len(values)

    def delete(self, keys: str | Iterable[str]) -> int:
        """Delete the rows with these keys (one key or many) in one transaction; returns how many existed."""
        keys = [keys] if isinstance(keys, str) else list(keys)
        with self._transaction():
            return sum(self._db.execute("DELETE FROM rows WHERE key = ?", (k,)).rowcount for k in keys)

    # -- training runs -----------------------------------------------------------------------------

    def put_run(self, key: str, *, task: str, name: str, status: str, step: int, record: dict,
                valid_accuracy: float | None = None, test_accuracy: float | None = None) -> None:
        """Insert or replace the training run ``key`` in one transaction. ``record`` is any JSON object
        (its config, history, machine...); accuracies are fractions in [0, 1] or None."""
        _check_choice("status", status, RUN_STATUSES)
        for field, value in (("key", key), ("task", task), ("name", name)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"run field {field!r} must be a non-empty str, got {value!r}")
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ValueError(f"run field 'step' must be an int >= 0, got {step!r}")
        for field, value in (("valid_accuracy", valid_accuracy), ("test_accuracy", test_accuracy)):
            if value is not None:
                _check_number(field, value)
                if not 0.0 <= value <= 1.0:
                    raise ValueError(f"run field {field!r} is a fraction in [0, 1], got {value!r}")
        if not isinstance(record, dict):
            raise ValueError(f"run field 'record' must be a dict, got {type(record).__name__}")
        _check_json("run field 'record'", record)
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO runs (key, task, name, status, step, valid_accuracy, test_accuracy, record, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, task, name, status, step, valid_accuracy, test_accuracy, json.dumps(record, sort_keys=True, allow_nan=False), stamp),
            )

    def runs(self, *, task: str | None = None, status: str | None = None) -> list[dict]:
        """Training runs ordered by (task, name, key), each {key, task, name, status, step,
        valid_accuracy, test_accuracy, updated_at, **record}."""
        clauses, params = [], []
        for column, value in (("task", task), ("status", status)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        sql = "SELECT key, task, name, status, step, valid_accuracy, test_accuracy, updated_at, record FROM runs"
        sql += (" WHERE " + " AND ".join(clauses) if clauses else "") + " ORDER BY task, name, key"
        names = ("key", "task", "name", "status", "step", "valid_accuracy", "test_accuracy", "updated_at")
        return [{**json.loads(r[-1]), **dict(zip(names, r[:-1]))} for r in self._db.execute(sql, params)]

    def _transaction(self):
        return _Transaction(self._db)

    # -- exporting -------------------------------------------------------------------------------

    def export_json(self, path: str | Path, rows: list[dict] | None = None) -> Path:
        """Write {"schema_version": SCHEMA_VERSION, "rows": rows()} (or the given rows) to path atomically; returns path.

        Equivalent to: ``json.dump({"schema_version": 1, "rows": rows or store.rows()}, f)``, written through a
        temporary file and os.replace, so a reader never sees half a file.
        """
        text = json.dumps({"schema_version": SCHEMA_VERSION, "rows": self.rows() if rows is None else rows}, indent=1, allow_nan=False)
        return write_atomic(Path(path), text + "\n")

    def export_csv(self, path: str | Path) -> Path:
        """Write rows() as CSV to path atomically; returns path.

        Header: the column names, then ``extra``. Cells: None is empty, bools are ``true``/``false``,
        floats are Python's shortest exact repr, dicts and lists (and ``extra``, the unknown keys as one
        object) are JSON strings.
        """
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow((*_NAMES, "extra"))
        for row in self.rows():
            extra = {k: v for k, v in row.items() if k not in _BY_NAME}
            cells = [_csv_cell(_BY_NAME[name], row[name]) for name in _NAMES]
            writer.writerow((*cells, json.dumps(extra, sort_keys=True, allow_nan=False)))
        return write_atomic(Path(path), buffer.getvalue())

    # -- lifetime --------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK when the body raises."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.db.execute("COMMIT")
        elif self.db.in_transaction:  # SQLite may have rolled back already (e.g. on a full disk)
            self.db.execute("ROLLBACK")


def _check_header(path: Path, app: int, version: int) -> None:
    if app != APPLICATION_ID:
        raise ValueError(
            f"{path} is an SQLite file but not an attnzoo results store (application_id {app:#x}, expected "
            f"{APPLICATION_ID:#x}); move it away or choose another path"
        )
    if version > SCHEMA_VERSION:
        raise ValueError(
            f"{path} has store schema version {version}, newer than this attnzoo reads ({SCHEMA_VERSION}); "
            "upgrade attnzoo or choose another path"
        )
    if version < 1:
        raise ValueError(f"{path} is an attnzoo store without a schema version ({version}); it is damaged: move it away")


# -- validation and encoding -----------------------------------------------------------------------


def _encode_row(row: dict) -> tuple:
    """The row's SQL values in (*COLUMNS, extra) order, after checking every field."""
    if not isinstance(row, dict):
        raise ValueError(f"a row must be a dict, got {type(row).__name__}")
    missing = [c.name for c in COLUMNS if c.default is _REQUIRED and not c.nullable and c.name not in row]
    if missing:
        raise ValueError(f"row {row.get('key', '?')!r} lacks required field(s) {', '.join(missing)}")
    full = {c.name: row.get(c.name, None if c.nullable else c.default) for c in COLUMNS}
    for c in COLUMNS:
        _check_field(c, full[c.name])
    _check_row(full)
    extra = {k: v for k, v in row.items() if k not in _BY_NAME}
    for k, v in extra.items():
        if not isinstance(k, str):
            raise ValueError(f"extra field {k!r}: keys must be str, got {type(k).__name__}")
        _check_json(f"extra field {k!r}", v)
    return (*(_encode_value(c, full[c.name]) for c in COLUMNS), json.dumps(extra, sort_keys=True, allow_nan=False))


def _check_field(c: Column, value) -> None:
    if value is None:
        if not c.nullable:
            raise ValueError(f"field {c.name!r} must not be None")
        return
    kind = c.kind
    if kind == "text" and not isinstance(value, str):
        raise ValueError(f"field {c.name!r} must be a str, got {type(value).__name__} {value!r}")
    if kind == "int" and (not isinstance(value, int) or isinstance(value, bool)):
        raise ValueError(f"field {c.name!r} must be an int, got {type(value).__name__} {value!r}; convert it with int()")
    if kind == "bool" and not isinstance(value, bool):
        raise ValueError(f"field {c.name!r} must be a bool, got {type(value).__name__} {value!r}")
    if kind == "float":
        _check_number(c.name, value)
    if kind == "json":
        if not isinstance(value, dict):
            raise ValueError(f"field {c.name!r} must be a dict, got {type(value).__name__} {value!r}")
        _check_json(f"field {c.name!r}", value)
    if kind == "spread":
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ValueError(f"field {c.name!r} must be a [low, high] list, got {value!r}")
        for v in value:
            _check_number(c.name, v)
        if value[0] > value[1]:
            raise ValueError(f"field {c.name!r} must be [low, high] with low <= high, got {value!r}")
    if c.name in _POSITIVE and value < 1:
        raise ValueError(f"field {c.name!r} must be >= 1, got {value}")
    if c.name in _NON_EMPTY and not value:
        raise ValueError(f"field {c.name!r} must not be empty")


def _check_row(row: dict) -> None:
    """Checks across fields, and of the few fields with a fixed set of values."""
    _check_choice("status", row["status"], STATUSES)
    _check_choice("device", row["device"], DEVICES)
    if row["status"] != "ok" and not row["message"]:
        raise ValueError(f"field 'message' must say why a {row['status']!r} row failed (row {row['key']!r})")
    if row["name"].startswith("peer:") != (row["family"] == "peer"):
        raise ValueError(
            f"field 'family' is {row['family']!r} for name {row['name']!r}: a public package's row is named "
            "'peer:<package>' with family 'peer', and only such rows"
        )
    text = row["measured_at"]
    try:  # Python 3.10's fromisoformat does not read a trailing "Z"
        stamp = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        stamp = None
    if stamp is None or stamp.utcoffset() != timedelta(0):
        raise ValueError(
            f"field 'measured_at' must be an ISO-8601 UTC time such as "
            f"datetime.now(timezone.utc).isoformat(timespec='seconds'), got {row['measured_at']!r}"
        )


def _check_choice(field: str, value, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"field {field!r} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _check_number(field: str, value) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"field {field!r} must be a float, got {type(value).__name__} {value!r}; convert it with float()")
    if not math.isfinite(value):
        raise ValueError(f"field {field!r} must be finite, got {value!r}; store None and say why in 'message' or an extra key")


def _check_json(what: str, value, at: str = "") -> None:
    """value is JSON: str keys; str, int, finite float, bool, None, list, tuple (it comes back a list) or dict values."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{what} has a non-str key {k!r}{at and ' in ' + at}: JSON would turn it into {str(k)!r}; use str keys")
            _check_json(what, v, f"{at}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_json(what, v, f"{at}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{what}{at} is {value!r}, which JSON cannot hold; use None, or a str such as 'nan'")
    elif not (value is None or isinstance(value, (str, int, float))):
        raise ValueError(f"{what}{at} is not JSON: {type(value).__name__} {value!r}; use str, int, float, bool, None, list or dict")


def _encode_value(c: Column, value):
    if value is None:
        return None
    if c.kind == "bool":
        return int(value)
    if c.kind == "float":
        return float(value)
    if c.kind == "spread":
        return json.dumps([float(v) for v in value])
    if c.kind == "json":
        return json.dumps(value, sort_keys=True, allow_nan=False)
    return value


def _decode(found: tuple) -> dict:
    row = {}
    for c, value in zip(COLUMNS, found):
        if value is not None and c.kind == "bool":
            value = bool(value)
        elif value is not None and c.kind in ("json", "spread"):
            value = json.loads(value)
        row[c.name] = value
    row.update(json.loads(found[len(COLUMNS)]))
    return row


def _csv_cell(c: Column, value) -> str:
    if value is None:
        return ""
    if c.kind == "bool":
        return "true" if value else "false"
    if c.kind in ("json", "spread"):
        return json.dumps(value, sort_keys=True)
    return repr(value) if c.kind == "float" else str(value)
