"""The LRA trainer: the schedule and data order it promises, one step per task, the test accuracy of
the best validation checkpoint, resume equality after an interrupt, errors, and DDP with 2 processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from attnzoo.bench.store import Store
from attnzoo.lra.data import eval_batches, open_task, train_batch
from attnzoo.lra.prepare import prepare
from attnzoo.lra.train import build_model, learning_rate_factor, make_config, train

LISTOPS = dict(min_length=20, max_length=64, train=96, valid=24, test=24, seed=1)
TINY = dict(dim=16, depth=1, heads=2, ffn_mult=2, batch_size=8, lr=3e-3, warmup=2, log_every=1000)


def tiny(tmp_path, task="listops", mechanism="full", data_options=None, **changes):
    where = dict(data=str(tmp_path / "data"), out=str(tmp_path / "runs"), store=str(tmp_path / "results.sqlite"))
    options = LISTOPS if task == "listops" and data_options is None else (data_options or {})
    return make_config(task, mechanism, "small", **{**TINY, "steps": 4, "eval_every": 2, **where, "data_options": options, **changes})


# -- the schedule and the data order ---------------------------------------------------------------


@pytest.mark.parametrize(
    "step, warmup, steps, factor",
    [(0, 4, 10, 0.25), (3, 4, 10, 1.0), (4, 4, 10, 1.0), (7, 4, 10, 0.5), (10, 4, 10, 0.0), (0, 0, 10, 1.0), (5, 0, 10, 0.5)],
)
def test_learning_rate_warms_up_linearly_then_decays_linearly_to_zero(step, warmup, steps, factor):
    assert learning_rate_factor(step, warmup, steps) == pytest.approx(factor)


def test_an_epoch_of_batches_covers_each_example_once_and_shards_split_the_global_batch():
    size, batch = 50, 8  # 6 batches per epoch, 2 examples dropped
    epoch = np.concatenate([train_batch(size, batch, step, seed=3) for step in range(6)])
    assert len(epoch) == 48 == len(set(epoch.tolist())) and set(epoch.tolist()) <= set(range(size))
    for step in (0, 5, 6, 13):
        whole = train_batch(size, batch, step, seed=3)
        shards = [train_batch(size, batch, step, seed=3, rank=r, world=2) for r in range(2)]
        assert sorted(np.concatenate(shards).tolist()) == sorted(whole.tolist())
        assert not set(shards[0].tolist()) & set(shards[1].tolist())
    assert not np.array_equal(train_batch(size, batch, 0, seed=3), train_batch(size, batch, 6, seed=3))  # a new epoch, a new order
    assert np.array_equal(train_batch(size, batch, 7, seed=3), train_batch(size, batch, 7, seed=3))
    with pytest.raises(ValueError, match="divide evenly among 3 processes"):
        train_batch(size, batch, 0, seed=3, rank=0, world=3)


@pytest.mark.parametrize("size, batch, pool", [(50, 4, 3), (64, 8, 8), (40, 4, 20)])  # last pool short, pools exact, one pool
def test_length_pools_keep_the_epoch_and_give_batches_of_similar_length(size, batch, pool):
    lengths = np.random.default_rng(0).integers(1, 1000, size)
    per_epoch = size // batch
    steps = [train_batch(size, batch, step, seed=3, lengths=lengths, length_pool=pool) for step in range(per_epoch)]
    plain = np.concatenate([train_batch(size, batch, step, seed=3) for step in range(per_epoch)])
    assert sorted(np.concatenate(steps).tolist()) == sorted(plain.tolist())  # the same examples as the plain epoch
    for first in range(0, per_epoch, pool):  # a pool's batches are consecutive runs of its examples sorted by length
        runs = sorted((lengths[b].min(), lengths[b].max()) for b in steps[first:first + pool])
        assert all(high <= next_low for (_, high), (next_low, _) in zip(runs, runs[1:]))
        members = np.concatenate(steps[first:first + pool])
        assert sorted(members.tolist()) == sorted(plain[first * batch:(first + len(runs)) * batch].tolist())
    step = per_epoch + 1  # the next epoch, sharded over 2 processes
    whole = train_batch(size, batch, step, seed=3, lengths=lengths, length_pool=pool)
    shards = [train_batch(size, batch, step, seed=3, rank=r, world=2, lengths=lengths, length_pool=pool) for r in range(2)]
    assert sorted(np.concatenate(shards).tolist()) == sorted(whole.tolist())
    with pytest.raises(ValueError, match="with the lengths given"):
        train_batch(size, batch, 0, seed=3, length_pool=pool)


def test_a_trimmed_batch_keeps_every_real_token_and_gives_the_same_logits_for_masked_full_attention(tmp_path):
    config = tiny(tmp_path)
    data = open_task(prepare("listops", root=config.data, **LISTOPS)[0])
    split = data.splits["train"]
    index = np.array([5, 1, 9, 30])
    padded, trimmed = split.batch(index), split.batch(index, trim=16)
    longest = int(split.lengths[index].max())
    assert trimmed["tokens"].shape[1] == -(-longest // 16) * 16 < padded["tokens"].shape[1]
    assert torch.equal(trimmed["tokens"], padded["tokens"][:, :trimmed["tokens"].shape[1]])
    assert torch.equal(trimmed["mask"].sum(1), torch.as_tensor(split.lengths[np.sort(index)], dtype=torch.long))
    assert torch.equal(trimmed["labels"], padded["labels"])
    model = build_model(config, data).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(trimmed["tokens"], trimmed["mask"]), model(padded["tokens"], padded["mask"]),
                                   rtol=1e-5, atol=1e-5)
    assert split.batch(index, trim=10_000)["tokens"].shape == padded["tokens"].shape  # never longer than the split


def test_evaluation_shards_cover_each_example_exactly_once():
    shards = [np.concatenate(list(eval_batches(23, 4, rank=r, world=3))) for r in range(3)]
    assert sorted(np.concatenate(shards).tolist()) == list(range(23))
    lengths = np.random.default_rng(1).integers(1, 100, 23)
    for r in range(3):  # by length: the same share, sorted
        share = np.concatenate(list(eval_batches(23, 4, rank=r, world=3, lengths=lengths)))
        assert sorted(share.tolist()) == sorted(shards[r].tolist()) and np.all(np.diff(lengths[share]) >= 0)
    assert np.concatenate(list(eval_batches(23, 4, limit=10))).tolist() == list(range(10))


# -- training --------------------------------------------------------------------------------------


def _reference_accuracy(model, split) -> float:
    """Accuracy by the plainest loop: one example at a time, its real tokens only."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(len(split)):
            tokens = torch.as_tensor(np.asarray(split.tokens[i], dtype=np.int64))[None]
            mask = torch.arange(tokens.shape[1])[None] < int(split.lengths[i])
            correct += int(model(tokens, mask).argmax(-1).item() == int(split.labels[i]))
    return correct / len(split)


