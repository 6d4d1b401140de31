"""A prepared LRA task as batches: the memory-mapped splits, the training order, the shards of a
data-parallel run.

The training order is a function of (seed, step) alone: step t reads batch t mod (S // B) of the
permutation drawn for epoch t // (S // B). A run resumed at step t therefore reads exactly what an
uninterrupted run reads, and in a data-parallel run of W processes, process r takes every W-th
example of the global batch, so the global batch (and its mean loss) does not depend on W.

Two options save the compute spent on padding (ListOps is 500-2,000 tokens in arrays of 2,000):
``trim`` cuts each batch to its longest example, and ``length_pool`` draws batches of similar length.
Masked positions change nothing for exact and mask-aware sparse attention, so trimming gives the same
logits there; mechanisms whose approximation depends on the padded length (Nyström's segments,
Linformer's projection columns, FNet's Fourier transform) see the shorter N, as they would at
inference on a short input.

b batch, l padded length, s split size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from attnzoo.lra.cache import SPLITS, load_split


@dataclass
class Split:
    """One split: tokens [S, L] (ids), lengths [S] (real tokens; the rest is padding), labels [S];
    a task of pairs (Retrieval) also has tokens_b and lengths_b."""

    tokens: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray
    tokens_b: np.ndarray | None = None
    lengths_b: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, index: np.ndarray, device: str | torch.device = "cpu", trim: int = 0) -> dict[str, Tensor]:
        """The examples at ``index`` [b]: {"tokens" [b, l] int64, "mask" [b, l] bool or None (nothing
        padded), "labels" [b]} and, for pairs, "tokens_b" and "mask_b". l is the split's length L, or
        with ``trim`` > 0 the batch's longest example rounded up to a multiple of ``trim`` (at most L)."""
        index = np.sort(np.asarray(index))  # sorted reads are kinder to a memory map; order within a batch is irrelevant
        out = {"labels": torch.as_tensor(np.asarray(self.labels[index]), dtype=torch.long, device=device)}
        sides = [("tokens", "mask", self.tokens, self.lengths)]
        if self.tokens_b is not None:
            sides.append(("tokens_b", "mask_b", self.tokens_b, self.lengths_b))
        for name, mask, tokens, lengths in sides:
            lengths = np.asarray(lengths[index], dtype=np.int64)
            length = tokens.shape[1]
            if trim and len(index):
                length = min(length, -(-int(lengths.max()) // trim) * trim)
            out[name] = _tensor(tokens[index, :length], device)
            out[mask] = _mask(lengths, length, device)
        return out


def _tensor(array: np.ndarray, device) -> Tensor:
    return torch.as_tensor(np.asarray(array, dtype=np.int64), device=device)


def _mask(lengths: np.ndarray, length: int, device) -> Tensor | None:
    lengths = torch.as_tensor(np.asarray(lengths, dtype=np.int64), device=device)
    if bool((lengths == length).all()):
        return None  # nothing padded: the unmasked (faster) path, same result
    return torch.arange(length, device=device)[None, :] < lengths[:, None]


@dataclass
class TaskData:
    """A prepared task: its splits and what a model needs to know of it."""

    path: Path
    meta: dict
    splits: dict[str, Split]

    @property
    def task(self) -> str:
        return self.meta["task"]

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"]) if "vocab_size" in self.meta else len(self.meta["vocab"])

    @property
    def num_classes(self) -> int:
        return int(self.meta["classes"])

    @property
    def length(self) -> int:
        return int(self.splits["train"].tokens.shape[1])

    @property
    def pairs(self) -> bool:
        return self.splits["train"].tokens_b is not None


def open_task(path: str | Path) -> TaskData:
    """The prepared task in ``path`` (a folder ``attnzoo lra prepare`` wrote), memory-mapped."""
    path = Path(path)
    if not (path / "meta.json").exists():
        raise ValueError(f"{path} holds no prepared task; run attnzoo lra prepare first")
    meta = json.loads((path / "meta.json").read_text())
    splits = {}
    for name in SPLITS:
        arrays = load_split(path, name)
        splits[name] = Split(*arrays[:2], arrays[-1], *arrays[2:4]) if len(arrays) == 5 else Split(*arrays)
    return TaskData(path, meta, splits)


def train_batch(size: int, batch_size: int, step: int, seed: int, rank: int = 0, world: int = 1,
                lengths: np.ndarray | None = None, length_pool: int = 0) -> np.ndarray:
    """Indices of process ``rank``'s share of global training batch ``step`` (0-based) [batch_size / world].

    The batch is slice step mod (size // batch_size) of the permutation of range(size) drawn for epoch
    step // (size // batch_size) from (seed, epoch); the last incomplete batch of an epoch is dropped.
    With ``length_pool`` = P > 0 (and the examples' ``lengths`` [size]), each run of P consecutive
    batches of that permutation is sorted by length, cut into batches again, and those P batches are
    taken in a seeded random order: a batch holds examples of similar length, an epoch still covers
    each example once, and the order is still a function of (seed, step).
    """
    if batch_size % world:
        raise ValueError(f"batch size {batch_size} must divide evenly among {world} processes; use a multiple of {world}")
    per_epoch = size // batch_size
    if per_epoch == 0:
        raise ValueError(f"batch size {batch_size} is larger than the training split ({size} examples); use a smaller batch")
    if length_pool < 0 or (length_pool and lengths is None):
        raise ValueError(f"length_pool must be 0 (off) or a positive number of batches with the lengths given, got {length_pool}")
    epoch, i = divmod(step, per_epoch)
    order = _permutation(size, seed, epoch)
    if length_pool:
        pool, j = divmod(i, length_pool)
        first = pool * length_pool
        count = min(length_pool, per_epoch - first)
        members = order[first * batch_size:(first + count) * batch_size]
        members = members[np.argsort(np.asarray(lengths)[members], kind="stable")]
        generator = torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1_000_003 + pool)
        i = int(torch.randperm(count, generator=generator)[j])
        order = members
    return order[i * batch_size:(i + 1) * batch_size][rank::world]


_CACHE: dict[tuple[int, int, int], np.ndarray] = {}


def _permutation(size: int, seed: int, epoch: int) -> np.ndarray:
    key = (size, seed, epoch)
    if key not in _CACHE:
        _CACHE.clear()  # one epoch's order at a time
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        _CACHE[key] = torch.randperm(size, generator=generator).numpy()
    return _CACHE[key]


def eval_batches(size: int, batch_size: int, rank: int = 0, world: int = 1, limit: int | None = None,
                 lengths: np.ndarray | None = None):
    """Index arrays covering process ``rank``'s share of the first ``limit`` examples (all by default),
    in order, or by length when ``lengths`` are given (less padding to trim): together the W shares
    cover each example exactly once."""
    mine = np.arange(size if limit is None else min(limit, size))[rank::world]
    if lengths is not None:
        mine = mine[np.argsort(np.asarray(lengths)[mine], kind="stable")]
    for start in range(0, len(mine), batch_size):
        yield mine[start:start + batch_size]
