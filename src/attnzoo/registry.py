"""The one registry: mechanism name -> (Config dataclass, Module class). Used by the CLI, benchmarks and
registry-wide tests only; library code never looks names up here."""

from __future__ import annotations

import dataclasses

from torch import nn

from attnzoo.clustered.graph import Graph, GraphConfig
from attnzoo.clustered.reformer import Reformer, ReformerConfig
from attnzoo.clustered.routing import Routing, RoutingConfig
from attnzoo.clustered.sinkhorn import Sinkhorn, SinkhornConfig
from attnzoo.core.full import Full, FullConfig
from attnzoo.core.multihead import MultiHeadAttention
from attnzoo.kernel.efficient import Efficient, EfficientConfig
from attnzoo.kernel.linear import Linear, LinearConfig
from attnzoo.kernel.performer import Performer, PerformerConfig
from attnzoo.kernel.rfa import RFA, RFAConfig
from attnzoo.lowrank.compressed import Compressed, CompressedConfig
from attnzoo.lowrank.linformer import Linformer, LinformerConfig
from attnzoo.lowrank.nystrom import Nystrom, NystromConfig
from attnzoo.mixing.fnet import FNet, FNetConfig
from attnzoo.mixing.gmlp import GMLP, GMLPConfig
from attnzoo.mixing.mixer import Mixer, MixerConfig
from attnzoo.mixing.synthesizer import Synthesizer, SynthesizerConfig
from attnzoo.positional import ENCODINGS
from attnzoo.sparse.bigbird import BigBird, BigBirdConfig
from attnzoo.sparse.global_tokens import Global, GlobalConfig
from attnzoo.sparse.heads import Heads, HeadsConfig
from attnzoo.sparse.local import Local, LocalConfig
from attnzoo.sparse.longformer import Longformer, LongformerConfig
from attnzoo.sparse.random import Random, RandomConfig
from attnzoo.sparse.sparse_transformer import SparseTransformer, SparseTransformerConfig
from attnzoo.sparse.strided import Strided, StridedConfig

REGISTRY = {
    "full": (FullConfig, Full),
    "local": (LocalConfig, Local),
    "strided": (StridedConfig, Strided),
    "global": (GlobalConfig, Global),
    "random": (RandomConfig, Random),
    "sparse_transformer": (SparseTransformerConfig, SparseTransformer),
    "longformer": (LongformerConfig, Longformer),
    "bigbird": (BigBirdConfig, BigBird),
    "heads": (HeadsConfig, Heads),
    "reformer": (ReformerConfig, Reformer),
    "routing": (RoutingConfig, Routing),
    "sinkhorn": (SinkhornConfig, Sinkhorn),
    "graph": (GraphConfig, Graph),
    "linformer": (LinformerConfig, Linformer),
    "compressed": (CompressedConfig, Compressed),
    "nystrom": (NystromConfig, Nystrom),
    "linear": (LinearConfig, Linear),
    "efficient": (EfficientConfig, Efficient),
    "performer": (PerformerConfig, Performer),
    "rfa": (RFAConfig, RFA),
    "synthesizer": (SynthesizerConfig, Synthesizer),
    "fnet": (FNetConfig, FNet),
    "gmlp": (GMLPConfig, GMLP),
    "mixer": (MixerConfig, Mixer),
}

# Positional encodings: name -> module class (attnzoo.positional.ENCODINGS). Each class says where
# it acts (``level``): "input" (added to the embeddings once), "rotary" (rotates q and k inside the
# layer), "score" (adds to explicit q·k scores inside the layer) or "distance" (a score bias of |i − j|
# alone, which the blocked sparse kernel takes too).
POSITIONS = ENCODINGS

_FAMILY = {"core": "exact"}  # package folder -> family name, where they differ


def list_mechanisms() -> list[str]:
    return list(REGISTRY)


def _entry(name: str):
    if name not in REGISTRY:
        raise ValueError(f"unknown mechanism {name!r}; choose one of {', '.join(REGISTRY)} (attnzoo list)")
    return REGISTRY[name]


def make_config(name: str, **options):
    """The mechanism's config from options; lists become tuples. Unknown options raise ValueError."""
    config_cls, _ = _entry(name)
    known = [f.name for f in dataclasses.fields(config_cls)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"{name} has no option(s) {unknown}; its options are {known}")
    return config_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})


