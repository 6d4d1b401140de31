"""Pictures of which (query, key) pairs a mechanism computes: terminal grids and PNG figures.

i query (rows, top to bottom), j key (columns, left to right).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from attnzoo.viz.figure import pyplot, save


def terminal_grid(pairs: Tensor, *, on: str = "█", off: str = "·", max_cells: int = 64) -> str:
    """[N, N] bool -> text, one character per cell (downsampled by any() past ``max_cells``)."""
    n = pairs.shape[0]
    step = max(1, -(-n // max_cells))
    if step > 1:
        pad = (-n) % step
        padded = torch.nn.functional.pad(pairs, (0, pad, 0, pad))
        pairs = padded.unflatten(0, (-1, step)).unflatten(2, (-1, step)).any(3).any(1)
    return "\n".join("".join(on if c else off for c in row.tolist()) for row in pairs)


def distinct_heads(label: str, maps: Tensor) -> list[tuple[str, int]]:
    """(title, first head) per distinct [N, N] map of maps [H, N, N]: heads with the same map share a
    panel, titled ``label`` alone when all heads agree, else ``label, heads 0, 2``."""
    distinct: dict[bytes, list[int]] = {}
    for h in range(maps.shape[0]):
        distinct.setdefault(maps[h].numpy().tobytes(), []).append(h)
    if len(distinct) == 1:
        return [(label, 0)]
    return [(f"{label}, head{'s' if len(hs) > 1 else ''} {', '.join(map(str, hs))}", hs[0]) for hs in distinct.values()]


def draw_patterns(panels: list[tuple[str, Tensor]], path: str | Path, *, columns: int = 4) -> Path:
    """Save a grid of [N, N] bool panels (computed cells coloured) as a PNG, textbook style."""
    from matplotlib.colors import ListedColormap

    titled = [(f"{title}\n{pairs.float().mean().item():.0%} of pairs", pairs) for title, pairs in panels]
    return draw_maps(titled, path, columns=columns, cmap=ListedColormap(["#f4f4f4", "#2b6cb0"]), vmin=0, vmax=1)


def draw_maps(panels: list[tuple[str, Tensor]], path: str | Path, *, columns: int = 4, **imshow) -> Path:
    """Save (title, [N, N] map) panels as a PNG grid, query i down and key j across; ``imshow``:
    the colour map and its limits, shared by every panel."""
    plt = pyplot()
    columns = min(columns, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, values) in zip(axes.flat, panels):
        n = values.shape[0]
        ax.imshow(values.float().numpy(), interpolation="nearest", **imshow)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([0, n - 1])
        ax.set_yticks([0, n - 1])
        ax.tick_params(labelsize=7)
        ax.set_xlabel("key j", fontsize=8)
        ax.set_ylabel("query i", fontsize=8)
        ax.axis("on")
    return save(fig, path, dpi=120)
