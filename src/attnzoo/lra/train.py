"""One trainer for every LRA task × every registered mechanism: config → data → model → loop → eval.

    attnzoo lra train listops --mechanism performer --preset cpu
    torchrun --standalone --nproc-per-node 2 -m attnzoo.lra.train listops --mechanism local --preset cpu

AdamW with linear warm-up then linear decay to 0, gradient clipping, bf16 autocast on GPU,
validation every ``eval_every`` steps, and the **test accuracy of the best validation checkpoint**
(LRA's code reported the last one). A run lives in ``<out>/<run key>/``: ``checkpoint.pt`` (the
whole state, written atomically at every validation and when interrupted), ``best.pt`` (the
weights of the best validation so far), ``config.json`` and, when done, ``result.json``; it is
also a row of the results store (``Store.runs``), updated at each validation.

Interrupting (Ctrl-C, SIGTERM) stops at the next step boundary and checkpoints that step;
``--resume`` continues from it and reaches the same weights as a run never interrupted: the data
order is a function of (seed, step) and the random state (dropout, random features, LSH rotations)
is saved per process. Under torchrun every process holds 1/W of each global batch, so the global
batch, its mean loss and the learning rate do not depend on W (gloo on CPU, nccl on GPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import resource
import signal
import sys
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from attnzoo.bench.files import replace_atomically, write_atomic
from attnzoo.lra.data import TaskData, eval_batches, open_task, train_batch
from attnzoo.lra.presets import PRESETS
from attnzoo.model.encoder import Classifier, ClassifierConfig, EncoderConfig, Matcher, auxiliary_loss
from attnzoo.registry import REGISTRY, build

DEFAULT_OUT = Path("attnzoo-out/lra/runs")
DEFAULT_STORE = Path("attnzoo-out/bench/bench.sqlite")  # the benchmarks' store: one file holds both
CHECKPOINT_FORMAT = 1


@dataclass
class TrainConfig:
    """Everything a run depends on. ``make_config`` fills it from a preset; fields marked "where"
    say where the run lives and do not change its result (they are not part of its key)."""

    task: str
    mechanism: str = "full"
    options: dict = field(default_factory=dict)  # the mechanism's options (attnzoo describe NAME)
    preset: str = "small"
    # model
    dim: int = 64
    depth: int = 2
    heads: int = 2
    ffn_mult: int = 2
    dropout: float = 0.1
    positions: str | None = "learned"
    pooling: str = "mean"
    # optimisation
    batch_size: int = 32  # global: split evenly among data-parallel processes
    lr: float = 1e-4  # peak, reached after warm-up
    warmup: int = 1000
    steps: int = 10000
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-6
    clip_norm: float | None = 1.0
    aux_weight: float = 1e-4  # weight of auxiliary losses (routing's commitment)
    eval_every: int = 100
    eval_limit: int | None = None  # validate on the first N examples (None: all); test always uses all
    seed: int = 0
    amp: bool = True  # bf16 autocast where the device is CUDA; ignored on CPU
    data_options: dict = field(default_factory=dict)  # the task's generator options (attnzoo lra prepare)
    trim: int = 0  # > 0: cut each batch to its longest example, rounded up to a multiple of this (lra/data.py)
    length_pool: int = 0  # > 0: draw batches of similar length from pools of this many batches
    # where (not part of the key)
    data: str | None = None  # data folder (default $ATTNZOO_DATA or attnzoo-out/lra)
    out: str = str(DEFAULT_OUT)
    store: str | None = str(DEFAULT_STORE)  # None: no store
    device: str = "auto"
    log_every: int = 10

    WHERE = ("data", "out", "store", "device", "log_every")

    def key(self) -> str:
        """``<task>-<mechanism>-<hash of every field that changes the result>``."""
        what = {k: v for k, v in dataclasses.asdict(self).items() if k not in self.WHERE}
        digest = hashlib.sha256(json.dumps(what, sort_keys=True, default=list).encode()).hexdigest()[:10]
        return f"{self.task}-{self.mechanism}-{digest}"


def make_config(task: str, mechanism: str = "full", preset: str = "small", **overrides) -> TrainConfig:
    """The preset's settings for ``task``, then ``overrides`` (any TrainConfig field)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
    if task not in PRESETS[preset]:
        raise ValueError(f"preset {preset!r} has no task {task!r}; its tasks: {', '.join(PRESETS[preset])}")
    if mechanism not in REGISTRY:
        raise ValueError(f"unknown mechanism {mechanism!r}; see attnzoo list")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"no training setting(s) {unknown}; settings: {', '.join(sorted(names - {'task', 'mechanism', 'preset'}))}")
    config = TrainConfig(task=task, mechanism=mechanism, preset=preset, **{**PRESETS[preset][task], **overrides})
    _check(config)
    return config


