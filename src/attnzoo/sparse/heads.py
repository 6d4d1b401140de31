"""Heterogeneous heads: head h uses the h-th fixed pattern (cycled), e.g. local heads beside strided heads.

As in Child et al. 2019's multi-head factorisation (arxiv.org/abs/1904.10509) and Longformer's
per-head dilation. Heads sharing a pattern run together, each group on its own pattern's fastest
path (a stride head in residue order, as ``strided`` alone), so heads cost the sum of their groups.
b batch, h heads, n positions, d head dim.
"""

from __future__ import annotations

import ast
import functools
import re
from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from attnzoo.core.checks import as_int_tuple
from attnzoo.core.info import MechanismInfo
from attnzoo.core.masks import Pattern, per_head
from attnzoo.sparse.attention import Backend, check_slopes, sparse_attention
from attnzoo.sparse.bigbird import BigBird, BigBirdConfig
from attnzoo.sparse.core import KernelOptions, PatternCore
from attnzoo.sparse.global_tokens import Global, GlobalConfig
from attnzoo.sparse.local import Local, LocalConfig
from attnzoo.sparse.longformer import Longformer, LongformerConfig
from attnzoo.sparse.random import Random, RandomConfig
from attnzoo.sparse.sparse_transformer import SparseTransformer, SparseTransformerConfig
from attnzoo.sparse.strided import Strided, StridedConfig

# The fixed patterns a head may use (a pattern family's own table, not the registry).
HEAD_PATTERNS = {
    "local": (LocalConfig, Local),
    "strided": (StridedConfig, Strided),
    "global": (GlobalConfig, Global),
    "random": (RandomConfig, Random),
    "sparse_transformer": (SparseTransformerConfig, SparseTransformer),
    "longformer": (LongformerConfig, Longformer),
    "bigbird": (BigBirdConfig, BigBird),
}


@dataclass
class HeadsConfig(KernelOptions):
    # One spec per head (cycled): "local:window=16" or {"name": "local", "window": 16}.
    patterns: tuple = ("local:window=16", "strided:stride=8")


def parse_head_spec(spec) -> tuple[str, dict]:
    """'local:window=16,...' or {'name': 'local', 'window': 16} -> ('local', {'window': 16})."""
    if isinstance(spec, dict):
        opts = dict(spec)
        name = opts.pop("name", None)
    elif isinstance(spec, str):
        name, _, rest = spec.partition(":")
        opts = {}
        for item in filter(None, re.split(r",(?=\s*\w+\s*=)", rest)):  # commas before key=, not inside (1,2)
            key, eq, value = item.partition("=")
            if not eq:
                raise ValueError(f"heads: option {item!r} in {spec!r} must look like key=value")
            opts[key.strip()] = _literal(value.strip())
    else:
        raise ValueError(f"heads: a head pattern is 'name:key=value,...' or a dict with 'name', got {spec!r}")
    if name not in HEAD_PATTERNS:
        raise ValueError(f"heads: unknown head pattern {name!r}; choose from {sorted(HEAD_PATTERNS)}")
    known = {f.name for f in fields(HEAD_PATTERNS[name][0])} - {f.name for f in fields(KernelOptions)}
    unknown = set(opts) - known
    if unknown:
        raise ValueError(f"heads: {name} has no option(s) {sorted(unknown)}; its options are {sorted(known)}")
    return name, opts


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