@pytest.mark.parametrize("trim", [dict(), dict(trim=8, length_pool=3)], ids=["padded", "trimmed"])
def test_a_run_reports_the_test_accuracy_of_its_best_validation_checkpoint(tmp_path, trim):
    config = tiny(tmp_path, steps=6, eval_every=2, **trim)
    result = train(config)
    assert result["status"] == "done" and result["step"] == 6
    history = result["history"]
    assert [h[0] for h in history] == [2, 4, 6]
    best = max(range(len(history)), key=lambda i: (history[i][3], -i))  # the first best
    assert result["best_step"] == history[best][0] and result["valid_accuracy"] == pytest.approx(history[best][3], abs=1e-5)
    data = open_task(result["data"])
    model = build_model(config, data)
    model.load_state_dict(torch.load(tmp_path / "runs" / config.key() / "best.pt", weights_only=True))
    assert result["test_accuracy"] == pytest.approx(_reference_accuracy(model, data.splits["test"]))
    with Store(config.store) as store:
        (run,) = store.runs()
    assert (run["key"], run["status"], run["step"], run["test_accuracy"]) == (config.key(), "done", 6, result["test_accuracy"])
    assert json.loads((tmp_path / "runs" / config.key() / "result.json").read_text())["test_accuracy"] == result["test_accuracy"]


