"""Scaling plots: time and peak memory against N, one line per mechanism (log-log)."""

from __future__ import annotations

from pathlib import Path

from attnzoo.bench.harness import display_name
from attnzoo.viz.figure import pyplot, save


def plot_scaling(rows: list[dict], path: str | Path, *, title: str = "") -> Path:
    plt = pyplot()

    panels = [("forward_ms", "forward (ms)"), ("forward_backward_ms", "forward+backward (ms)"), ("peak_rss_bytes", "peak memory (MiB)")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    by_name: dict[str, list[dict]] = {}
    for row in rows:
        if "error" not in row:
            by_name.setdefault(display_name(row["point"]), []).append(row)
    # one colour per mechanism, its causal run dashed in the same colour
    bases = sorted({name.removesuffix(" causal") for name in by_name})
    colors = {base: plt.get_cmap("tab10" if len(bases) <= 10 else "tab20")(i) for i, base in enumerate(bases)}
    for ax, (field, label) in zip(axes, panels):
        for name, rs in sorted(by_name.items()):
            rs = sorted((r for r in rs if r.get(field)), key=lambda r: r["point"]["n"])
            if not rs:
                continue
            scale = 1 / 2**20 if field == "peak_rss_bytes" else 1.0
            style = "--" if rs[0]["point"].get("causal") else "-"
            ax.plot(
                [r["point"]["n"] for r in rs], [r[field] * scale for r in rs], style, marker="o", label=name,
                color=colors[name.removesuffix(" causal")],
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length N")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return save(fig, path, dpi=110)
