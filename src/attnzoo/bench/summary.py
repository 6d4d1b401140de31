"""Summaries of benchmark result rows: series, fitted slopes, the LRA efficiency view, the terminal table.

Pure functions on the harness's row dicts (no plotting, no torch). A *series* is the rows of one
curve: same display name, device, dtype, batch, heads, head dim, causal, layer (and thread count
and options, which only show in the name when they vary), sorted by N.

The efficiency view follows Long Range Arena's Table 2 (Tay et al., 2021, arxiv.org/abs/2011.04006):
speed is steps per second relative to the vanilla Transformer ("full" here) at N = 1K..4K, memory
is peak memory relative to it.
"""

from __future__ import annotations

import math
import re

LRA_NS = (1024, 2048, 3072, 4096)
TIME_FIELDS = ("forward_ms", "forward_backward_ms")
SLOPE_FIELDS = ("forward_ms", "forward_backward_ms", "peak_bytes")
# fields that make two rows of one display name different curves; shown in the name only when they vary
_GROUP_FIELDS = ("device", "dtype", "batch", "heads", "head_dim", "layer", "threads")


def display_name(row: dict) -> str:
    """A row's name in tables and plots: its label, or the mechanism name (+ " causal")."""
    return row.get("label") or row["name"] + (" causal" if row.get("causal") else "")


def _options_text(row: dict) -> str:
    """The options that make a curve: those the sweep scaled with N (``scaled_options``) are part of it, not a new one."""
    options, scaled = row.get("options") or {}, set(row.get("scaled_options") or ())
    return ",".join(f"{k}={options[k]}" for k in sorted(options) if k not in scaled)


def _group(row: dict) -> tuple:
    """What a row must share with the full-attention row it is compared against."""
    return (
        row.get("device", "cpu"), row.get("dtype", "float32"), row.get("batch"), row.get("heads"), row.get("head_dim"),
        bool(row.get("causal")), bool(row.get("layer")), row.get("threads"),
    )


def _identity(row: dict) -> tuple:
    return (display_name(row), *_group(row), _options_text(row))


# where each field sits in _identity's tuple
_AT = {f: 1 + i for i, f in enumerate(("device", "dtype", "batch", "heads", "head_dim", "causal", "layer", "threads"))}


def _suffix(field: str, value) -> str:
    if field in ("device", "dtype"):
        return str(value)
    if field == "layer":
        return "layer" if value else "core"
    return {"batch": "b", "heads": "h", "head_dim": "d", "threads": "t"}[field] + f"={value}"


def _series_names(rows: list[dict]) -> dict[tuple, str]:
    """Row identity -> series name: the display name, plus what varies across the rows (in brackets)."""
    ids = {_identity(r) for r in rows}
    varying = [f for f in _GROUP_FIELDS if len({x[_AT[f]] for x in ids}) > 1]
    # the display name carries "causal" unless a label replaced it
    causal_clash = {x[0] for x in ids if len({y[_AT["causal"]] for y in ids if y[0] == x[0]}) > 1}
    options_vary = {x[0] for x in ids if len({y[-1] for y in ids if y[0] == x[0]}) > 1}
    names = {}
    for x in ids:
        parts = [_suffix(f, x[_AT[f]]) for f in varying]
        if x[0] in causal_clash and x[_AT["causal"]] and not x[0].endswith("causal"):
            parts.append("causal")
        if x[0] in options_vary:
            parts.append(x[-1] or "defaults")
        names[x] = x[0] + (f" ({', '.join(parts)})" if parts else "")
    return names


def _named(rows: list[dict]) -> dict[str, list[dict]]:
    """Series name -> all its rows (any status), sorted by N."""
    names = _series_names(rows)
    out: dict[str, list[dict]] = {}
    for row in rows:
        out.setdefault(names[_identity(row)], []).append(row)
    return {name: sorted(rs, key=lambda r: r["n"]) for name, rs in sorted(out.items())}


