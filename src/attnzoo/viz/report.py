"""The `attnzoo bench` report: one self-contained HTML page (inline CSS, images as data URIs, no script).

Sections: header (command, machine, versions, dates), summary (fastest mechanism per N), time and
memory curves with fitted log-log slopes, the LRA-style efficiency table (Tay et al., 2021, Table 2,
arxiv.org/abs/2011.04006), approximation errors, the public packages against ours, failed points,
every point, the pattern gallery, each mechanism's weights on one probe input and, given LRA scores, the score / speed / memory bubble chart. The PNGs are also left beside the page.
"""

from __future__ import annotations

import base64
import datetime
import json
import textwrap
from html import escape
from pathlib import Path

from attnzoo.bench.files import replace_atomically
from attnzoo.bench.summary import (
    LRA_NS, display_name, error_table, fastest, fitted_slope, fmt, lra_efficiency, peer_table, series, terminal_table, time_field,
    value_or_status,
)
from attnzoo.viz.figure import pyplot, save

PANELS = (("forward_ms", "forward (ms)"), ("forward_backward_ms", "forward+backward (ms)"), ("peak_bytes", "peak memory (MiB)"))

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em;
       color: #1a202c; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #cbd5e0; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #e2e8f0; padding: 0.25em 0.6em; text-align: right; vertical-align: top; }
