"""Mixing: token mixing without query-key dot products. Synthesizer's synthetic attention weights,
FNet's Fourier transform, gMLP's spatial gating unit and MLP-Mixer's token-mixing MLP. Each module
is a whole layer x [B, N, C] -> [B, N, C] (``is_layer = True``), not a core inside
MultiHeadAttention."""

from attnzoo.mixing.fnet import FNet, FNetConfig, fnet_mix
from attnzoo.mixing.gmlp import GMLP, GMLPConfig, spatial_gating
from attnzoo.mixing.mixer import Mixer, MixerConfig, token_mixing
from attnzoo.mixing.synthesizer import (
    Synthesizer,
    SynthesizerConfig,
    dense_logits,
    factorized_dense_logits,
    factorized_random_attention,
    synthesizer_attention,
)

__all__ = [
    "FNet",
    "FNetConfig",
    "GMLP",
    "GMLPConfig",
    "Mixer",
    "MixerConfig",
    "Synthesizer",
    "SynthesizerConfig",
    "dense_logits",
    "factorized_dense_logits",
    "factorized_random_attention",
    "fnet_mix",
    "spatial_gating",
    "synthesizer_attention",
    "token_mixing",
]
