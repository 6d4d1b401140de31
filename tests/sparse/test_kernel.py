"""Every fixed pattern on the blocked kernel against the dense masked reference, forward and gradients."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from attnzoo.functional import (
    bigbird_attention,
    global_attention,
    heads_attention,
    local_attention,
    longformer_attention,
    random_attention,
    sparse_transformer_attention,
    strided_attention,
)
from attnzoo.sparse.attention import sparse_attention
from attnzoo.sparse.local import local_pattern
from attnzoo.sparse.strided import strided_parts, strided_pattern
from tests.conftest import assert_close_all, make_mask, make_qkv, outputs_and_grads

# (id, function, options). Windows larger than N appear through the small-N sizes.
MECHANISMS = [
    ("local-w5", local_attention, dict(window=5)),
    ("local-w300", local_attention, dict(window=300)),
    ("strided-s7", strided_attention, dict(stride=7)),
    ("dilated-s3-w4", strided_attention, dict(stride=3, window=4)),
    ("global", global_attention, dict(global_idx=(0, -1), window=2)),
    ("random", random_attention, dict(num_blocks=2, block_size=16)),
    ("st-strided", sparse_transformer_attention, dict(mode="strided", stride=11)),
    ("st-fixed", sparse_transformer_attention, dict(mode="fixed", stride=16, summary=4)),
    ("longformer", longformer_attention, dict(window=6, dilation=(1, 2), global_idx=(0,))),
    ("bigbird", bigbird_attention, dict(block_size=16, window_blocks=3, global_blocks=1, random_blocks=2)),
    ("heads", heads_attention, dict(patterns=(local_pattern(4), strided_pattern(5)))),
    ("heads-residue", lambda q, k, v, **kw: heads_attention(q, k, v, **_local_and_stride_heads(q), **kw), {}),
]


def _local_and_stride_heads(q, stride=5):
    """Heads cycling local(4) and stride(5), the stride heads run in residue order (their parts)."""
    n, heads = q.shape[2], q.shape[1]
    parts = (None, strided_parts(stride, None, n, q.device))
    return dict(patterns=tuple((local_pattern(4), strided_pattern(stride))[h % 2] for h in range(heads)), parts=tuple(parts[h % 2] for h in range(heads)))


SIZES = [(1, 64), (7, 60), (113, 60), (1000, 64)]  # (N, D)


def _case(fn, opts, n, d, pad, causal, block, dtype=torch.float64, h=2):
    q, k, v = make_qkv(2, h, n, d, dtype=dtype)
    mask = make_mask(2, n, pad)
    run = lambda backend: outputs_and_grads(  # noqa: E731
        lambda *t: fn(*t, mask=mask, causal=causal, backend=backend, block=block, **opts), q, k, v
    )
    assert_close_all(run("blocked"), run("dense"), dtype)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("pad", ["none", "end", "middle"])
@pytest.mark.parametrize("n,d", SIZES, ids=[f"N{n}-D{d}" for n, d in SIZES])
@pytest.mark.parametrize("name,fn,opts", MECHANISMS, ids=[m[0] for m in MECHANISMS])
def test_blocked_kernel_matches_dense_reference(name, fn, opts, n, d, pad, causal):
    block = 64 if n == 1000 else 16  # small blocks at small N exercise bands, groups and ragged tails
    _case(fn, opts, n, d, pad, causal, block)


@pytest.mark.parametrize("name,fn,opts", MECHANISMS, ids=[m[0] for m in MECHANISMS])
def test_blocked_kernel_float32(name, fn, opts):
    _case(fn, opts, 200, 64, "end", False, 32, dtype=torch.float32)


@pytest.mark.parametrize("block", [1, 5, 64, 256])
def test_any_block_size(block):
    _case(local_attention, dict(window=9), 113, 8, "middle", True, block)


GRADCHECK = MECHANISMS[:8]  # includes both sparse_transformer modes: two parts merged by log-sum-exp


@pytest.mark.parametrize("name,fn,opts", GRADCHECK, ids=[m[0] for m in GRADCHECK])
def test_gradcheck_with_dropout(name, fn, opts):
    """Finite differences against the analytic backward, with dropout: the same seed draws the same mask."""
    q, k, v = make_qkv(1, 2, 21, 4)

    def f(q, k, v):
        torch.manual_seed(123)
        return fn(q, k, v, dropout_p=0.3, backend="blocked", block=8, **opts)

    assert torch.autograd.gradcheck(f, (q, k, v), eps=1e-6, atol=1e-6)
    out = f(q, k, v)
    assert torch.equal(out, f(q, k, v))
    torch.manual_seed(124)
    assert not torch.equal(out, fn(q, k, v, dropout_p=0.3, backend="blocked", block=8, **opts))


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_heads_grouped_by_pattern_equal_each_head_alone(causal):
    """Five heads cycling two patterns run as two groups (3 + 2 heads, interleaved); each head must
    equal the dense masked reference of its own pattern on that head alone."""
    q, k, v = make_qkv(2, 5, 70, 8)
    mask = make_mask(2, 70, "middle")
    heads = _local_and_stride_heads(q)
    got = outputs_and_grads(lambda *t: heads_attention(*t, mask=mask, causal=causal, backend="blocked", block=16, **heads), q, k, v)

    def one_by_one(q, k, v):
        return torch.cat([
            sparse_attention(q[:, h : h + 1], k[:, h : h + 1], v[:, h : h + 1], heads["patterns"][h], mask=mask, causal=causal, backend="dense")
            for h in range(5)
        ], dim=1)

    assert_close_all(got, outputs_and_grads(one_by_one, q, k, v), torch.float64)


def test_heads_attention_rejects_a_pattern_count_that_is_not_the_head_count():
    q, k, v = make_qkv(1, 3, 10, 4)
    with pytest.raises(ValueError, match="2 patterns for 3 heads"):
        heads_attention(q, k, v, patterns=(local_pattern(1), strided_pattern(2)))
    with pytest.raises(ValueError, match="1 parts for 3 patterns"):
        heads_attention(q, k, v, patterns=(local_pattern(1),) * 3, parts=(None,))


def test_dropout_keeps_the_expectation():
    q, k, v = make_qkv(1, 1, 64, 8, dtype=torch.float32, requires_grad=False)
    exact = local_attention(q, k, v, window=8)
    mean = torch.stack([local_attention(q, k, v, window=8, dropout_p=0.5) for _ in range(400)]).mean(0)
    assert (mean - exact).abs().mean() < 0.05 * exact.abs().mean() + 0.02


def test_rows_with_no_visible_key_are_zero_with_finite_grads():
    q, k, v = make_qkv(1, 2, 50, 8)
    mask = torch.ones(1, 50, dtype=torch.bool)
    mask[0, :20] = False  # causal + local: queries 0..19 see no real key
    out = local_attention(q, k, v, window=4, mask=mask, causal=True, block=8)
    assert torch.equal(out[:, :, :20], torch.zeros_like(out[:, :, :20]))
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


_PEAK = """
import json, sys, torch
from attnzoo.functional import local_attention
torch.set_num_threads(1)

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))

