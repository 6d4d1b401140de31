"""``attnzoo lra prepare TASK``: generate (or convert) a task once, cache its splits, report them."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from attnzoo.lra import listops, pathfinder
from attnzoo.lra.cache import folder, pack, write_splits

# task -> its default config (more tasks land here as they are written)
TASKS = {
    "listops": listops.ListOpsConfig(),
    "pathfinder32": pathfinder.pathfinder_config(32),
    "pathx": pathfinder.pathfinder_config(128),
}


def make_config(task: str, **options):
    if task not in TASKS:
        raise ValueError(f"unknown LRA task {task!r}; tasks so far: {', '.join(TASKS)}")
    known = [f.name for f in dataclasses.fields(TASKS[task])]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"lra {task}: no option(s) {unknown}; its options are {known}")
    return dataclasses.replace(TASKS[task], **{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})


def prepare(task: str, *, root: str | Path | None = None, **options) -> tuple[Path, str]:
    """(the task's folder, a report). Idempotent: a folder already prepared with this config is
    returned as it is."""
    config = make_config(task, **options)
    target = folder(task, config, root)
    if (target / "meta.json").exists():
        return target, f"{task}: already prepared in {target}"
    if task == "listops":
        data = listops.generate(config)
        splits = {
            name: pack([[listops.TOKEN_ID[t] for t in seq] for seq, _ in rows], [label for _, label in rows], config.max_length)
            for name, rows in data.items()
        }
        meta = {"task": task, "config": dataclasses.asdict(config), "vocab": list(listops.VOCAB), "classes": 10, "pad": 0}
        report = "\n".join(f"{name}: {listops.describe(rows)}" for name, rows in data.items() if rows)
    else:  # pathfinder32, pathx: every pixel an 8-bit intensity token, every sequence full length (no padding)
        data = pathfinder.generate(config, workers=min(2, os.cpu_count() or 1))
        splits = {
            name: (images.reshape(len(images), -1), np.full(len(images), images[0].size if len(images) else 0, dtype=np.int32), labels)
            for name, (images, labels) in data.items()
        }
        meta = {"task": task, "config": dataclasses.asdict(config), "vocab_size": 256, "classes": 2, "pad": None}
        report = "\n".join(f"{name}: {pathfinder.describe(*pair)}" for name, pair in data.items() if len(pair[1]))
    write_splits(target, splits, meta)
    return target, f"{task}: prepared in {target}\n{report}"