def test_the_test_split_is_scored_with_the_weights_of_the_best_validation_not_the_last(tmp_path, monkeypatch):
    import attnzoo.lra.train as trainer

    scripted = iter([0.25, 0.75, 0.5])  # validation at steps 2, 4, 6: the best is step 4
    seen = {}
    real = trainer.evaluate

    def evaluate(model, split, config, device, limit=None):
        if len(split) == LISTOPS["test"] and split is not trainer_data["valid"]:
            seen["weights"] = {k: v.clone() for k, v in model.state_dict().items()}
            return real(model, split, config, device, limit)
        return next(scripted)

    trainer_data = {}
    real_open = trainer.open_task

    def open_task(path):
        data = real_open(path)
        trainer_data["valid"] = data.splits["valid"]
        return data

    monkeypatch.setattr(trainer, "evaluate", evaluate)
    monkeypatch.setattr(trainer, "open_task", open_task)
    config = tiny(tmp_path, steps=6, eval_every=2)
    result = train(config)
    assert result["best_step"] == 4 and result["valid_accuracy"] == 0.75
    run = tmp_path / "runs" / config.key()
    best = torch.load(run / "best.pt", weights_only=True)
    last = torch.load(run / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(seen["weights"][k], best[k]) for k in best)
    assert not all(torch.equal(last[k], best[k]) for k in best)


def _interrupt_at(step_to_stop: int):
    def on_step(step, metrics):
        if step == step_to_stop:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends: the loop stops at the step boundary

    return on_step


@pytest.mark.parametrize(
    "mechanism, options", [("full", {}), ("performer", {"nb_features": 8, "redraw_every": 1})], ids=["full", "performer"]
)
def test_interrupt_then_resume_reaches_the_weights_of_an_uninterrupted_run(tmp_path, mechanism, options):
    changes = dict(steps=6, eval_every=4, dropout=0.3, options=options)  # dropout and random features: the random state matters
    whole = tiny(tmp_path / "a", mechanism=mechanism, **changes)
    assert train(whole)["status"] == "done"
    parted = tiny(tmp_path / "b", mechanism=mechanism, **changes)
    first = train(parted, on_step=_interrupt_at(3))
    assert (first["status"], first["step"]) == ("interrupted", 3)
    with pytest.raises(ValueError, match="pass --resume to continue it or --force to start over"):
        train(parted)
    assert train(parted, resume=True)["status"] == "done"
    a = torch.load(tmp_path / "a" / "runs" / whole.key() / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "runs" / parted.key() / "checkpoint.pt", weights_only=False)
    assert a["model"].keys() == b["model"].keys()
    for name, value in a["model"].items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, b["model"][name]), name
        else:  # a module's extra state: e.g. the feature generator and its pass count
            assert value.keys() == b["model"][name].keys() and all(_same(value[k], b["model"][name][k]) for k in value), name
    assert a["state"]["history"] == b["state"]["history"]


def _same(x, y) -> bool:
    return torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y


def test_a_finished_run_is_not_trained_again_unless_forced(tmp_path):
    config = tiny(tmp_path)
    first = train(config)
    again = train(config)
    assert again["test_accuracy"] == first["test_accuracy"] and again["started_at"] == first["started_at"]
    assert train(config, force=True)["started_at"] >= first["started_at"]


def _fashion(tmp_path) -> dict:
    from tests.lra.test_image import idx_files, write_folder

    return dict(path=str(write_folder(tmp_path / "fashion", idx_files(gz=True))), valid=4)


def _austen(tmp_path, **counts) -> dict:
    from tests.lra.test_prepare import TEXT_OPTIONS, fake_austen

    return dict(source=fake_austen(tmp_path / "austen"), **TEXT_OPTIONS, **counts)


TASK_DATA = {  # task -> tmp_path -> its data options (small sources written in tmp_path)
    "listops": lambda tmp_path: LISTOPS,
    "text": _austen,
    "retrieval": lambda tmp_path: _austen(tmp_path, train=16, valid=8, test=8),
    "image": _fashion,
    "pathfinder32": lambda tmp_path: dict(train=16, valid=8, test=8, seed=2),
    "pathx": lambda tmp_path: dict(train=4, valid=2, test=2, seed=2),
}
MECHANISM = {"pathx": ("local", {"window": 32})}  # 16,384 tokens: exact attention would need GBs for one step