n = int(sys.argv[1])
q, k, v = (torch.randn(1, 4, n, 64, requires_grad=True) for _ in range(3))
local_attention(q[:, :, :256], k[:, :, :256], v[:, :, :256], window=64)  # warm up lazy initialisation
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak-RSS high-water mark (Linux)
before = status("VmRSS:")
local_attention(q, k, v, window=64).sum().backward()
print(json.dumps(status("VmHWM:") - before))
"""


def test_local_peak_memory_grows_linearly_in_n():
    """Peak memory of forward+backward in a fresh process per N grows like N, not N²."""
    peaks = {}
    for n in (16384, 32768, 65536):
        res = subprocess.run([sys.executable, "-c", _PEAK, str(n)], capture_output=True, text=True, check=True)
        peaks[n] = json.loads(res.stdout)
    # memory ∝ N^p: linear gives p ≈ 1 (less with fixed overheads), the N×N matrix would give p ≈ 2.
    exponent = math.log(peaks[65536] / peaks[16384]) / math.log(4)
    assert 0.3 < exponent < 1.3, f"peak bytes {peaks}: exponent {exponent:.2f}"
    assert all(peaks[b] / peaks[a] < 2.6 for a, b in ((16384, 32768), (32768, 65536))), f"peak bytes {peaks}"
    # And small in absolute terms: N = 64K, 4 heads, D = 64 fits in well under 1 GB (dense scores alone would be 64 GB).
    assert peaks[65536] < 1 << 30, peaks


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
@pytest.mark.parametrize("name,fn,opts", [MECHANISMS[0], MECHANISMS[4], MECHANISMS[9]], ids=["local", "global", "bigbird"])
def test_low_precision_error_at_most_twice_the_naive_path(name, fn, opts, dtype):
    """flash-attention's rule: against a float64 reference, the kernel in low precision errs at most 2x
    as much as the dense reference computed in that same precision."""
    q, k, v = make_qkv(2, 2, 300, 64, dtype=torch.float64, requires_grad=False)
    mask = make_mask(2, 300, "end")
    exact = fn(q, k, v, mask=mask, backend="dense", **opts)
    low = [t.to(dtype) for t in (q, k, v)]
    naive_err = (fn(*low, mask=mask, backend="dense", **opts).double() - exact).abs().max()
    kernel_out = fn(*low, mask=mask, backend="blocked", block=32, **opts)
    assert kernel_out.dtype == dtype
    assert (kernel_out.double() - exact).abs().max() <= 2 * naive_err + 1e-6


@pytest.mark.parametrize(
    "name,fn,opts", [MECHANISMS[2], MECHANISMS[7], MECHANISMS[8], MECHANISMS[9]], ids=["strided", "st-fixed", "longformer", "bigbird"]
)
def test_masks_recomputed_per_chunk_when_over_budget(name, fn, opts, monkeypatch):
    """Past the mask-storage budget the kernel recomputes partial-block masks from mask_mod: same result."""
    import attnzoo.sparse.layout as layout_module

    monkeypatch.setattr(layout_module, "FORBID_BYTES", 0)
    layout_module.build_layout.cache_clear()
    try:
        _case(fn, opts, 300, 16, "middle", True, 16)
    finally:
        layout_module.build_layout.cache_clear()


def test_band_of_an_unbounded_stride_stays_near_the_diagonal():
    """Patterns touching every block keep the band within N/4 of the diagonal (the rest is gathered),
    so windows do not compute mostly padding."""
    from attnzoo.sparse.layout import build_layout

    layout = build_layout(strided_pattern(7), 4096, 64, 1, torch.device("cpu"))
    band, nb = layout.heads[0].band, layout.n_blocks
    assert band is not None and -band.lo <= nb // 4 and band.lo + band.width - 1 <= nb // 4
    touched = sum(g.cols.numel() for g in layout.heads[0].groups) + band.width * nb
    assert touched <= nb * nb + (nb // 4) ** 2 + nb  # about every block once, plus the band's edge padding
