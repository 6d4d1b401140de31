"""attnzoo lra prepare: the cached splits are the generator's sequences, memory-mapped; idempotent."""

from __future__ import annotations

import numpy as np
import pytest

from attnzoo.cli import main
from attnzoo.lra import listops
from attnzoo.lra.cache import load_split
from attnzoo.lra.prepare import prepare

OPTIONS = dict(min_length=20, max_length=80, train=50, valid=10, test=10, seed=2)


def test_the_cache_holds_the_generated_sequences_and_labels(tmp_path):
    path, text = prepare("listops", root=tmp_path, **OPTIONS)
    data = listops.generate(listops.ListOpsConfig(**OPTIONS))
    for split, rows in data.items():
        tokens, lengths, labels = load_split(path, split)
        assert isinstance(tokens, np.memmap) and tokens.shape == (len(rows), 80) and tokens.dtype == np.uint8
        for i, (seq, label) in enumerate(rows):
            assert [listops.VOCAB[t] for t in tokens[i, : lengths[i]]] == seq and labels[i] == label
            assert not tokens[i, lengths[i] :].any()  # zero padding
    assert "train: 50 sequences" in text and "majority class" in text


def test_prepare_is_idempotent_and_a_new_config_gets_its_own_folder(tmp_path):
    first, _ = prepare("listops", root=tmp_path, **OPTIONS)
    stamp = (first / "train.tokens.npy").stat().st_mtime_ns
    again, text = prepare("listops", root=tmp_path, **OPTIONS)
    assert again == first and "already prepared" in text and (first / "train.tokens.npy").stat().st_mtime_ns == stamp
    other, _ = prepare("listops", root=tmp_path, **{**OPTIONS, "seed": 3})
    assert other != first and sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, other.name])  # no temp leftovers


def test_the_command_and_its_errors(tmp_path, capsys):
    args = ["lra", "prepare", "listops", "--data", str(tmp_path)] + [f"--opt={k}={v}" for k, v in OPTIONS.items()]
    assert main(args) == 0 and "listops: prepared in" in capsys.readouterr().out
    assert main(["lra", "prepare", "listopz"]) == 2 and "unknown LRA task 'listopz'" in capsys.readouterr().err
    assert main(["lra", "prepare", "listops", "--opt", "depth=3"]) == 2 and "no option(s) ['depth']" in capsys.readouterr().err
    with pytest.raises(ValueError, match="holds no prepared task"):
        load_split(tmp_path, "train")


def test_pathfinder_is_cached_as_intensity_tokens(tmp_path):
    from attnzoo.lra import pathfinder

    options = dict(train=4, valid=2, test=2, seed=5)
    path, text = prepare("pathfinder32", root=tmp_path, **options)
    data = pathfinder.generate(pathfinder.pathfinder_config(32, **options))
    for split, (images, labels) in data.items():
        tokens, lengths, got_labels = load_split(path, split)
        assert tokens.shape == (len(images), 1024) and (lengths == 1024).all()
        np.testing.assert_array_equal(tokens, images.reshape(len(images), -1))
        np.testing.assert_array_equal(got_labels, labels)
    assert "pathfinder32: prepared in" in text