def series(rows: list[dict]) -> dict[str, list[dict]]:
    """Series name -> its ok rows sorted by N (series with no ok row are left out).

    The name is the display name; the device, dtype, batch, heads, head dim, layer or thread count
    is appended in brackets only when the rows mix them, and the options only when one display
    name was run with several option sets, e.g. "local (cuda, float16)".
    """
    out = {name: [r for r in rs if r.get("status") == "ok"] for name, rs in _named(rows).items()}
    return {name: rs for name, rs in out.items() if rs}


def fitted_slope(points: list[tuple[int, float]], min_n: int | None = None) -> float | None:
    """Least-squares slope of log(value) against log(n): the exponent p of value ≈ c·nᵖ.

    Points with n < ``min_n`` or a missing / non-positive value are left out; None with fewer
    than two distinct n left.
    """
    pts = [(math.log(n), math.log(v)) for n, v in points if v is not None and v > 0 and n > 0 and (min_n is None or n >= min_n)]
    if len({x for x, _ in pts}) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


def slopes(rows: list[dict], field: str, *, min_n: int | None = None) -> dict[str, float | None]:
    """Series name -> fitted log-log slope of ``field`` ("forward_ms", "forward_backward_ms" or "peak_bytes") against N."""
    if field not in SLOPE_FIELDS:
        raise ValueError(f"slopes: field must be one of {SLOPE_FIELDS}, got {field!r}")
    return {name: fitted_slope([(r["n"], r.get(field)) for r in rs], min_n) for name, rs in series(rows).items()}


def _full_series(named: dict[str, list[dict]]) -> dict[tuple, str]:
    """Group -> name of the full-attention series to compare with (default options and no label preferred)."""
    candidates: dict[tuple, list[tuple]] = {}
    for name, rs in named.items():
        row = rs[0]
        if row["name"] == "full":
            candidates.setdefault(_group(row), []).append((bool(row.get("options")), bool(row.get("label")), name))
    return {group: min(c)[2] for group, c in candidates.items()}


def _by_n(rs: list[dict]) -> dict[int, dict]:
    return {r["n"]: r for r in rs if r.get("status") == "ok"}


def _ratio(num, den) -> float | None:
    return num / den if num is not None and den not in (None, 0) else None


def lra_efficiency(rows: list[dict], ns=LRA_NS, field: str = "forward_backward_ms") -> dict:
    """LRA Table 2's layout: speed and memory relative to full attention at each N.

    For each series and N: ``speed`` = full's time / this time (> 1 is faster), ``memory`` =
    this peak / full's peak (< 1 is smaller), ``steps_per_s`` = 1000 / time in ms. Full is the
    series named "full" with the same device, dtype, batch, heads, head dim, causal, layer and
    thread count. A value is None where this point or full's is missing or not ok.

    Returns:
        {"ns": [...], "field": field, "rows": [{"name", "mechanism", "family", "causal",
        "speed": {n: x|None}, "memory": {n: x|None}, "steps_per_s": {n: x|None}}]}, full first.
    """
    if field not in TIME_FIELDS:
        raise ValueError(f"lra_efficiency: field must be one of {TIME_FIELDS}, got {field!r}")
    ns = [int(n) for n in ns]
    named = _named(rows)
    fulls = _full_series(named)
    out = []
    for name, rs in named.items():
        mine = _by_n(rs)
        full = _by_n(named[fulls[_group(rs[0])]]) if _group(rs[0]) in fulls else {}
        speed, memory, steps = {}, {}, {}
        for n in ns:
            t = mine.get(n, {}).get(field)
            speed[n] = _ratio(full.get(n, {}).get(field), t)
            memory[n] = _ratio(mine.get(n, {}).get("peak_bytes"), full.get(n, {}).get("peak_bytes"))
            steps[n] = _ratio(1000.0, t)
        row = rs[0]
        entry = {"name": name, "mechanism": row["name"], "family": row.get("family", ""), "causal": bool(row.get("causal"))}
        out.append({**entry, "speed": speed, "memory": memory, "steps_per_s": steps})
    out.sort(key=lambda e: (e["mechanism"] != "full", e["name"]))
    return {"ns": ns, "field": field, "rows": out}