@pytest.mark.parametrize("task", list(TASK_DATA))
def test_one_training_step_per_task_moves_the_weights(tmp_path, task):
    mechanism, options = MECHANISM.get(task, ("full", {}))
    config = tiny(tmp_path, task=task, mechanism=mechanism, options=options, data_options=TASK_DATA[task](tmp_path), steps=1,
                  eval_every=1, batch_size=2 if task == "pathx" else 4)
    result = train(config)
    assert result["status"] == "done" and result["step"] == 1 and np.isfinite(result["history"][0][1])
    data = open_task(result["data"])
    torch.manual_seed(config.seed)
    initial = build_model(config, data).state_dict()
    trained = torch.load(tmp_path / "runs" / config.key() / "checkpoint.pt", weights_only=False)["model"]
    moved = [name for name in initial if not torch.equal(initial[name], trained[name])]
    assert "head.weight" in moved or "head.2.weight" in moved


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: make_config("listops", "full", "huge"), "unknown preset 'huge'"),
        (lambda: make_config("sudoku", "full", "small"), "has no task 'sudoku'"),
        (lambda: make_config("listops", "fulll", "small"), "unknown mechanism 'fulll'"),
        (lambda: make_config("listops", "full", "small", stepz=3), r"no training setting\(s\) \['stepz'\]"),
        (lambda: make_config("listops", "full", "small", dim=30, heads=4), "multiple of heads"),
        (lambda: make_config("listops", "full", "small", steps=0), "steps must be a positive int"),
        (lambda: make_config("listops", "full", "small", trim=-8), r"trim must be an int >= 0 \(0: off\)"),
    ],
    ids=["preset", "task", "mechanism", "setting", "heads", "steps", "trim"],
)
def test_bad_configs_are_refused_with_the_fix(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_the_command_trains_and_reports_errors(tmp_path, capsys):
    from attnzoo.cli import main

    args = ["lra", "train", "listops", "-m", "local", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "r"), "--store", "none",
            "--set", "steps=2", "--set", "eval_every=2", "--set", "batch_size=8", "--set", "dim=16", "--set", "depth=1"]
    args += [f"--data-opt={k}={v}" for k, v in LISTOPS.items()] + ["--opt", "window=8"]
    assert main(args) == 0
    assert "done: best validation" in capsys.readouterr().err
    (run,) = (tmp_path / "r").iterdir()
    result = json.loads((run / "result.json").read_text())
    assert main(["lra", "eval", str(run)]) == 0
    assert f"best checkpoint, test accuracy {result['test_accuracy']:.4f} ({LISTOPS['test']} examples)" in capsys.readouterr().out
    assert main(["lra", "eval", str(tmp_path)]) == 2 and "is not a run folder" in capsys.readouterr().err
    assert main(["lra", "train", "listops", "--set", "lr"]) == 2 and "must look like KEY=VALUE" in capsys.readouterr().err


# -- data parallel ---------------------------------------------------------------------------------


def test_two_processes_reach_the_weights_of_one_with_the_same_global_batch(tmp_path):
    changes = dict(steps=3, eval_every=3, dropout=0.0, store=None)  # no dropout: the two runs may differ only by rounding
    single = tiny(tmp_path / "one", **changes)
    train(single)
    prepared = open_task(json.loads((tmp_path / "one" / "runs" / single.key() / "result.json").read_text())["data"]).path
    double = tiny(tmp_path / "two", **changes)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "attnzoo.lra.train",
               "listops", "--set", f"steps={changes['steps']}", "--set", f"eval_every={changes['eval_every']}", "--set", "dropout=0.0",
               "--store", "none", "--data", str(prepared.parent), "--out", str(tmp_path / "two" / "runs")]
    command += [f"--set={k}={v}" for k, v in TINY.items()] + [f"--data-opt={k}={v}" for k, v in LISTOPS.items()]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "two" / "runs" / double.key() / "result.json").read_text())
    assert result["world_size"] == 2
    a = torch.load(tmp_path / "one" / "runs" / single.key() / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "two" / "runs" / double.key() / "checkpoint.pt", weights_only=False)["model"]
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5, msg=name)
