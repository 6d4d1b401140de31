"""On-disk splits of the LRA tasks: token arrays memory-mapped on load, written once per config.

A task's split is three .npy files in ``<data_dir>/<task>-<config hash>/``: ``<split>.tokens.npy``
[S, L] (token ids, 0 pads; uint8 when the vocabulary fits), ``<split>.lengths.npy`` [S] and
``<split>.labels.npy`` [S]. The folder is built in a temporary sibling and renamed into place
when complete, so an interrupted ``prepare`` leaves nothing half-written, and a second
``prepare`` with the same config finds it and does nothing.

s sequences, l padded length.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

SPLITS = ("train", "valid", "test")
DEFAULT_DATA_DIR = Path("attnzoo-out/lra")


def data_dir(path: str | Path | None = None) -> Path:
    """The data folder: ``path``, else $ATTNZOO_DATA, else ./attnzoo-out/lra."""
    return Path(path or os.environ.get("ATTNZOO_DATA") or DEFAULT_DATA_DIR)


def folder(task: str, config, root: str | Path | None = None) -> Path:
    """Where ``task`` with ``config`` (a dataclass) lives: the task name and a hash of the config."""
    text = json.dumps(dataclasses.asdict(config), sort_keys=True)
    return data_dir(root) / f"{task}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def write_splits(target: Path, splits: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], meta: dict) -> Path:
    """Write {split: (tokens [S, L], lengths [S], labels [S])} and meta.json into ``target``,
    through a temporary folder renamed into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        for split, (tokens, lengths, labels) in splits.items():
            np.save(tmp / f"{split}.tokens.npy", tokens)
            np.save(tmp / f"{split}.lengths.npy", lengths)
            np.save(tmp / f"{split}.labels.npy", labels)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def load_split(path: Path, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tokens [S, L], lengths [S], labels [S]) of a prepared split, memory-mapped."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not (path / "meta.json").exists():
        raise ValueError(f"{path} holds no prepared task; run attnzoo lra prepare first")
    return tuple(np.load(path / f"{split}.{part}.npy", mmap_mode="r") for part in ("tokens", "lengths", "labels"))


def pack(sequences: list[list[int]], labels: list[int], length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token-id lists -> (tokens [S, length] padded with 0, lengths [S], labels [S])."""
    top = max((max(s) for s in sequences if s), default=0)
    tokens = np.zeros((len(sequences), length), dtype=np.uint8 if top < 256 else np.int32)
    for i, seq in enumerate(sequences):
        if len(seq) > length:
            raise ValueError(f"sequence {i} has {len(seq)} tokens, more than the padded length {length}")
        tokens[i, : len(seq)] = seq
    return tokens, np.array([len(s) for s in sequences], dtype=np.int32), np.array(labels, dtype=np.int64)