class Heads(PatternCore):
    info = MechanismInfo(
        paper="Child et al. 2019, arxiv.org/abs/1904.10509 (per-head factorisation)",
        complexity="that of the costliest head pattern",
        causal=True,
        mask=True,
        distance=True,
    )

    def __init__(self, config: HeadsConfig, *, heads: int, head_dim: int, causal: bool, max_len: int | None):
        super().__init__(config, heads=heads, head_dim=head_dim, causal=causal, max_len=max_len)
        specs = (config.patterns,) if isinstance(config.patterns, (str, dict)) else tuple(config.patterns)
        if not specs:
            raise ValueError("heads: give at least one head pattern, e.g. patterns=('local:window=16', 'strided:stride=8')")
        if len(specs) > heads:
            raise ValueError(f"heads: {len(specs)} patterns for {heads} heads; give at most one per head")
        cores = []
        for spec in specs:
            name, opts = parse_head_spec(spec)
            if name == "global" and opts.get("num_tokens"):
                raise ValueError("heads: learned global tokens change the sequence length; use in-sequence global_idx per head")
            if name == "longformer" and len(as_int_tuple(opts.get("dilation", (1,)), "dilation", "heads")) > 1:
                raise ValueError("heads: one dilation per longformer head spec, e.g. ('longformer:dilation=1', 'longformer:dilation=2')")
            cfg_cls, core_cls = HEAD_PATTERNS[name]
            cores.append(core_cls(cfg_cls(**opts), heads=1, head_dim=head_dim, causal=causal, max_len=max_len))
        self.cores = cores  # plain list: they hold no parameters

    def pattern(self, n, heads, device):
        return heads_pattern(tuple(self.cores[h % len(self.cores)].pattern(n, 1, device) for h in range(heads)))

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, position: nn.Module | None = None) -> Tensor:
        n, g = q.shape[2], len(self.cores)
        patterns = [core.pattern(n, 1, q.device) for core in self.cores]
        parts = [core.parts(n, q.device) for core in self.cores]
        return heads_attention(
            q, k, v,
            patterns=tuple(patterns[h % g] for h in range(q.shape[1])),
            parts=tuple(parts[h % g] for h in range(q.shape[1])),
            **self.kernel_options(mask, position),
        )


@functools.lru_cache(maxsize=64, typed=True)
def heads_pattern(patterns: tuple[Pattern, ...]) -> Pattern:
    return per_head(patterns, "heads(" + ", ".join(p.name for p in patterns) + ")")


def heads_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    patterns: tuple[Pattern, ...],
    parts: tuple | None = None,
    mask: Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    backend: Backend = "auto",
    block: int = 64,
    alibi_slopes: Tensor | None = None,
) -> Tensor:
    """q, k, v: [B, H, N, D]; patterns: H Patterns, one per head; parts: None or, per head, that
    pattern's decomposition at this N (sparse.union.Part tuple) or None; alibi_slopes: [H] or None.
    Returns [B, H, N, D].

    Equivalent to: for each head h, sparse_attention(q[:, h], k[:, h], v[:, h], patterns[h]).
    """
    patterns = tuple(patterns)
    if len(patterns) != q.shape[1]:
        raise ValueError(f"heads_attention: {len(patterns)} patterns for {q.shape[1]} heads; give one pattern per head")
    if parts is not None and len(parts) != len(patterns):
        raise ValueError(f"heads_attention: {len(parts)} parts for {len(patterns)} patterns; give one entry (or None) per head")
    check_slopes(alibi_slopes, q.shape[1], "heads_attention")  # before each group takes its slice
    kw = dict(mask=mask, causal=causal, scale=scale, dropout_p=dropout_p, backend=backend, block=block)
    groups: dict[int, list[int]] = {}  # heads sharing one pattern object run as one call
    for h, p in enumerate(patterns):
        groups.setdefault(id(p), []).append(h)
    # The dense reference and per-head patterns nested inside run as one masked call, as written.
    if backend == "dense" or any(p.heads is not None for p in patterns):
        return sparse_attention(q, k, v, heads_pattern(patterns), alibi_slopes=alibi_slopes, **kw)
    if len(groups) == 1:
        return sparse_attention(q, k, v, patterns[0], parts=None if parts is None else parts[0], alibi_slopes=alibi_slopes, **kw)
    outs, order = [], []
    for idx in groups.values():
        pick = torch.tensor(idx, device=q.device)
        qq, kk, vv = (t.index_select(1, pick) for t in (q, k, v))
        slopes = None if alibi_slopes is None else alibi_slopes[idx]  # each group keeps its heads' slopes
        outs.append(sparse_attention(qq, kk, vv, patterns[idx[0]], parts=None if parts is None else parts[idx[0]], alibi_slopes=slopes, **kw))
        order += idx
    out = torch.cat(outs, dim=1)
    return out if order == sorted(order) else out.index_select(1, torch.argsort(torch.tensor(order, device=q.device)))