th { background: #edf2f7; text-align: center; } td:first-child { text-align: left; white-space: nowrap; }
td.msg { text-align: left; max-width: 60em; word-break: break-word; font-family: monospace; font-size: 0.85em; }
tr.full td { background: #fff5f5; font-weight: 600; }
pre { background: #f7fafc; border: 1px solid #e2e8f0; padding: 0.8em; overflow-x: auto; font-size: 0.8em; }
img { max-width: 100%; height: auto; border: 1px solid #e2e8f0; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: 0.15em 1em; } dl.meta dt { font-weight: 600; }
dl.meta dd { margin: 0; font-family: monospace; word-break: break-word; }
.note { color: #4a5568; font-size: 0.9em; }
"""


CONTENDED = 0.5  # cores other processes took during a point, past which the header names the point


def write_report(
    rows: list[dict],
    out_dir: str | Path,
    *,
    title: str = "attnzoo bench",
    command: str,
    gallery: list[str] | None = None,
    gallery_n: int = 64,
    lra_scores: dict[str, float] | None = None,
) -> Path:
    """Write ``out_dir/report.html`` (self-contained) and its PNGs; returns the HTML path.

    Args:
        rows: the harness's result rows (any status).
        command: the command line that produced them, shown in the header.
        gallery: mechanism names whose (query, key) pattern to draw at ``gallery_n`` (names that
            cannot be built there are skipped with a note).
        lra_scores: name -> LRA score (e.g. the average accuracy); adds the bubble chart.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    body = [f"<h1>{escape(title)}</h1>", _header(rows, command)]
    body += _summary(rows)
    body += _curves(rows, out_dir)
    body += _efficiency(rows)
    body += _errors(rows)
    body += _peers(rows)
    body += _failures(rows)
    body += ["<h2>Every point</h2>", f"<pre>{escape(terminal_table(rows))}</pre>"]
    body += _gallery(rows, gallery or [], gallery_n, out_dir)
    body += _weights_gallery(rows, gallery or [], gallery_n, out_dir)
    if lra_scores is not None:
        body += _bubbles(rows, lra_scores, out_dir)
    page = "\n".join(
        ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">', f"<title>{escape(title)}</title>",
         f"<style>{CSS}</style>", "</head>", "<body>", *body, "</body>", "</html>", ""]
    )
    path = out_dir / "report.html"
    replace_atomically(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return path


# ----------------------------------------------------------------------------------------- sections


def _header(rows: list[dict], command: str) -> str:
    dates = sorted(str(r["measured_at"]) for r in rows if r.get("measured_at"))
    items = [("command", command)]
    for key in ("machine", "versions"):
        seen = []
        for r in rows:
            value = r.get(key) or {}
            if value not in seen:
                seen.append(value)
        for i, value in enumerate(seen):
            label = key + (f" ({i + 1} of {len(seen)})" if len(seen) > 1 else "")
            items.append((label, ", ".join(f"{k}: {_plain(v)}" for k, v in sorted(value.items())) or "–"))
    span = f"{dates[0]} – {dates[-1]}" if dates and dates[0] != dates[-1] else (dates[0] if dates else "–")
    items.append(("measured", span))
    contended = sorted((r for r in rows if (r.get("others_cores") or 0) >= CONTENDED), key=lambda r: -r["others_cores"])
    if contended:  # a shared machine: say which points had company rather than hide it
        worst = ", ".join(f"{r['name']} N={r['n']} ({r['others_cores']:.1f})" for r in contended[:8])
        items.append(("contention", f"{len(contended)} of {len(rows)} points ran while other processes took ≥ {CONTENDED} core "
                                    f"(others_cores); most: {worst}{', …' if len(contended) > 8 else ''}"))
    items.append(("report written", datetime.datetime.now().astimezone().isoformat(timespec="seconds")))
    return '<dl class="meta">' + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in items) + "</dl>"


def _summary(rows: list[dict]) -> list[str]:
    ok = [r for r in rows if r.get("status") == "ok"]
    field = time_field(rows)
    what = "forward+backward" if field == "forward_backward_ms" else "forward (forward-only run)"
    names = sorted({r["name"] for r in rows})
    out = [
        "<h2>Summary</h2>",
        f"<p>{len(rows)} points over {len(names)} mechanisms ({escape(', '.join(names))}); {len(ok)} ok, "
        f"{len(rows) - len(ok)} failed. Times are medians after warm-up; each point ran in a fresh process.</p>",
    ]
    best = fastest(rows)
    if not best:
        return out + ['<p class="note">No point finished; nothing to compare.</p>']
    several = len({b["group"] for b in best}) > 1
    head = ["N", f"fastest ({what})", "time (ms)", "speed-up over full"] + (["compared with"] if several else [])
    body = [
        [str(b["n"]), b["name"], fmt(b["time_ms"]), fmt(b["speedup"], "x")] + ([b["group"] or "–"] if several else []) for b in best
    ]
    return out + [_table(head, body)]


def _curves(rows: list[dict], out_dir: Path) -> list[str]:
    out = ["<h2>Time and memory against N</h2>"]
    named = series(rows)
    if not named:
        return out + ['<p class="note">No point finished; no curves.</p>']
    groups = curve_groups(rows)
    for stale in out_dir.glob("time_memory*.png"):  # an earlier report's split may differ from this one's
        stale.unlink()
    for group, (names, reference) in groups.items():
        stem = "time_memory" if len(groups) == 1 else f"time_memory_{group}"
        png = replace_atomically(out_dir / f"{stem}.png", lambda p: plot_time_memory(rows, p, names=names, reference=reference))
        if len(groups) > 1:
            out.append(f"<h3>{escape(CURVE_GROUP_TITLES.get(group, group))}</h3>")
        out.append(_img(png, f"time and peak memory against N, log-log: {', '.join(names)}"))
    out.append(
        '<p class="note">Log-log axes; dashed lines are causal runs'
        + ("; thin black lines (×) are full attention, repeated in each figure as the yardstick" if len(groups) > 1 else "")
        + ". A slope is the least-squares exponent p of value ≈ c·Nᵖ over all measured N (1 linear, 2 quadratic); "
        "fixed costs flatten it at small N.</p>"
    )
    head = ["series", "N measured", "fwd slope", "fwd+bwd slope", "peak memory slope"]
    body = []
    for name, rs in named.items():
        ns = [r["n"] for r in rs]
        cells = [fitted_slope([(r["n"], r.get(f)) for r in rs]) for f, _ in PANELS]
        body.append([name, f"{min(ns)}–{max(ns)}" if len(ns) > 1 else str(ns[0])] + [_slope_text(s) for s in cells])
    return out + [_table(head, body)]


def _efficiency(rows: list[dict]) -> list[str]:
    field = time_field(rows)
    measured = sorted({r["n"] for r in rows if r.get("status") == "ok"})
    ns = list(LRA_NS)
    out = ["<h2>Efficiency relative to full attention (LRA Table 2 layout)</h2>"]
    if measured and not set(ns) & set(measured):
        ns = measured
        out.append('<p class="note">No point at LRA’s N = 1K–4K; showing the measured N instead.</p>')
    eff = lra_efficiency(rows, ns=ns, field=field)
    what = "forward+backward" if field == "forward_backward_ms" else "forward"
    out.append(
        f'<p class="note">Speed: full attention\'s {what} time over this one (&gt; 1 is faster); memory: this peak over full\'s '
        "(&lt; 1 is smaller); steps/s: 1000 / time in ms, one step being one attention call. Each mechanism is compared with "
        "full attention at the same device, dtype, batch, heads, head dim, causal setting and thread count; "
        "“–”: not measured, failed, or no full point to compare with.</p>"
    )
    labels = [_n_label(n) for n in ns]
    k = len(ns)
    html = ["<table>", "<tr><th rowspan=2>mechanism</th>"
            f"<th colspan={k}>speed (× full)</th><th colspan={k}>memory (× full)</th><th colspan={k}>steps/s</th></tr>",
            "<tr>" + "".join(f"<th>{escape(lab)}</th>" for lab in labels * 3) + "</tr>"]
    for e in eff["rows"]:
        cells = [fmt(e["speed"][n], "x") for n in ns] + [fmt(e["memory"][n], "x") for n in ns] + [fmt(e["steps_per_s"][n]) for n in ns]
        cls = ' class="full"' if e["mechanism"] == "full" else ""
        html.append(f"<tr{cls}><td>{escape(e['name'])}</td>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>")
    html.append("</table>")
    return out + ["\n".join(html)]


def _errors(rows: list[dict]) -> list[str]:
    out = ["<h2>Approximation error</h2>"]
    table = error_table(rows)
    if not table:
        return out + ['<p class="note">No error was measured.</p>']
    out.append(
        '<p class="note">Relative error of the output against exact softmax attention on the same q, k, v, ‖y − y_exact‖ / '
        "‖y_exact‖: “random” inputs, and “peaked” ones whose attention rows concentrate on a few keys. On random inputs exact "
        "attention averages nearly all N values, so its output is small, and a mechanism that sees a few keys per query "
        "(a window, global tokens) scores well above 1 there. On peaked inputs a query that misses its few keys outputs an "
        "unrelated value, an error near √2 ≈ 1.41, so values below that show a mechanism finding the keys that matter.</p>"
    )
    ns = sorted({e["n"] for e in table})
    by_name: dict[str, dict[int, dict]] = {}
    for e in table:
        by_name.setdefault(e["name"], {})[e["n"]] = e
    html = ["<table>", "<tr><th rowspan=2>series</th>" + "".join(f"<th colspan=2>N = {n}</th>" for n in ns) + "</tr>",
            "<tr>" + "<th>random</th><th>peaked</th>" * len(ns) + "</tr>"]
    for name, per_n in by_name.items():
        cells = []
        for n in ns:
            e = per_n.get(n, {})
            cells += [fmt(e.get("error_random"), "err"), fmt(e.get("error_peaked"), "err")]
        html.append(f"<tr><td>{escape(name)}</td>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>")
    html.append("</table>")
    return out + ["\n".join(html)]


def _peers(rows: list[dict]) -> list[str]:
    out = ["<h2>Against the public packages</h2>"]
    pairs = peer_table(rows)
    if not pairs:
        return out + ['<p class="note">No package was measured: <code>attnzoo bench --peers</code> adds the installed ones.</p>']
    out.append(
        "<p class=\"note\">Each package's layer x [B, N, C] → [B, N, C] beside attnzoo's, with the settings matched "
        "(<code>attnzoo.bench.peers</code>), projections included, every point in a fresh process. Speed-up: the package's "
        "time over ours (&gt; 1: ours is faster); memory: our peak over the package's (&lt; 1: ours is smaller).</p>"
    )
    head = ["package", "ours", "N", "ours fwd+bwd (ms)", "package fwd+bwd (ms)", "speed-up fwd", "speed-up fwd+bwd",
            "ours peak (MiB)", "package peak (MiB)", "memory (× package)"]
    body = []
    for pair in pairs:
        mine, theirs = pair["ours"], pair["peer"]
        body.append([
            pair["package"] + (" causal" if pair["causal"] else ""), pair["mechanism"] or "–", str(pair["n"]),
            value_or_status(mine, "forward_backward_ms"), value_or_status(theirs, "forward_backward_ms"),
            fmt(pair["speedup_forward"], "x"), fmt(pair["speedup_forward_backward"], "x"),
            value_or_status(mine, "peak_bytes", "mib"), value_or_status(theirs, "peak_bytes", "mib"), fmt(pair["memory"], "x"),
        ])
    return out + [_table(head, body)]


def _failures(rows: list[dict]) -> list[str]:
    failed = sorted((r for r in rows if r.get("status") != "ok"), key=lambda r: (r["name"], r.get("label") or "", r["n"]))
    out = ["<h2>Failed points</h2>"]
    if not failed:
        return out + ['<p class="note">None: every point finished.</p>']
    html = ["<table>", "<tr><th>mechanism</th><th>N</th><th>status</th><th>message</th></tr>"]
    for r in failed:
        cells = [display_name(r), str(r["n"]), str(r.get("status")), str(r.get("message") or "")]
        html.append(
            "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in cells[:3]) + f'<td class="msg">{escape(cells[3])}</td></tr>'
        )
    html.append("</table>")
    return out + ["\n".join(html)]


def _gallery(rows: list[dict], names: list[str], n: int, out_dir: Path) -> list[str]:
    out = ["<h2>Which (query, key) pairs each mechanism computes</h2>"]
    if not names:
        return out + ['<p class="note">No gallery requested.</p>']
    panels, skipped = gallery_panels(names, n, rows)
    if panels:
        from attnzoo.viz.pattern import draw_patterns

        png = replace_atomically(out_dir / "patterns.png", lambda p: draw_patterns(panels, p))
        out.append(
            f'<p class="note">N = {n}; row i is a query, column j a key; coloured cells are computed. A mechanism benchmarked '
            "at its defaults is drawn with small windows, blocks or buckets (named in its title) so that its structure shows "
            f"at N = {n}; low-rank, kernel and mixing mechanisms involve every pair.</p>"
        )
        out.append(_img(png, "attention patterns: " + ", ".join(title for title, _ in panels)))
    if skipped:
        items = "".join(f"<li>{escape(name)}: {escape(why)}</li>" for name, why in skipped)
        out.append(f'<p class="note">Not drawn at N = {n}:</p><ul class="note">{items}</ul>')
    return out


def _weights_gallery(rows: list[dict], names: list[str], n: int, out_dir: Path) -> list[str]:
    from attnzoo.viz.weights import WEIGHTS_HEAD_DIM, draw_weights, exact_map, weight_panels

    layers, skipped = gallery_layers(names, n, rows, head_dim=WEIGHTS_HEAD_DIM)
    panels, no_map, failed = weight_panels(layers, n, WEIGHTS_HEAD_DIM)
    if not panels:
        return []
    causal = all(getattr(getattr(layer, "core", layer), "causal", False) for _, layer in layers)  # the reference drawn
    png = replace_atomically(out_dir / "weights.png", lambda p: draw_weights(panels, exact_map(n, WEIGHTS_HEAD_DIM, causal), p))
    out = ["<h2>The weights each mechanism gives on one probe input</h2>"]
    out.append(
        f'<p class="note">N = {n}, head dim {WEIGHTS_HEAD_DIM}, freshly built layers (seed 0, untrained). The probe is q = k = sinusoidal '
        "positions, so exact softmax attention is a band around the diagonal (the first panel); each panel is the N×N map a "
        "mechanism applies to the values there, with its row error ½‖w − exact‖₁ (0: the same weights, 1: disjoint). Learned "
        "parts (Linformer's projections, Synthesizer's and gMLP's maps) show their initialisation."
        + (f" No N×N map: {escape(', '.join(no_map))}." if no_map else "") + "</p>"
    )
    if failed or skipped:
        items = "".join(f"<li>{escape(why)}</li>" for why in failed + [f"{name}: {why}" for name, why in skipped])
        out.append(f'<p class="note">Not drawn:</p><ul class="note">{items}</ul>')
    out.append(_img(png, "attention weights: " + ", ".join(label for label, _, _ in panels)))
    return out


def _bubbles(rows: list[dict], scores: dict[str, float], out_dir: Path) -> list[str]:
    out = ["<h2>Score, speed and memory (LRA Figure 3 layout)</h2>"]
    field = time_field(rows)
    eff = lra_efficiency(rows, ns=sorted({r["n"] for r in rows}), field=field)
    from attnzoo.viz.bubble import bubble_points, plot_bubbles

    for n in sorted(eff["ns"], reverse=True):  # the longest N where some scored mechanism has a speed
        points = bubble_points(eff, scores, n)
        if points:
            break
    else:
        return out + ['<p class="note">No mechanism with an LRA score has a speed relative to full attention; no chart.</p>']
    chart_title = f"score vs speed at N = {n}; bubble area = peak memory"
    png = replace_atomically(out_dir / "bubbles.png", lambda p: plot_bubbles(points, p, title=chart_title))
    out.append(
        f'<p class="note">x: speed relative to full attention at N = {n} (this benchmark\'s attention timings, log scale); '
        "y: the given score; bubble area: peak memory relative to full attention. Full attention is red.</p>"
    )
    out.append(_img(png, f"score vs speed and memory at N = {n}"))
    table = [[p["name"], f"{p['score']:.2f}", fmt(p["speed"], "x"), fmt(p["memory"], "x")] for p in points]
    return out + [_table(["mechanism", "score", "speed (× full)", "memory (× full)"], table)]


# ------------------------------------------------------------------------------------------ figures


# More series than this in one figure and the curves are split into a figure per family.
CURVES_PER_FIGURE = 12
CURVE_GROUP_TITLES = {
    "exact": "full attention", "sparse": "sparse patterns", "clustered": "clustered and data-dependent sparsity",
    "lowrank": "low rank", "kernel": "kernels (linear attention)", "mixing": "mixers and synthesizers (whole layers)",
    "packages": "the public packages beside our layers",
}


def curve_groups(rows: list[dict]) -> dict[str, tuple[list[str], list[str]]]:
    """Figure name -> (series drawn, full-attention series drawn beside them as the yardstick).

    Up to ``CURVES_PER_FIGURE`` series share one figure ("all"); more are split by family, with the
    packages and the layers labelled against them ("... (vs package)") together in "packages".
    """
    named = series(rows)
    if len(named) <= CURVES_PER_FIGURE:
        return {"all": (list(named), [])}
    def group(rs: list[dict]) -> str:
        return "packages" if rs[0].get("family") == "peer" or "(vs " in (rs[0].get("label") or "") else rs[0].get("family") or "other"
    full = [name for name, rs in named.items() if rs[0]["name"] == "full" and not rs[0].get("label")]
    order = ("exact", "sparse", "clustered", "lowrank", "kernel", "mixing", "packages")
    groups: dict[str, list[str]] = {}
    for name, rs in named.items():
        groups.setdefault(group(rs), []).append(name)
    out = {}
    for g in sorted(groups, key=lambda g: (order.index(g) if g in order else len(order), g)):
        mine = groups[g]
        kinds = {(bool(named[n][0].get("layer")), bool(named[n][0].get("causal"))) for n in mine}
        reference = [f for f in full if f not in mine and (bool(named[f][0].get("layer")), bool(named[f][0].get("causal"))) in kinds]
        out[g] = (mine, reference)
    return out


def plot_time_memory(rows: list[dict], path: str | Path, *, names: list[str] | None = None, reference: list[str] = ()) -> Path:
    """Log-log curves of forward, forward+backward time and peak memory against N, side by side, one
    line per series (``names``, default all), with ``reference`` series drawn thin and black (× markers); one legend
    below, each entry with the series' fitted slopes, e.g. "local (slopes 1.02 / 1.01 / 0.98)".
    Panels without data are left out."""
    plt = pyplot()
    named = series(rows)
    unknown = [n for n in [*(names or []), *reference] if n not in named]
    if unknown:
        raise ValueError(f"plot_time_memory: no ok rows for series {unknown}; series: {', '.join(named)}")
    drawn = {n: named[n] for n in [*(names if names is not None else named), *reference]}
    panels = [(f, label) for f, label in PANELS if any(r.get(f) for rs in drawn.values() for r in rs)]
    if not panels:
        raise ValueError("plot_time_memory: no ok point has a time or a peak memory")
    from matplotlib.ticker import LogFormatter, NullLocator

    ns = sorted({r["n"] for rs in drawn.values() for r in rs})
    bases = sorted({name.replace(" causal", "") for name in drawn if name not in reference})
    cmap = plt.get_cmap("tab10" if len(bases) <= 10 else "tab20")
    markers = "os^Dv<>p"
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.4), squeeze=False)
    handles = []
    for name, rs in drawn.items():
        style = "--" if rs[0].get("causal") else "-"
        if name in reference:
            look = dict(color="black", alpha=0.6, linewidth=1.0, marker="x", markersize=4)
        else:
            i = bases.index(name.replace(" causal", ""))
            look = dict(color=cmap(i % cmap.N), marker=markers[i // cmap.N % len(markers)], markersize=4)
        slopes = " / ".join(_slope_text(fitted_slope([(r["n"], r.get(f)) for r in rs])) for f, _ in panels)
        for ax, (field, _) in zip(axes[0], panels):
            scale = 1 / 2**20 if field == "peak_bytes" else 1.0
            pts = [(r["n"], r[field] * scale) for r in rs if r.get(field)]
            line = ax.plot([n for n, _ in pts], [v for _, v in pts], style, label=f"{name} (slopes {slopes})", **look)
        handles.append(line[0])
    for ax, (_, label) in zip(axes[0], panels):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(ns, [_n_label(n) for n in ns])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_formatter(LogFormatter())  # 40, not 4×10¹
        ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
        ax.set_xlabel("sequence length N")
        ax.set_title(label, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    ncol = 3 if len(handles) > 8 else 2
    title = "series (slopes: " + " / ".join(label.split(" (")[0] for _, label in panels) + ")"
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol, fontsize=8, title=title,
               title_fontsize=8, frameon=False)
    return save(fig, path, dpi=100, bbox_inches="tight")  # the legend sits below the axes


# Options that make a pattern's structure visible at the gallery's N = 64 (the benchmark's own
# options, a 256-wide window or 64-token buckets, cover every pair there). Used for a name whose
# benchmarked rows used its defaults; the caption names them.
PICTURE_OPTIONS = {
    "local": {"window": 4},
    "strided": {"stride": 8, "window": 2},
    "global": {"global_idx": (0, 32), "window": 2},
    "random": {"num_blocks": 1, "block_size": 8},
    "sparse_transformer": {"stride": 8},
    "longformer": {"window": 4, "dilation": (1, 2), "global_idx": (0,)},
    "bigbird": {"block_size": 8, "window_blocks": 3, "global_blocks": 1, "random_blocks": 1},
    "heads": {"patterns": ("local:window=4", "strided:stride=8")},
    "reformer": {"bucket_size": 8, "n_hashes": 2},
    "routing": {"clusters": 8},
    "sinkhorn": {"block": 8},
    # low rank, for the weights picture: nystrom with landmarks >= N is exact attention, nothing to see
    "linformer": {"k": 16},
    "nystrom": {"landmarks": 8},
}


def gallery_layers(names: list[str], n: int, rows: list[dict] = (), *, head_dim: int = 8) -> tuple[list[tuple[str, object]], list[tuple[str, str]]]:
    """(label, layer) for each name that builds at N = ``n``, and the (name, reason) of those that do not.

    Each name is built as ``attnzoo show`` builds it (one head of ``head_dim``, max_len = n), with
    the options its benchmarked rows used when they all used the same (those the sweep scaled with N
    left out), causal when they all were causal; a name that needs more heads (a pattern per head)
    is retried with the heads its rows used, then with 4. Random parameters are drawn with seed 0.
    """
    import torch

    from attnzoo.registry import build

    layers, skipped = [], []
    for name in names:
        mine = [r for r in rows if r.get("name") == name]
        causal = bool(mine) and all(r.get("causal") for r in mine)
        fixed = [{k: v for k, v in (r.get("options") or {}).items() if k not in (r.get("scaled_options") or ())} for r in mine]
        option_sets = {json.dumps(o, sort_keys=True) for o in fixed}  # options scaled with N are the gallery's to pick
        options = json.loads(option_sets.pop()) if len(option_sets) == 1 else {}
        options = options or dict(PICTURE_OPTIONS.get(name, {}))
        why = ""
        for heads in dict.fromkeys([1, *sorted({r["heads"] for r in mine if r.get("heads")}), 4]):
            try:
                with torch.random.fork_rng():
                    torch.manual_seed(0)
                    layer = build(name, dim=head_dim * heads, heads=heads, causal=causal, max_len=n, **options)
                getattr(layer, "core", layer).computed_pairs(n)  # a pattern that cannot be drawn at n fails here
            except Exception as err:  # noqa: BLE001 - any failure becomes a note in the report, not a lost report
                why = f"{type(err).__name__}: {err}"
                continue
            label = name + (" causal" if causal else "") + "".join(f" {k}={v}" for k, v in sorted(options.items()))
            layers.append((textwrap.fill(label, 40), layer))  # a long option list wraps instead of running into the next panel
            break
        else:
            skipped.append((name, why))
    return layers, skipped


def gallery_panels(names: list[str], n: int, rows: list[dict] = ()) -> tuple[list[tuple[str, object]], list[tuple[str, str]]]:
    """Pattern panels for ``draw_patterns`` and the (name, reason) of names that could not be drawn
    (``gallery_layers``); heads with different patterns get a panel each."""
    from attnzoo.viz.pattern import distinct_heads

    layers, skipped = gallery_layers(names, n, rows)
    panels = []
    for label, layer in layers:
        pairs = getattr(layer, "core", layer).computed_pairs(n)  # [H or 1, N, N]
        panels += [(title, pairs[h]) for title, h in distinct_heads(label, pairs)]
    return panels, skipped


# ------------------------------------------------------------------------------------------- helpers


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<p><img src="data:image/png;base64,{data}" alt="{escape(alt)}"></p>'


def _table(head: list[str], body: list[list[str]]) -> str:
    lines = ["<table>", "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"]
    lines += ["<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in body]
    return "\n".join(lines + ["</table>"])


def _slope_text(slope: float | None) -> str:
    return "–" if slope is None else f"{slope:.2f}"


def _n_label(n: int) -> str:
    return f"{n // 1024}K" if n % 1024 == 0 else str(n)


def _plain(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
