"""Score against speed, bubble area for memory: Long Range Arena's Figure 3 (Tay et al., 2021, arxiv.org/abs/2011.04006).

x: speed relative to full attention (log scale, > 1 is faster); y: an accuracy figure (e.g. the
LRA average); bubble area: peak memory relative to full attention.
"""

from __future__ import annotations

import math
from pathlib import Path

from attnzoo.viz.figure import pyplot, save

FULL_AREA = 900.0  # points² of a bubble with full attention's memory
MAX_AREA = 4000.0  # the largest bubble, when some mechanism needs more memory than full
FULL_COLOR = "#d62728"


def bubble_points(efficiency: dict, scores: dict[str, float], n: int = 4096) -> list[dict]:
    """Join ``lra_efficiency(...)`` at one N with scores per name: [{"name", "speed", "score", "memory", "mechanism"}].

    A score is looked up by series name, then (for non-causal series) by mechanism name, so scores
    keyed by registry name match series such as "local (cuda)". Series without a score or without a
    speed at ``n`` are skipped; "memory" may be None (drawn as a cross). [] when ``scores`` is empty.
    """
    if n not in efficiency["ns"]:
        raise ValueError(f"bubble_points: N={n} is not in the efficiency table's {efficiency['ns']}; compute it with ns=[..., {n}]")
    points = []
    for row in efficiency["rows"]:
        score = scores.get(row["name"])
        if score is None and not row.get("causal"):
            score = scores.get(row.get("mechanism"))
        speed = row["speed"].get(n)
        if score is None or speed is None:
            continue
        memory = row["memory"].get(n)
        points.append({"name": row["name"], "speed": speed, "score": float(score), "memory": memory, "mechanism": row.get("mechanism")})
    return points


def plot_bubbles(points: list[dict], path: str | Path, *, title: str = "") -> Path:
    """Draw the bubble chart to a PNG; full attention (speed 1) in red with a dashed line through it."""
    if not points:
        raise ValueError("plot_bubbles: no points to draw (no mechanism has both a score and a speed)")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 6))
    mems = [p["memory"] for p in points if p.get("memory")]
    per_unit = min(FULL_AREA, MAX_AREA / max(mems)) if mems else FULL_AREA  # area per unit of relative memory
    # colours by name, red kept for full attention
    tab10, tab20 = plt.get_cmap("tab10").colors, plt.get_cmap("tab20").colors
    palette = [c for i, c in enumerate(tab10) if i != 3] + [c for i, c in enumerate(tab20) if i % 2 and i != 7]
    colors = {name: palette[i % len(palette)] for i, name in enumerate(sorted({p["name"] for p in points}))}
    for p in sorted(points, key=lambda p: -(p.get("memory") or 0)):  # big bubbles first, small on top
        is_full = p.get("mechanism", p["name"].split(" (")[0]) == "full"
        color = FULL_COLOR if is_full else colors[p["name"]]
        area = per_unit * p["memory"] if p.get("memory") else 60.0
        if p.get("memory"):
            ax.scatter(p["speed"], p["score"], s=area, color=color, alpha=0.55,
                       edgecolors="black" if is_full else "none", linewidths=1.5, zorder=2)
        else:
            ax.scatter(p["speed"], p["score"], s=area, marker="x", color=color, zorder=2)
        offset = 0.7 * math.sqrt(area / math.pi) + 3  # beside the bubble's edge, in points
        ax.annotate(p["name"], (p["speed"], p["score"]), xytext=(offset, offset), textcoords="offset points", fontsize=8,
                    fontweight="bold" if is_full else "normal", zorder=3)
    ax.axvline(1.0, color=FULL_COLOR, linestyle="--", linewidth=0.8, alpha=0.6, zorder=1)
    ax.set_xscale("log")
    from matplotlib.ticker import LogFormatter

    ax.xaxis.set_major_formatter(LogFormatter())  # 2, not 2×10⁰
    ax.xaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    speeds = [p["speed"] for p in points]
    ax.set_xlim(min(speeds + [1.0]) / 1.6, max(speeds + [1.0]) * 1.6)
    scores = [p["score"] for p in points]
    pad = max(1.0, 0.15 * (max(scores) - min(scores)))
    ax.set_ylim(min(scores) - pad, max(scores) + pad)
    ax.set_xlabel("speed relative to full attention (log scale; right is faster)")
    ax.set_ylabel("score")
    ax.grid(True, which="both", alpha=0.3)
    # size key: what a bubble of 0.25×, 0.5× and 1× full attention's memory looks like
    for rel in (0.25, 0.5, 1.0):
        ax.scatter([], [], s=per_unit * rel, color="grey", alpha=0.4, label=f"{rel:g}× full's memory")
    if any(not p.get("memory") for p in points):
        ax.scatter([], [], s=60, marker="x", color="grey", label="memory not measured")
    ax.legend(
        title="bubble area = peak memory", fontsize=8, title_fontsize=8, loc="best", labelspacing=2.0, borderpad=1.2, handletextpad=2.0
    )
    ax.set_title(title or "score vs speed; bubble area = memory (relative to full attention, red)", fontsize=10)
    return save(fig, path, dpi=110)
