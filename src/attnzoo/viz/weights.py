"""Attention maps: each mechanism's N×N weights on one probe input where exact attention is a band.

i query (rows, top to bottom), j key (columns), h heads, d head dim, c model width.

The probe is q = k = sinusoidal positions whose frequencies run from 1 to π/N radians per
position, so the exact softmax map ``softmax(q kᵀ / √d)`` is a smooth band around the diagonal:
the textbook local structure that the efficient mechanisms approximate, cut or blur. Each mechanism
runs on it as it runs in a layer (eval mode, float64), and its weights are read out with its
``implied_weights``: the dense reference for ``full``, the output on v = I for the rest (each is
linear in v once q and k are fixed), the learned maps of synthesizer and gMLP (which take the probe
of width c as their input x). Compressed attention convolves its values with learned matrices, so its
picture shares each compressed key's weight equally over that key's block. FNet and MLP-Mixer have no such map: FNet's real part of a 2-D DFT
mixes positions and channels together, and the Mixer's token MLP is not linear.

A map's row error ``½ Σ_j |w_ij − a_ij|`` against the exact rows a_i, averaged over queries, says how
far it is from full attention on this input: 0 for the same weights, 1 for disjoint distributions.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
from torch import Tensor, nn

from attnzoo.viz.figure import pyplot, save
WEIGHTS_HEAD_DIM = 64  # wide enough for the probe's band to be a few positions thin


def probe(n: int, d: int) -> Tensor:
    """[N, D] float64: sin and cos of position i at D/2 frequencies spaced geometrically from 1 to π/N rad."""
    if n < 1 or d < 2:
        raise ValueError(f"probe: need n >= 1 and an even d >= 2, got n={n}, d={d}")
    half = d // 2
    frequency = (math.pi / max(n, 2)) ** (torch.arange(half, dtype=torch.float64) / max(half - 1, 1))
    angle = torch.arange(n, dtype=torch.float64)[:, None] * frequency
    pe = torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(1)  # [N, 2·(D/2)]
    return torch.nn.functional.pad(pe, (0, d - 2 * half))  # an odd D gets a zero last column


def exact_map(n: int, d: int, causal: bool = False) -> Tensor:
    """[N, N]: softmax(q kᵀ / √d) on the probe (q = k), causal if asked."""
    x = probe(n, d)
    scores = x @ x.T / math.sqrt(d)
    if causal:
        scores = scores.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
    return scores.softmax(dim=-1)


@torch.no_grad()
def attention_map(layer: nn.Module, n: int) -> Tensor | None:
    """[H or 1, N, N] float64: the weights ``layer`` gives each key on the probe; None for a mixer without one.

    A copy of the layer runs in float64 and eval mode (no dropout, no noise, no centroid updates).
    An attention layer's core gets q = k = the probe in every head, with no projection; the layer's
    own position encoding is not applied."""
    layer = copy.deepcopy(layer).to(torch.float64).eval()
    core = getattr(layer, "core", None)
    if core is not None:
        d = layer.dim // layer.heads
        q = probe(n, d).expand(1, layer.heads, n, d)
        weights = core.implied_weights(q, q)
    elif hasattr(layer, "implied_weights"):
        weights = layer.implied_weights(probe(n, layer.dim)[None])
    else:
        return None
    return weights[0]


def row_error(weights: Tensor, exact: Tensor) -> Tensor:
    """[H]: ½ Σ_j |w_ij − a_ij| averaged over the queries i, per head; weights [H, N, N], exact [N, N]."""
    return 0.5 * (weights - exact).abs().sum(-1).mean(-1)


def weight_panels(layers: list[tuple[str, nn.Module]], n: int) -> tuple[list[tuple[str, Tensor, float]], list[str]]:
    """(label, [N, N] map, row error) for each labelled layer on the probe, a panel per distinct head
    map; and the labels of the layers that have no map. Each layer is built with the same head dim d
    (attention) or width (mixers); its error is against the exact map of its own d and causality."""
    panels, no_map = [], []
    for label, layer in layers:
        weights = attention_map(layer, n)
        if weights is None:
            no_map.append(label)
            continue
        core = getattr(layer, "core", layer)
        d = layer.dim // getattr(layer, "heads", 1) if hasattr(layer, "core") else layer.dim
        errors = row_error(weights, exact_map(n, d, bool(getattr(core, "causal", False))))
        distinct: dict[bytes, list[int]] = {}  # heads with the same map share a panel
        for h in range(weights.shape[0]):
            distinct.setdefault(weights[h].numpy().tobytes(), []).append(h)
        for hs in distinct.values():
            head = "" if len(distinct) == 1 else f", head{'s' if len(hs) > 1 else ''} {', '.join(map(str, hs))}"
            panels.append((label + head, weights[hs[0]], errors[hs[0]].item()))
    return panels, no_map


def draw_weights(panels: list[tuple[str, Tensor, float]], exact: Tensor, path: str | Path, *, columns: int = 4) -> Path:
    """Save the exact map and each (label, [N, N] map, row error) panel as a PNG on one diverging scale:
    0 white, ± the exact map's largest weight full colour (blue below zero: low-rank maps can be
    negative); larger values saturate."""
    plt = pyplot()
    vmax = exact.max().item()
    drawn = [(f"exact softmax on the probe\ncolour scale ±{vmax:.2g}", exact)]
    drawn += [(f"{label}\nrow error {error:.3f}", weights) for label, weights, error in panels]
    columns = min(columns, len(drawn))
    rows = -(-len(drawn) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, weights) in zip(axes.flat, drawn):
        n = weights.shape[0]
        ax.imshow(weights.float().numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([0, n - 1])
        ax.set_yticks([0, n - 1])
        ax.tick_params(labelsize=7)
        ax.set_xlabel("key j", fontsize=8)
        ax.set_ylabel("query i", fontsize=8)
        ax.axis("on")
    return save(fig, path, dpi=120)
