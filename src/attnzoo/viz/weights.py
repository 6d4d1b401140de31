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

from attnzoo.viz.pattern import distinct_heads, draw_maps

WEIGHTS_HEAD_DIM = 64  # wide enough for the probe's band to be a few positions thin
MAX_N = 1024  # the maps are H·N² float64 numbers, and v = I is N² more per head


def probe(n: int, d: int, device: torch.device | str | None = None) -> Tensor:
    """[N, D] float64: sin and cos of position i at D/2 frequencies spaced geometrically from 1 to π/N rad."""
    if n < 1 or d < 2:
        raise ValueError(f"probe: need n >= 1 and d >= 2 (a sine and a cosine per frequency), got n={n}, d={d}")
    half = d // 2
    frequency = (math.pi / max(n, 2)) ** (torch.arange(half, dtype=torch.float64, device=device) / max(half - 1, 1))
    angle = torch.arange(n, dtype=torch.float64, device=device)[:, None] * frequency
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
    if n > MAX_N:
        raise ValueError(f"attention maps are pictures of H·N² weights in float64; use N <= {MAX_N}, got {n}")
    layer = copy.deepcopy(layer).to(torch.float64).eval()
    device = next(layer.parameters(), torch.empty(0)).device
    core = getattr(layer, "core", None)
    if core is not None:
        d = layer.dim // layer.heads
        q = probe(n, d, device).expand(1, layer.heads, n, d)
        weights = core.implied_weights(q, q)
    elif hasattr(layer, "implied_weights"):
        weights = layer.implied_weights(probe(n, layer.dim, device)[None])
    else:
        return None
    return weights[0].cpu()


def row_error(weights: Tensor, exact: Tensor) -> Tensor:
    """[H]: ½ Σ_j |w_ij − a_ij| averaged over the queries i, per head; weights [H, N, N], exact [N, N]."""
    return 0.5 * (weights - exact).abs().sum(-1).mean(-1)


def weight_panels(layers: list[tuple[str, nn.Module]], n: int, head_dim: int) -> tuple[list[tuple[str, Tensor, float]], list[str], list[str]]:
    """Each labelled layer on the probe: (label, [N, N] map, row error) panels, one per distinct head
    map; the labels of the layers with no map; and "label: error" for those whose map failed (a
    picture is not worth a lost report). Attention layers have heads of ``head_dim``; every error is
    against ``exact_map(n, head_dim)`` with the layer's own causality."""
    panels, no_map, failed = [], [], []
    for label, layer in layers:
        try:
            weights = attention_map(layer, n)
        except Exception as err:  # noqa: BLE001 - one mechanism's failure becomes a note
            failed.append(f"{label}: {type(err).__name__}: {err}")
            continue
        if weights is None:
            no_map.append(label)
            continue
        causal = bool(getattr(getattr(layer, "core", layer), "causal", False))
        errors = row_error(weights, exact_map(n, head_dim, causal))
        panels += [(title, weights[h], errors[h].item()) for title, h in distinct_heads(label, weights)]
    return panels, no_map, failed


def draw_weights(panels: list[tuple[str, Tensor, float]], exact: Tensor, path: str | Path, *, columns: int = 4) -> Path:
    """Save the exact map and each (label, [N, N] map, row error) panel as a PNG on one diverging scale:
    0 white, ± the exact map's typical row maximum full colour (blue below zero: low-rank maps can be
    negative); larger values saturate. The median row maximum, not the largest: under causal masking
    the first query's whole weight is on itself, which would wash out every other row."""
    vmax = exact.amax(dim=-1).median().item()
    drawn = [(f"exact softmax on the probe\ncolour scale ±{vmax:.2g}", exact)]
    drawn += [(f"{label}\nrow error {error:.3f}", weights) for label, weights, error in panels]
    return draw_maps(drawn, path, columns=columns, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