def error_table(rows: list[dict]) -> list[dict]:
    """One entry per series and N with an error measured: {"name", "n", "error_random", "error_peaked"}.

    The errors are relative to exact softmax attention on random and on peaked (low-entropy) inputs.
    """
    out = []
    for name, rs in series(rows).items():
        for r in rs:
            if r.get("error_random") is not None or r.get("error_peaked") is not None:
                out.append({"name": name, "n": r["n"], "error_random": r.get("error_random"), "error_peaked": r.get("error_peaked")})
    return out


_VERSUS = re.compile(r" \(vs (?P<package>[^()]+)\)$")


def peer_label(mechanism: str, package: str) -> str:
    """The label of our layer measured beside a package (the sweep writes it, ``peer_table`` reads it)."""
    return f"{mechanism} layer (vs {package})"


def peer_table(rows: list[dict]) -> list[dict]:
    """Each public package against our layer at matched settings, per N and direction.

    The sweep (``--peers``) measures a package as the row named "peer:<package>" and our layer beside
    it as the row labelled "... (vs <package>)", at the same N, device, dtype, batch, heads, head dim,
    causal setting and thread count. ``speedup_*`` = the package's time / ours (> 1: ours is faster);
    ``memory`` = our peak / the package's (< 1: ours is smaller); None where either point failed.

    Returns [{"package", "mechanism", "n", "causal", "ours", "peer", "speedup_forward",
    "speedup_forward_backward", "memory"}] sorted by package, causal, N; "ours" / "peer" are the rows
    (None when that point was not measured).
    """
    peers, ours = {}, {}
    for r in rows:
        if r["name"].startswith("peer:"):
            peers[(r["name"].removeprefix("peer:"), r["n"], _group(r))] = r
        elif match := _VERSUS.search(r.get("label") or ""):
            ours[(match["package"], r["n"], _group(r))] = r
    out = []
    for key in peers.keys() | ours.keys():
        mine, theirs = ours.get(key), peers.get(key)
        ok = mine is not None and theirs is not None and mine.get("status") == theirs.get("status") == "ok"
        causal = bool((mine or theirs).get("causal"))
        pair = {"package": key[0], "mechanism": mine["name"] if mine else None, "n": key[1], "causal": causal, "ours": mine, "peer": theirs}
        for field in TIME_FIELDS:
            pair["speedup_" + field.removesuffix("_ms")] = _ratio(theirs.get(field), mine.get(field)) if ok else None
        pair["memory"] = _ratio(mine.get("peak_bytes"), theirs.get("peak_bytes")) if ok else None
        out.append((str(key[2]), pair))
    return [pair for _, pair in sorted(out, key=lambda e: (e[1]["package"], e[1]["causal"], e[1]["n"], e[0]))]


def time_field(rows: list[dict]) -> str:
    """"forward_backward_ms" when any ok row has it, else "forward_ms" (forward-only runs)."""
    ok = [r for r in rows if r.get("status") == "ok"]
    return "forward_backward_ms" if any(r.get("forward_backward_ms") is not None for r in ok) else "forward_ms"


def fastest(rows: list[dict]) -> list[dict]:
    """Per comparison group and N, the series with the lowest time (fwd+bwd, or fwd for forward-only runs).

    Returns [{"n", "name", "time_ms", "speedup"}] sorted by N; speedup is full's time / its time
    (None without a full point to compare with); "group" names full's series for that comparison.
    """
    field = time_field(rows)
    named = series(rows)
    fulls = _full_series(_named(rows))
    best: dict[tuple, tuple[float, str, dict]] = {}
    for name, rs in named.items():
        for r in rs:
            t = r.get(field)
            key = (_group(r), r["n"])
            if t is not None and (key not in best or t < best[key][0]):
                best[key] = (t, name, r)
    out = []
    for (group, n), (t, name, r) in best.items():
        full_name = fulls.get(group)
        full_t = _by_n(named.get(full_name, [])).get(n, {}).get(field) if full_name else None
        out.append({"n": n, "name": name, "time_ms": t, "speedup": _ratio(full_t, t), "group": full_name or ""})
    return sorted(out, key=lambda e: (e["n"], e["group"]))


