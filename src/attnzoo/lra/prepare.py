"""``attnzoo lra prepare TASK``: generate (or convert) a task once, cache its splits, report them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from attnzoo.lra import listops
from attnzoo.lra.cache import folder, pack, write_splits

# task -> its config dataclass (more tasks land here as they are written)
TASKS = {"listops": listops.ListOpsConfig}


def make_config(task: str, **options):
    if task not in TASKS:
        raise ValueError(f"unknown LRA task {task!r}; tasks so far: {', '.join(TASKS)}")
    known = [f.name for f in dataclasses.fields(TASKS[task])]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"lra {task}: no option(s) {unknown}; its options are {known}")
    return TASKS[task](**options)


def prepare(task: str, *, root: str | Path | None = None, **options) -> tuple[Path, str]:
    """(the task's folder, a report). Idempotent: a folder already prepared with this config is
    returned as it is."""
    config = make_config(task, **options)
    target = folder(task, config, root)
    if (target / "meta.json").exists():
        return target, f"{task}: already prepared in {target}"
    data = listops.generate(config)
    splits = {
        name: pack([[listops.TOKEN_ID[t] for t in seq] for seq, _ in rows], [label for _, label in rows], config.max_length)
        for name, rows in data.items()
    }
    meta = {"task": task, "config": dataclasses.asdict(config), "vocab": list(listops.VOCAB), "classes": 10}
    write_splits(target, splits, meta)
    report = "\n".join(f"{name}: {listops.describe(rows)}" for name, rows in data.items() if rows)
    return target, f"{task}: prepared in {target}\n{report}"
