"""The public PyTorch implementations attnzoo is compared with, as layers x [B, N, C] -> [B, N, C]
at settings matched to one of ours. Optional: each package is imported only when asked for and
is never a dependency (pip install -e '.[bench]' installs them).

Each entry: package -> (our mechanism, our options at length n, the peer's layer at length n).
"""

from __future__ import annotations

import importlib.util
from typing import Callable

import torch
from torch import nn

from attnzoo.clustered.routing import paper_clusters


class _Peer(nn.Module):
    """A package's module as a layer: its first output when it returns several (routing's loss)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        y = self.inner(x)
        return y[0] if isinstance(y, tuple) else y


class _CoreLayer(nn.Module):
    """A package's attention core (q, k, v [B, H, N, D]) between q/k/v and output projections like attnzoo's."""

    def __init__(self, core: nn.Module, dim: int, heads: int):
        super().__init__()
        self.core, self.heads = core, heads
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)  # [3, B, H, N, D]
        return self.out(self.core(q, k, v).transpose(1, 2).flatten(2))


def _performer(dim: int, heads: int, n: int, causal: bool) -> nn.Module:
    from performer_pytorch import SelfAttention

    return _Peer(SelfAttention(dim, causal=causal, heads=heads, dim_head=dim // heads))  # nb_features: d·ln d, as ours


def _linformer(dim: int, heads: int, n: int, causal: bool) -> nn.Module:
    from linformer import LinformerSelfAttention

    return _Peer(LinformerSelfAttention(dim, n, k=256, heads=heads, dim_head=dim // heads))


def _reformer(dim: int, heads: int, n: int, causal: bool) -> nn.Module:
    from reformer_pytorch import LSHSelfAttention

    if n % 128:
        raise ValueError(f"reformer-pytorch needs N divisible by 2 × bucket_size = 128, got {n}")
    return _Peer(LSHSelfAttention(dim=dim, heads=heads, dim_head=dim // heads, bucket_size=64, n_hashes=4, causal=causal))


def _routing(dim: int, heads: int, n: int, causal: bool) -> nn.Module:
    from routing_transformer.routing_transformer import SelfAttention

    window = n // paper_clusters(n)  # its num_clusters = max_seq_len // window_size
    if n % window:
        raise ValueError(f"routing-transformer needs N divisible by the cluster size {window}, got {n}")
    return _Peer(SelfAttention(dim, 1, n, heads, 0, window, dim_head=dim // heads, causal=causal))


def _sinkhorn(dim: int, heads: int, n: int, causal: bool) -> nn.Module:
    from sinkhorn_transformer.sinkhorn_transformer import SinkhornSelfAttention

    if n % 64:
        raise ValueError(f"sinkhorn-transformer needs N divisible by bucket_size 64, got {n}")
    # non_permutative=False: Gumbel-Sinkhorn sorting as in the paper
    return _Peer(SinkhornSelfAttention(dim, 64, n, heads=heads, dim_head=dim // heads, causal=causal, non_permutative=False,
                                       sinkhorn_iter=8, temperature=0.75))


def _nystrom(dim: int, heads: int, n: int, causal: bool) -> nn.Module:
    from nystrom_attention import NystromAttention

    return _Peer(NystromAttention(dim=dim, dim_head=dim // heads, heads=heads, num_landmarks=64, pinv_iterations=6, residual=False))


def _local(dim: int, heads: int, n: int, causal: bool) -> nn.Module:
    from local_attention import LocalAttention

    # exact_windowsize: |i - j| <= 256 exactly, like attnzoo's window; no rotary embedding on its side
    core = LocalAttention(window_size=256, causal=causal, look_forward=0 if causal else 1, exact_windowsize=True,
                          use_rotary_pos_emb=False, autopad=True)
    return _CoreLayer(core, dim, heads)


def _linear_attention_transformer(dim: int, heads: int, n: int, causal: bool) -> nn.Module:
    from linear_attention_transformer.linear_attention_transformer import SelfAttention

    # softmax over q's features and k's positions (Shen et al.): attnzoo's "efficient"
    return _Peer(SelfAttention(dim, heads, causal=causal, dim_head=dim // heads))


# package -> (module to import, our mechanism, our options at n, the peer's layer builder)
PEERS: dict[str, tuple[str, str, Callable[[int], dict], Callable[..., nn.Module]]] = {
    "performer-pytorch": ("performer_pytorch", "performer", lambda n: {}, _performer),
    "linformer": ("linformer", "linformer", lambda n: {"k": 256, "sharing": "headwise"}, _linformer),
    "reformer-pytorch": ("reformer_pytorch", "reformer", lambda n: {"bucket_size": 64, "n_hashes": 4}, _reformer),
    "routing-transformer": ("routing_transformer", "routing", lambda n: {"clusters": paper_clusters(n)}, _routing),
    "sinkhorn-transformer": ("sinkhorn_transformer", "sinkhorn", lambda n: {"block": 64, "iters": 8, "temperature": 0.75}, _sinkhorn),
    "nystrom-attention": ("nystrom_attention", "nystrom", lambda n: {"landmarks": 64, "pinv_iterations": 6}, _nystrom),
    "local-attention": ("local_attention", "local", lambda n: {"window": 256}, _local),
    "linear-attention-transformer": ("linear_attention_transformer", "efficient", lambda n: {}, _linear_attention_transformer),
}


NOT_CAUSAL = ("linformer", "nystrom-attention")  # packages without a causal form (as their papers)


def installed() -> list[str]:
    """The peer packages importable here."""
    return [pkg for pkg, (module, *_) in PEERS.items() if importlib.util.find_spec(module) is not None]


def build_peer(package: str, *, dim: int, heads: int, n: int, causal: bool = False) -> nn.Module:
    """The package's layer at length n with the settings matched to attnzoo's ``PEERS[package]`` mechanism."""
    if package not in PEERS:
        raise ValueError(f"no peer {package!r}; peers: {', '.join(PEERS)}")
    module, *_, make = PEERS[package]
    if importlib.util.find_spec(module) is None:
        raise ValueError(f"{package} is not installed: pip install {package} (or pip install -e '.[bench]')")
    if causal and package in NOT_CAUSAL:
        raise ValueError(f"{package} has no causal form; compare it non-causal")
    return make(dim, heads, n, causal)
