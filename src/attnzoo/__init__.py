"""attnzoo: self-attention and its efficient variants behind one interface.

    layer = attnzoo.build("local", dim=256, heads=4, window=64)   # x [B, N, C] -> [B, N, C]
    y = attnzoo.functional.local_attention(q, k, v, window=64)     # q, k, v [B, H, N, D]
"""

from attnzoo import functional
from attnzoo.core.masks import Pattern, and_masks, materialize, or_masks
from attnzoo.core.multihead import MultiHeadAttention
from attnzoo.registry import build, describe, list_mechanisms

__all__ = [
    "MultiHeadAttention",
    "Pattern",
    "and_masks",
    "build",
    "describe",
    "functional",
    "list_mechanisms",
    "materialize",
    "or_masks",
]
__version__ = "0.1.0"