def build(
    name: str, *, dim: int, heads: int, causal: bool = False, max_len: int | None = None, position: str | None = None, **options
) -> nn.Module:
    """A layer ``forward(x [B, N, C], mask [B, N] = None) -> [B, N, C]`` for mechanism ``name``.

    ``position`` names an in-layer positional encoding ("rotary", "relative", "alibi"; built with
    its defaults) where the mechanism honours it (``honours``); input encodings ("sinusoidal",
    "learned", "floater", "rnn") go on the embeddings instead, e.g. Classifier(positions=...).
    """
    _, module_cls = _entry(name)
    config = make_config(name, **options)
    if not isinstance(dim, int) or not isinstance(heads, int) or heads < 1 or dim < 1 or dim % heads:
        raise ValueError(f"{name}: dim must be a positive multiple of heads, got dim={dim!r}, heads={heads!r}")
    if max_len is not None and (not isinstance(max_len, int) or max_len < 1):
        raise ValueError(f"{name}: max_len must be a positive int or None, got {max_len!r}")
    if position is not None:
        check_position(name, position, in_layer=True)
    if getattr(module_cls, "is_layer", False):  # mixers are whole layers
        return module_cls(config, dim=dim, heads=heads, causal=bool(causal), max_len=max_len)
    core = module_cls(config, heads=heads, head_dim=dim // heads, causal=bool(causal), max_len=max_len)
    encoding = None if position is None else make_position(position, dim=dim, heads=heads, max_len=max_len)
    return MultiHeadAttention(dim, heads, core, max_len=max_len, position=encoding)


def make_position(position: str, *, dim: int, heads: int, max_len: int | None = None) -> nn.Module:
    """Positional encoding ``position`` with its defaults, sized for a model of width ``dim`` and
    ``heads`` heads: input encodings act on [B, N, dim], in-layer ones on heads of dim / heads."""
    cls = _position_entry(position)
    if cls.level == "input":
        return cls(dim, max_len)
    if cls.level == "rotary":
        return cls(dim // heads)
    return cls(heads, dim // heads, max_len=max_len)


def honours(name: str, position: str) -> bool:
    """Whether mechanism ``name`` can honour positional encoding ``position``: input encodings
    work with every mechanism, rotary wherever queries meet keys (kernel methods included),
    relative only where explicit per-pair scores exist, ALiBi there and in the blocked sparse kernel."""
    return _entry(name)[1].info.honours(_position_entry(position).level)


def compatibility() -> dict[str, dict[str, bool]]:
    """{mechanism: {encoding: honours(mechanism, encoding)}} for every registered pair."""
    return {name: {p: honours(name, p) for p in POSITIONS} for name in REGISTRY}


def check_position(name: str, position: str, *, in_layer: bool = False) -> None:
    """ValueError naming the alternatives unless ``name`` honours ``position`` (and, with
    ``in_layer``, unless ``position`` is one that acts inside the attention layer)."""
    level = _position_entry(position).level
    inputs = [p for p in POSITIONS if POSITIONS[p].level == "input"]
    if in_layer and level == "input":
        raise ValueError(
            f"{position} is an input encoding, added to the embeddings once, not inside each layer: use "
            f"Classifier(positions={position!r}) or attnzoo.registry.make_position({position!r}, ...) on x; build(position=) "
            f"takes {', '.join(p for p in POSITIONS if p not in inputs)}"
        )
    if not honours(name, position):
        own = [p for p in POSITIONS if honours(name, p)]
        others = [m for m in REGISTRY if honours(m, position)]
        why = {"score": "it adds to explicit q·k scores", "distance": "it adds −m·|i − j| to q·k scores"}.get(level, "it rotates queries and keys")
        raise ValueError(
            f"{name} cannot honour {position} positions ({why}, which {name} never forms); {name} honours "
            f"{', '.join(own)}; {position} works with {', '.join(others)}"
        )


def _position_entry(position: str):
    if position not in POSITIONS:
        raise ValueError(f"unknown positional encoding {position!r}; choose one of {', '.join(POSITIONS)}")
    return POSITIONS[position]


def describe(name: str) -> dict:
    """Family, paper, complexity, options with defaults, and what the mechanism supports."""
    config_cls, module_cls = _entry(name)
    folder = module_cls.__module__.split(".")[1]
    info = module_cls.info
    return {
        "name": name,
        "family": _FAMILY.get(folder, folder),
        "paper": info.paper,
        "complexity": info.complexity,
        "options": {f.name: _default(f) for f in dataclasses.fields(config_cls)},
        "causal": info.causal,
        "mask": info.mask,
        "variable_length": info.variable_length,
        "positions": [p for p in POSITIONS if honours(name, p)],
    }


def _default(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None
