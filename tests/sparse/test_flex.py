"""The FlexAttention path: BlockMask built from the layout's block tables, and the compiled kernel on CPU."""

from __future__ import annotations

import pytest
import torch

from attnzoo.core.masks import and_masks, causal, materialize_heads
from attnzoo.functional import local_attention
from attnzoo.sparse.bigbird import bigbird_pattern
from attnzoo.sparse.flex import block_mask_from_layout
from attnzoo.sparse.layout import build_layout
from attnzoo.sparse.local import local_pattern
from attnzoo.sparse.longformer import longformer_pattern
from tests.conftest import make_qkv

N, BLOCK, HEADS = 300, 32, 2
PATTERNS = [
    ("local", local_pattern(40)),
    ("local-causal", and_masks(local_pattern(40), causal)),
    ("bigbird", bigbird_pattern(N, 32, 3, 1, 2, 0)),
    ("longformer-per-head", longformer_pattern(10, (1, 3), (0,), N, HEADS)),
]


def dense_blocks(allowed: torch.Tensor, block: int):
    """[H, N, N] bool -> ([H, nb, nb] any, [H, nb, nb] all) by looking at every pair."""
    h, n, _ = allowed.shape
    nb = -(-n // block)
    padded = torch.zeros(h, nb * block, nb * block, dtype=torch.bool)
    padded[:, :n, :n] = allowed
    tiles = padded.unflatten(1, (nb, block)).unflatten(3, (nb, block))  # [H, nb, block, nb, block]
    valid = torch.zeros(nb * block, dtype=torch.bool)
    valid[:n] = True
    valid_tiles = (valid[:, None] & valid[None, :]).unflatten(0, (nb, block)).unflatten(2, (nb, block))
    return tiles.any(4).any(2), (tiles | ~valid_tiles).all(4).all(2)


@pytest.mark.parametrize("name,pattern", PATTERNS, ids=[p[0] for p in PATTERNS])
def test_block_mask_matches_the_dense_pattern(name, pattern):
    layout = build_layout(pattern, N, BLOCK, HEADS, torch.device("cpu"))
    block_mask = block_mask_from_layout(layout, pattern, HEADS, key_valid=None)
    want_any, want_all = dense_blocks(materialize_heads(pattern, N, HEADS).expand(HEADS, N, N), BLOCK)
    got = block_mask.to_dense()[0].bool()  # [H, nb, nb]: blocks flex will visit
    assert torch.equal(got, want_any.expand_as(got))
    # Blocks marked full skip mask_mod in the kernel, so they must really be full.
    full = torch.zeros_like(got)
    for h in range(HEADS):
        nfull = block_mask.full_kv_num_blocks[0, h]
        for r in range(got.shape[1]):
            full[h, r, block_mask.full_kv_indices[0, h, r, : nfull[r]].long()] = True
    assert not (full & ~want_all.expand_as(full)).any()


def test_block_mask_with_padding_marks_no_block_full():
    pattern = local_pattern(40)
    layout = build_layout(pattern, N, BLOCK, 1, torch.device("cpu"))
    key_valid = torch.ones(1, N, dtype=torch.bool)
    assert int(block_mask_from_layout(layout, pattern, 1, key_valid).full_kv_num_blocks.sum()) == 0


def test_flex_backend_refuses_cpu_backward_with_the_fix():
    q, k, v = make_qkv(1, 1, 64, 16, dtype=torch.float32)
    with pytest.raises(ValueError, match="backend='blocked'"):
        local_attention(q, k, v, window=4, backend="flex")


def test_compiled_flex_forward_on_cpu_matches_the_blocked_kernel():
    """One compile (~40 s on 2 cores): the BlockMask from the layout gives the same result as the kernel."""
    q, k, v = make_qkv(2, 2, 256, 64, dtype=torch.float32, requires_grad=False)
    mask = torch.ones(2, 256, dtype=torch.bool)
    mask[1, 200:] = False
    want = local_attention(q, k, v, window=40, mask=mask, backend="blocked", block=128)
    got = local_attention(q, k, v, window=40, mask=mask, backend="flex", block=128)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=2e-5)