def fmt(value, kind: str = "num") -> str:
    """Text for a table cell: "–" for None; kinds "num" (3 significant digits), "x" (ratio), "mib", "err", "rate"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if kind == "x":
        return f"{value:.1f}×" if value >= 10 else f"{value:.2f}×" if value >= 0.1 else f"{value:.2g}×"
    if kind == "mib":
        return f"{value / 2**20:.1f}"
    if kind == "err":
        return f"{value:.2e}" if value and (abs(value) < 1e-3 or abs(value) >= 1e3) else f"{value:.4f}"
    if kind == "rate":
        for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if abs(value) >= size:
                return f"{value / size:.3g}{unit}"
        return f"{value:.3g}"
    for floor, digits in ((100, 0), (10, 1), (1, 2)):
        if abs(value) >= floor:
            return f"{value:.{digits}f}"
    return f"{value:.3g}"


def _spread(row: dict) -> str:
    spread = row.get("forward_backward_spread_ms") or row.get("forward_spread_ms")
    return f"{fmt(spread[0])}–{fmt(spread[1])}" if spread else "–"


def terminal_table(rows: list[dict]) -> str:
    """The end-of-sweep table: one line per point, grouped by series; failed points show their status and message.

    "spread" is the p25–p75 of fwd+bwd (fwd for forward-only points); "vs full" is full's time over
    this one at the same N (fwd+bwd, or fwd for forward-only runs).
    """
    field = time_field(rows)
    named = _named(rows)
    fulls = _full_series(named)
    header = ["mechanism", "N", "fwd ms", "fwd+bwd ms", "spread ms", "tokens/s", "vs full", "peak MiB", "err random", "err peaked"]
    header.append("status")
    lines = [header]
    for name, rs in named.items():
        full = _by_n(named[fulls[_group(rs[0])]]) if _group(rs[0]) in fulls else {}
        for r in rs:
            if r.get("status") != "ok":
                message = " ".join(str(r.get("message") or "").split())
                status = r.get("status", "?") + (f": {message[:80]}" if message else "")
                lines.append([name, str(r["n"])] + ["–"] * 8 + [status])
                continue
            lines.append([
                name, str(r["n"]), fmt(r.get("forward_ms")), fmt(r.get("forward_backward_ms")), _spread(r),
                fmt(r.get("tokens_per_s"), "rate"),
                fmt(_ratio(full.get(r["n"], {}).get(field), r.get(field)), "x"), fmt(r.get("peak_bytes"), "mib"),
                fmt(r.get("error_random"), "err"), fmt(r.get("error_peaked"), "err"), "",
            ])
    return _aligned(lines)


def peer_terminal_table(rows: list[dict]) -> str:
    """``peer_table`` as text, one line per package, N and direction ("" without packages); a failed
    point shows its status."""
    lines = [["package", "ours", "N", "ours ms", "package ms", "speed-up", "ours MiB", "package MiB", "memory", ""]]
    field = time_field(rows)
    for pair in peer_table(rows):
        mine, theirs = pair["ours"], pair["peer"]
        cells = [value_or_status(mine, field), value_or_status(theirs, field), fmt(pair["speedup_" + field.removesuffix("_ms")], "x"),
                 value_or_status(mine, "peak_bytes", "mib"), value_or_status(theirs, "peak_bytes", "mib"), fmt(pair["memory"], "x")]
        name = pair["package"] + (" causal" if pair["causal"] else "")
        lines.append([name, pair["mechanism"] or "–", str(pair["n"]), *cells, ""])
    return _aligned(lines) if len(lines) > 1 else ""


def value_or_status(row: dict | None, field: str, kind: str = "num") -> str:
    """A point's value, or why there is none: its status, or "not measured"."""
    if row is None:
        return "not measured"
    return fmt(row.get(field), kind) if row.get("status") == "ok" else str(row.get("status"))


def _aligned(lines: list[list[str]]) -> str:
    """Columns padded to their widest cell (the first left-aligned, the rest right-aligned); the last cell trails unpadded."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]) - 1)]
    text = []
    for line in lines:
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))]
        text.append(("  ".join(cells) + "  " + line[-1]).rstrip())
    return "\n".join(text)
