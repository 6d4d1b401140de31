"""Every attention function, flat: q, k, v [B, H, N, D] -> [B, H, N, D]."""

from attnzoo.clustered.graph import graph_attention
from attnzoo.clustered.reformer import reformer_attention
from attnzoo.clustered.routing import routing_attention
from attnzoo.clustered.sinkhorn import sinkhorn_attention
from attnzoo.core.full import additive_attention, full_attention
from attnzoo.core.reference import reference_attention
from attnzoo.kernel.efficient import efficient_attention, efficient_step
from attnzoo.kernel.feature_attention import feature_attention, feature_attention_step, reference_feature_attention
from attnzoo.kernel.linear import linear_attention
from attnzoo.kernel.performer import performer_attention, performer_relu_attention, performer_trig_attention
from attnzoo.kernel.rfa import rfa_attention
from attnzoo.lowrank.compressed import compressed_attention
from attnzoo.lowrank.linformer import linformer_attention
from attnzoo.lowrank.nystrom import nystrom_attention
from attnzoo.mixing.fnet import fnet_mix
from attnzoo.mixing.gmlp import spatial_gating
from attnzoo.mixing.mixer import token_mixing
from attnzoo.mixing.synthesizer import factorized_random_attention, synthesizer_attention
from attnzoo.sparse.attention import sparse_attention
from attnzoo.sparse.bigbird import bigbird_attention
from attnzoo.sparse.global_tokens import global_attention
from attnzoo.sparse.heads import heads_attention
from attnzoo.sparse.local import local_attention
from attnzoo.sparse.longformer import longformer_attention
from attnzoo.sparse.random import random_attention
from attnzoo.sparse.sparse_transformer import sparse_transformer_attention
from attnzoo.sparse.strided import strided_attention

__all__ = [
    "factorized_random_attention",
    "fnet_mix",
    "spatial_gating",
    "synthesizer_attention",
    "token_mixing",
    "compressed_attention",
    "linformer_attention",
    "nystrom_attention",
    "graph_attention",
    "reformer_attention",
    "routing_attention",
    "sinkhorn_attention",
    "efficient_attention",
    "efficient_step",
    "feature_attention",
    "feature_attention_step",
    "linear_attention",
    "performer_attention",
    "performer_relu_attention",
    "performer_trig_attention",
    "reference_feature_attention",
    "rfa_attention",
    "additive_attention",
    "bigbird_attention",
    "full_attention",
    "global_attention",
    "heads_attention",
    "local_attention",
    "longformer_attention",
    "random_attention",
    "reference_attention",
    "sparse_attention",
    "sparse_transformer_attention",
    "strided_attention",
]
