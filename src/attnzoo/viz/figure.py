"""Matplotlib without a screen, and one way to save a figure."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: str | Path, *, dpi: int = 120, bbox_inches: str | None = None) -> Path:
    """Lay out, write the PNG (creating folders), close the figure; returns the path.

    ``bbox_inches="tight"`` grows the image to take in artists outside the axes (a legend below them)."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches=bbox_inches)
    fig.clf()
    pyplot().close(fig)
    return path
