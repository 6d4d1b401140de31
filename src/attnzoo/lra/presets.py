"""Training presets per LRA task: the settings of LRA's released configs, and the small protocol.

``lra``: google-research/long-range-arena's configs (lra_benchmarks/<task>/configs/base_*_config.py
and transformer_base.py), read as training actually used them. Their learning rate is a scale
under ``constant * linear_warmup * rsqrt_decay`` (peak = lr / sqrt(warmup)); attnzoo schedules
linear warm-up then linear decay to 0, with that peak. Adam(0.9, 0.98, eps 1e-9) with decoupled
weight decay is torch's AdamW. Evaluation covers the whole validation split every ``eval_every``
steps (LRA evaluated 20 to 312 batches). Model differences: the head is one linear layer (LRA:
Dense(mlp) → ReLU → Dense) and attention projects dim → dim (LRA's qkv_dim may differ).

``small``: the xformers LRA protocol (facebookresearch/xformers, benchmarks/LRA/code/config.json):
2 layers, width 64, 2 heads, FFN ×2, learned positions, mean pooling, AdamW(0.9, 0.999, eps 1e-6),
lr 1e-4 with linear warm-up and decay, no weight decay, dropout 0.1. xformers has no Path-X entry:
its Pathfinder-32 settings with the LRA Path-X batch are used.

``cpu``: the small model on a 2-core CPU budget, for ListOps and Pathfinder-32 (benchmarks/lra):
fewer steps at a higher learning rate, and no compute spent on padding, so a run takes hours
instead of days.
"""

from __future__ import annotations

_LRA_MODEL = {  # dim, depth, heads, ffn_mult, dropout, positions, pooling
    "listops": dict(dim=512, depth=6, heads=8, ffn_mult=4, dropout=0.1, positions="sinusoidal", pooling="cls"),
    "text": dict(dim=256, depth=4, heads=4, ffn_mult=4, dropout=0.1, positions="sinusoidal", pooling="cls"),
    "retrieval": dict(dim=128, depth=4, heads=4, ffn_mult=4, dropout=0.1, positions="sinusoidal", pooling="cls"),
    "image": dict(dim=32, depth=1, heads=1, ffn_mult=2, dropout=0.3, positions="learned", pooling="cls"),
    "pathfinder32": dict(dim=128, depth=1, heads=4, ffn_mult=1, dropout=0.2, positions="sinusoidal", pooling="mean"),
    "pathx": dict(dim=32, depth=1, heads=2, ffn_mult=1, dropout=0.1, positions="learned", pooling="mean"),
}
_LRA_OPT = dict(betas=(0.9, 0.98), eps=1e-9)
_LRA_TRAIN = {  # peak lr = LRA's scale / sqrt(warmup) under rsqrt decay; the image tasks used cosine decay from lr itself
    "listops": dict(batch_size=32, lr=0.05 / 1000**0.5, warmup=1000, steps=5000, weight_decay=0.1, clip_norm=None, eval_every=100),
    "text": dict(batch_size=32, lr=0.05 / 8000**0.5, warmup=8000, steps=20000, weight_decay=0.1, clip_norm=None, eval_every=100),
    # LRA's Retrieval warms up over 8000 steps but trains 5000: its rate never peaks; kept as released
    "retrieval": dict(batch_size=32, lr=0.05 / 8000**0.5, warmup=8000, steps=5000, weight_decay=0.1, clip_norm=None, eval_every=100),
    "image": dict(batch_size=256, lr=5e-4, warmup=175, steps=35000, weight_decay=0.0, clip_norm=None, eval_every=175),
    "pathfinder32": dict(batch_size=512, lr=1e-3, warmup=312, steps=62400, weight_decay=0.0, clip_norm=None, eval_every=312),
    "pathx": dict(batch_size=64, lr=1e-3, warmup=2500, steps=500000, weight_decay=0.0, clip_norm=1.0, eval_every=2500),
}

_SMALL_MODEL = dict(dim=64, depth=2, heads=2, ffn_mult=2, dropout=0.1, positions="learned", pooling="mean")
_SMALL_OPT = dict(betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, lr=1e-4, clip_norm=1.0)
_SMALL_TRAIN = {
    "listops": dict(batch_size=32, warmup=1000, steps=10000, eval_every=50),
    "text": dict(batch_size=32, warmup=8000, steps=20000, eval_every=500),
    "retrieval": dict(batch_size=32, warmup=800, steps=30000, eval_every=300),
    "image": dict(batch_size=256, warmup=175, steps=35000, eval_every=175),
    "pathfinder32": dict(batch_size=256, warmup=312, steps=62400, eval_every=312),
    "pathx": dict(batch_size=64, warmup=312, steps=62400, eval_every=312),
}

# ListOps sits at chance (the label prior) for its first 1,000+ steps at this size: full attention
# stayed at valid 0.17-0.20 through step 1,250, then reached 0.37 at 1,500 (benchmarks/lra), so the
# budget is thousands of steps, hours per run, resumable across sessions. Batches are trimmed to their
# longest example and drawn from pools of 50 by length: ListOps' median example is 954 of 2,000
# tokens, so a step costs 2.2-2.9x less (lra/data.py; benchmarks/README.md).
_CPU_TRAIN = {
    "listops": dict(batch_size=32, lr=1e-3, warmup=500, steps=5000, eval_every=250, eval_limit=500, trim=64, length_pool=50),
    # 24,000 of LRA's 200,000 images: drawing them takes minutes here, not hours
    "pathfinder32": dict(batch_size=64, lr=1e-3, warmup=300, steps=4000, eval_every=250, eval_limit=1000,
                         data_options=dict(train=20_000, valid=2_000, test=2_000)),
}

PRESETS: dict[str, dict[str, dict]] = {
    "lra": {task: {**_LRA_MODEL[task], **_LRA_OPT, **_LRA_TRAIN[task]} for task in _LRA_MODEL},
    "small": {task: {**_SMALL_MODEL, **_SMALL_OPT, **_SMALL_TRAIN[task]} for task in _SMALL_TRAIN},
    "cpu": {task: {**_SMALL_MODEL, **_SMALL_OPT, **_CPU_TRAIN[task]} for task in _CPU_TRAIN},
}

# Long Range Arena's Table 1 (Tay et al. 2021, arxiv.org/abs/2011.04006): test accuracy (%), with
# Path-X failed (FAIL) by every model. Order: ListOps, Text, Retrieval, Image, Pathfinder.
PUBLISHED_TASKS = ("listops", "text", "retrieval", "image", "pathfinder32")
PUBLISHED = {
    "full": (36.37, 64.27, 57.46, 42.44, 71.40),
    "local": (15.82, 52.98, 53.39, 41.46, 66.63),
    "sparse_transformer": (17.07, 63.58, 59.59, 44.24, 71.71),
    "longformer": (35.63, 62.85, 56.89, 42.22, 69.71),
    "linformer": (35.70, 53.94, 52.27, 38.56, 76.34),
    "reformer": (37.27, 56.10, 53.40, 38.07, 68.50),
    "sinkhorn": (33.67, 61.20, 53.83, 41.23, 67.45),
    "synthesizer": (36.99, 61.68, 54.67, 41.61, 69.45),
    "bigbird": (36.05, 64.02, 59.29, 40.83, 74.87),
    "linear": (16.13, 65.90, 53.09, 42.34, 75.30),
    "performer": (18.01, 65.40, 53.82, 42.77, 77.05),
}