def _check(c: TrainConfig) -> None:
    counts = (("dim", "depth", "heads", "ffn_mult", "batch_size", "steps", "eval_every", "log_every"), 1, "a positive int"), \
             (("trim", "length_pool"), 0, "an int >= 0 (0: off)")
    for names, lowest, what in counts:
        for name in names:
            value = getattr(c, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
                raise ValueError(f"{name} must be {what}, got {value!r}")
    if c.warmup < 0 or c.lr <= 0 or not 0 <= c.dropout < 1 or c.weight_decay < 0:
        raise ValueError(f"need warmup >= 0, lr > 0, 0 <= dropout < 1, weight_decay >= 0; "
                         f"got {c.warmup}, {c.lr}, {c.dropout}, {c.weight_decay}")
    if c.dim % c.heads:
        raise ValueError(f"dim {c.dim} must be a multiple of heads {c.heads}")
    if c.clip_norm is not None and c.clip_norm <= 0:
        raise ValueError(f"clip_norm must be positive or None, got {c.clip_norm}")
    if c.device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {c.device!r}")


# -- the pieces ------------------------------------------------------------------------------------


def load_data(config: TrainConfig) -> TaskData:
    """The task's prepared splits, preparing them first when missing (idempotent; only process 0
    writes, the others wait)."""
    from attnzoo.lra.prepare import prepare

    if _rank() == 0:
        _, report = prepare(config.task, root=config.data, **config.data_options)
        if "already prepared" not in report:
            print(report, file=sys.stderr)
    _barrier()
    path, _ = prepare(config.task, root=config.data, **config.data_options)
    return open_task(path)


def build_model(config: TrainConfig, data: TaskData) -> nn.Module:
    """The classifier (or, for a task of pairs, the two-tower matcher) with ``config.mechanism`` in every block."""
    length = data.length + (1 if config.pooling == "cls" else 0)
    head = ClassifierConfig(vocab_size=data.vocab_size, num_classes=data.num_classes, max_len=length,
                            positions=config.positions, pooling=config.pooling)
    encoder = EncoderConfig(dim=config.dim, depth=config.depth, heads=config.heads, ffn_mult=config.ffn_mult, dropout=config.dropout)

    def attention() -> nn.Module:
        return build(config.mechanism, dim=config.dim, heads=config.heads, max_len=length, **config.options)

    return (Matcher if data.pairs else Classifier)(head, encoder, attention)


def make_optimizer(model: nn.Module, config: TrainConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (decay on matrices only: biases, norms' gains and 1-d parameters are left alone) and
    the schedule: linear warm-up to ``lr`` over ``warmup`` steps, then linear decay to 0 at ``steps``."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.betas), eps=config.eps)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate_factor(step, config.warmup, config.steps))


def learning_rate_factor(step: int, warmup: int, steps: int) -> float:
    """The multiplier of the peak rate at optimizer step ``step`` (0-based)."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (steps - step) / max(1, steps - warmup))


def forward(model: nn.Module, batch: dict) -> torch.Tensor:
    if "tokens_b" in batch:
        return model(batch["tokens"], batch["mask"], batch["tokens_b"], batch["mask_b"])
    return model(batch["tokens"], batch["mask"])


@torch.no_grad()
def evaluate(model: nn.Module, split, config: TrainConfig, device: torch.device, limit: int | None = None) -> float:
    """Accuracy on ``split`` (its first ``limit`` examples), summed over every process's share."""
    was_training = model.training
    model.eval()
    correct = total = 0
    lengths = split.lengths if config.trim else None
    for index in eval_batches(len(split), config.batch_size, _rank(), _world(), limit, lengths):
        batch = split.batch(index, device, config.trim)
        with _autocast(config, device):
            logits = forward(model, batch)
        correct += int((logits.argmax(-1) == batch["labels"]).sum())
        total += len(index)
    counts = torch.tensor([correct, total], dtype=torch.float64, device=device)
    if _world() > 1:
        dist.all_reduce(counts)
    model.train(was_training)
    return float(counts[0] / counts[1])


def _autocast(config: TrainConfig, device: torch.device):
    if config.amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


# -- the loop --------------------------------------------------------------------------------------


class Stop:
    """Ctrl-C / SIGTERM ask the loop to stop at the next step boundary (a second Ctrl-C stops at once)."""

    def __init__(self):
        self.requested = False

    def __call__(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    @contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def train(config: TrainConfig, *, resume: bool = False, force: bool = False, on_step=None, stream=None) -> dict:
    """Train ``config`` to its last step (or until interrupted) and return the run's result:
    {"key", "status" ("done" | "interrupted"), "step", "best_step", "valid_accuracy" (best),
    "test_accuracy" (of the best checkpoint; None until done), "history", ...}.

    ``on_step(step, metrics)`` is called after every optimizer step. ``resume`` continues from the
    run's checkpoint; ``force`` starts over, discarding it. Without either, an existing checkpoint
    is an error (a finished run is reported as it is)."""
    _check(config)
    stream = stream or sys.stderr
    owns_group = _init_distributed(config)
    try:
        return _train(config, resume=resume, force=force, on_step=on_step, stream=stream)
    finally:
        if owns_group:
            dist.destroy_process_group()


def _train(config: TrainConfig, *, resume: bool, force: bool, on_step, stream) -> dict:
    device = _device(config)
    rank, world, main = _rank(), _world(), _rank() == 0
    run_dir = Path(config.out) / config.key()
    checkpoint_path, best_path = run_dir / "checkpoint.pt", run_dir / "best.pt"
    if (run_dir / "result.json").exists() and not force:
        result = json.loads((run_dir / "result.json").read_text())
        if main:
            print(f"{config.key()}: already done (test accuracy {result['test_accuracy']:.4f}); --force trains it again", file=stream)
        return result
    if checkpoint_path.exists() and not (resume or force):
        raise ValueError(f"{run_dir} holds a checkpoint of this run; pass --resume to continue it or --force to start over")
    _barrier()
    if force and main:
        for path in (checkpoint_path, best_path, run_dir / "result.json"):
            path.unlink(missing_ok=True)
    _barrier()

    data = load_data(config)
    torch.manual_seed(config.seed)  # the same initial weights in every process
    model = build_model(config, data).to(device)
    optimizer, schedule = make_optimizer(model, config)
    state = {"step": 0, "best_accuracy": -1.0, "best_step": None, "history": [], "train_seconds": 0.0,
             "running": {"loss": 0.0, "correct": 0, "seen": 0}}
    torch.manual_seed(config.seed * 1_000_003 + 1 + rank)  # each process's own dropout / random features
    if checkpoint_path.exists() and resume:
        state = _restore(checkpoint_path, model, optimizer, schedule, device, rank, world)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(run_dir / "config.json", json.dumps(dataclasses.asdict(config), indent=1, default=list) + "\n")
    store = _open_store(config) if main else None
    record = _record_base(config, data, device, world)
    # positions at the task's full length, as LRA counts them: trimmed padding shows as a higher rate
    tokens_per_step = config.batch_size * data.length * (2 if data.pairs else 1)

    def report(status: str, **extra) -> None:
        if store is not None:
            store.put_run(config.key(), task=config.task, name=config.mechanism, status=status, step=state["step"],
                          valid_accuracy=max(state["best_accuracy"], 0.0), test_accuracy=extra.pop("test_accuracy", None),
                          record={**record, **_summary(state, tokens_per_step), **extra})

    try:
        status = _loop(config, data, model, optimizer, schedule, state, device, run_dir, on_step, stream, report, tokens_per_step)
        if status == "interrupted":
            report("interrupted")
            return {"key": config.key(), "status": "interrupted", "step": state["step"], **_summary(state, tokens_per_step)}
        # the test accuracy of the best validation checkpoint
        model.load_state_dict(torch.load(run_dir / "best.pt", map_location=device, weights_only=True))
        test_accuracy = evaluate(model, data.splits["test"], config, device)
        result = {"key": config.key(), "status": "done", "step": state["step"], "test_accuracy": test_accuracy,
                  **_summary(state, tokens_per_step), **record}
        if main:
            print(f"done: best validation {state['best_accuracy']:.4f} at step {state['best_step']}; its test accuracy "
                  f"{test_accuracy:.4f}", file=stream, flush=True)
            write_atomic(run_dir / "result.json", json.dumps(result, indent=1, default=list) + "\n")
            report("done", test_accuracy=test_accuracy)
        _barrier()
        return result
    except Exception as err:
        report("failed", message=f"{type(err).__name__}: {err}")
        raise
    finally:
        if store is not None:
            store.close()


def _loop(config, data, model, optimizer, schedule, state, device, run_dir, on_step, stream, report, tokens_per_step) -> str:
    """Steps from ``state["step"]`` to ``config.steps``, validating and checkpointing; "done" or "interrupted"."""
    rank, world, main = _rank(), _world(), _rank() == 0
    # find_unused_parameters: a mechanism's options may leave a parameter out of a step's graph, and
    # DDP without it then raises at the next step (it expects a gradient for each). Every registered
    # mechanism at its defaults uses all of its parameters; the flag costs one extra walk of the graph.
    trained = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True) if world > 1 else model
    progress = _Progress(config, state["step"], stream) if main else None
    train_split, running = data.splits["train"], state["running"]
    stop = Stop()
    started = time.perf_counter() - state["train_seconds"]
    model.train()
    with stop.installed():
        while state["step"] < config.steps:
            step = state["step"]
            index = train_batch(len(train_split), config.batch_size, step, config.seed, rank, world,
                                train_split.lengths, config.length_pool)
            batch = train_split.batch(index, device, config.trim)
            with _autocast(config, device):
                logits = forward(trained, batch)
                loss = F.cross_entropy(logits.float(), batch["labels"])
                total = loss + config.aux_weight * auxiliary_loss(model)
            total.backward()
            if config.clip_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] = step = step + 1
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(f"{config.key()}: the loss became {value} at step {step}; lower the lr or set clip_norm")
            running["loss"] += value
            running["correct"] += int((logits.argmax(-1) == batch["labels"]).sum())
            running["seen"] += len(batch["labels"])
            state["train_seconds"] = time.perf_counter() - started
            metrics = {"loss": value, "lr": schedule.get_last_lr()[0], "tokens_per_s": tokens_per_step * step / state["train_seconds"]}
            if on_step is not None:
                on_step(step, metrics)
            if progress:
                progress.show(step, metrics, state)
            stopping = _agree(stop.requested, device)
            if step % config.eval_every == 0 or step == config.steps:
                accuracy = evaluate(model, data.splits["valid"], config, device, config.eval_limit)
                steps_since = step - (state["history"][-1][0] if state["history"] else 0)
                train_accuracy = running["correct"] / max(1, running["seen"])
                state["history"].append([step, round(running["loss"] / steps_since, 5), round(train_accuracy, 5), round(accuracy, 5)])
                running.update(loss=0.0, correct=0, seen=0)
                if accuracy > state["best_accuracy"]:
                    state["best_accuracy"], state["best_step"] = accuracy, step
                    if main:
                        replace_atomically(run_dir / "best.pt", lambda tmp: torch.save(model.state_dict(), tmp))
                _save(run_dir / "checkpoint.pt", model, optimizer, schedule, state, config, device, world)
                if progress:
                    progress.validated(step, accuracy, state)
                report("running")
            if stopping and state["step"] < config.steps:
                _save(run_dir / "checkpoint.pt", model, optimizer, schedule, state, config, device, world)
                if progress:
                    progress.close(f"interrupted at step {step}: checkpoint written; continue with --resume")
                return "interrupted"
    if progress:
        progress.close()
    return "done"


def _summary(state: dict, tokens_per_step: int) -> dict:
    seconds = state["train_seconds"]
    return {"best_step": state["best_step"], "valid_accuracy": max(state["best_accuracy"], 0.0), "history": state["history"],
            "train_seconds": round(seconds, 3), "steps_per_s": state["step"] / seconds if seconds else None,
            "tokens_per_s": tokens_per_step * state["step"] / seconds if seconds else None, "peak_bytes": _peak_bytes()}


def _record_base(config: TrainConfig, data: TaskData, device: torch.device, world: int) -> dict:
    from attnzoo.bench.sweep import machine, versions

    return {"config": json.loads(json.dumps(dataclasses.asdict(config), default=list)), "preset": config.preset, "world_size": world,
            "device": device.type, "length": data.length, "data": str(data.path), "machine": machine(), "versions": versions(),
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _peak_bytes() -> int:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return int(torch.cuda.max_memory_allocated())
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def _save(path: Path, model, optimizer, schedule, state: dict, config: TrainConfig, device, world: int) -> None:
    """The whole state (every process's random state included), written by process 0 atomically."""
    rng = {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if device.type == "cuda" else None}
    if world > 1:
        gathered = [None] * world
        dist.all_gather_object(gathered, rng)
    else:
        gathered = [rng]
    if _rank() == 0:
        payload = {"format": CHECKPOINT_FORMAT, "key": config.key(), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                   "schedule": schedule.state_dict(), "state": state, "rng": gathered}
        replace_atomically(path, lambda tmp: torch.save(payload, tmp))
    _barrier()


def _restore(path: Path, model, optimizer, schedule, device, rank: int, world: int) -> dict:
    payload = torch.load(path, map_location=device, weights_only=False)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a checkpoint this attnzoo reads (format {payload.get('format')!r}); --force starts over")
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    schedule.load_state_dict(payload["schedule"])
    rng = payload["rng"]
    if len(rng) == world:  # same process count: each process's random stream goes on where it stopped
        torch.set_rng_state(rng[rank]["cpu"])
        if rng[rank]["cuda"] is not None and device.type == "cuda":
            torch.cuda.set_rng_state(rng[rank]["cuda"])
    elif rank == 0:
        print(f"note: checkpoint written by {len(rng)} processes, resumed by {world}: fresh dropout streams", file=sys.stderr)
    return payload["state"]


def _open_store(config: TrainConfig):
    if config.store is None:
        return None
    from attnzoo.bench.store import Store

    return Store(config.store)


class _Progress:
    """One line: step, loss, learning rate, tokens/s, best validation, ETA (rewritten on a terminal;
    a line per ``log_every`` steps elsewhere)."""

    def __init__(self, config: TrainConfig, start_step: int, stream):
        self.config, self.stream, self.start_step = config, stream, start_step
        self.live = hasattr(stream, "isatty") and stream.isatty()
        self.t0 = time.perf_counter()

    def show(self, step: int, metrics: dict, state: dict) -> None:
        if not self.live and step % self.config.log_every:
            return
        done = step - self.start_step
        eta = (time.perf_counter() - self.t0) / done * (self.config.steps - step) if done else 0.0
        best = f"best valid {state['best_accuracy']:.3f} @{state['best_step']}" if state["best_step"] else "best valid -"
        text = (f"{self.config.key()} step {step}/{self.config.steps} loss {metrics['loss']:.4f} lr {metrics['lr']:.2e} "
                f"{metrics['tokens_per_s']:,.0f} tok/s {best} ETA {_clock(eta)}")
        print(("\r" + text.ljust(120)) if self.live else text, end="" if self.live else "\n", file=self.stream, flush=True)

    def validated(self, step: int, accuracy: float, state: dict) -> None:
        text = f"step {step}: valid accuracy {accuracy:.4f} (best {state['best_accuracy']:.4f} at step {state['best_step']})"
        print(("\r" + text.ljust(120) + "\n") if self.live else text, end="", file=self.stream, flush=True)
        if not self.live:
            print(file=self.stream, flush=True)

    def close(self, text: str = "") -> None:
        if self.live:
            print(file=self.stream, flush=True)
        if text:
            print(text, file=self.stream, flush=True)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# -- processes -------------------------------------------------------------------------------------


def _init_distributed(config: TrainConfig) -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1); True when this call created it."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return False
    cuda = _device(config).type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    if not cuda:  # share the cores among the processes on this machine
        local = int(os.environ.get("LOCAL_WORLD_SIZE", dist.get_world_size()))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    return True


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _barrier() -> None:
    if _world() > 1:
        dist.barrier()


def _agree(flag: bool, device) -> bool:
    """True in every process when any process was asked to stop, so all stop at the same step."""
    if _world() == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def _device(config: TrainConfig) -> torch.device:
    if config.device == "auto":
        return torch.device(f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu")
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but torch sees no CUDA device on this machine; use --device cpu")
    return torch.device("cuda", torch.cuda.current_device()) if config.device == "cuda" else torch.device("cpu")


def evaluate_run(run_dir: str | Path, *, split: str = "test", checkpoint: str = "best") -> str:
    """The accuracy of a run's best (or last) checkpoint on ``split``, as one line."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise ValueError(f"{run_dir} is not a run folder (no config.json); runs live in {DEFAULT_OUT}/<key>")
    fields = json.loads((run_dir / "config.json").read_text())
    fields["betas"] = tuple(fields["betas"])
    config = TrainConfig(**fields)
    path = run_dir / ("best.pt" if checkpoint == "best" else "checkpoint.pt")
    if not path.exists():
        raise ValueError(f"{run_dir} has no {path.name} yet: it has not validated once")
    device = _device(config)
    data = load_data(config)
    torch.manual_seed(config.seed)
    model = build_model(config, data).to(device)
    state = torch.load(path, map_location=device, weights_only=checkpoint == "best")
    model.load_state_dict(state if checkpoint == "best" else state["model"])
    accuracy = evaluate(model, data.splits[split], config, device)
    return f"{config.key()}: {checkpoint} checkpoint, {split} accuracy {accuracy:.4f} ({len(data.splits[split])} examples)"


# -- command line ----------------------------------------------------------------------------------


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", help="listops, text, retrieval, image, pathfinder32, pathx")
    parser.add_argument("--mechanism", "-m", default="full", help="registry name (attnzoo list)")
    parser.add_argument("--preset", default="small", choices=list(PRESETS),
                        help="lra: LRA's released configs; small: 2 layers, width 64; cpu: small on a CPU budget")
    parser.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE", help="mechanism option, repeatable")
    parser.add_argument("--data-opt", action="append", default=[], metavar="KEY=VALUE",
                        help="task data option (as attnzoo lra prepare --opt)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="any training setting, e.g. --set steps=500 --set lr=1e-3 (see TrainConfig)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"])
    parser.add_argument("--data", default=None, help="data folder (default $ATTNZOO_DATA or attnzoo-out/lra)")
    parser.add_argument("--out", default=None, help=f"runs folder (default {DEFAULT_OUT})")
    parser.add_argument("--store", default=None, help=f"results store (default {DEFAULT_STORE}); 'none' for no store")
    parser.add_argument("--resume", action="store_true", help="continue the run from its checkpoint")
    parser.add_argument("--force", action="store_true", help="start the run over, discarding its checkpoint")


def config_from_args(args) -> TrainConfig:
    from attnzoo.cli import parse_options

    overrides = parse_options(args.set)
    for name in ("seed", "device", "data", "out"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.store is not None:
        overrides["store"] = None if args.store == "none" else args.store
    if args.opt:
        overrides["options"] = parse_options(args.opt)
    if args.data_opt:
        overrides["data_options"] = parse_options(args.data_opt)
    for name in ("betas",):
        if name in overrides:
            overrides[name] = tuple(overrides[name])
    return make_config(args.task, args.mechanism, args.preset, **overrides)


def main(argv: list[str] | None = None) -> int:
    """``python -m attnzoo.lra.train`` (what torchrun starts); also ``attnzoo lra train``."""
    parser = argparse.ArgumentParser(prog="attnzoo lra train", description=__doc__.split("\n\n")[0])
    add_train_arguments(parser)
    args = parser.parse_args(argv)
    try:
        result = train(config_from_args(args), resume=args.resume, force=args.force)
    except ValueError as err:
        print(f"attnzoo: error: {err}", file=sys.stderr)
        return 2
    return 0 if result["status"] in ("done", "interrupted") else 1


if __name__ == "__main__":
    sys.exit(main())
