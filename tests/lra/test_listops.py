"""ListOps: every label re-evaluated by an independent stack machine over the tokens; the LRA rules
on lengths, depth, arguments and operators; de-duplication; seeding."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from attnzoo.lra.listops import END, OPERATORS, VOCAB, ListOpsConfig, describe, generate

SMALL = ListOpsConfig(min_length=20, max_length=120, train=300, valid=40, test=40, seed=3)


def stack_value(seq: list[str]) -> int:
    """Evaluate the token sequence left to right with an explicit stack (no tree, no recursion)."""
    stack: list = []
    for token in seq:
        if token in OPERATORS:
            stack.append(token)
        elif token == END:
            args = []
            while not isinstance(stack[-1], str):
                args.append(stack.pop())
            op = stack.pop()
            args.sort()
            if op == "[MAX":
                stack.append(args[-1])
            elif op == "[MIN":
                stack.append(args[0])
            elif op == "[MED":  # median of the sorted list, truncated toward zero
                mid = len(args) // 2
                stack.append(args[mid] if len(args) % 2 else (args[mid - 1] + args[mid]) // 2)
            else:
                stack.append(sum(args) % 10)
        else:
            stack.append(int(token))
    assert len(stack) == 1, "a well-formed sequence leaves one value"
    return stack[0]


def depth_and_args(seq: list[str]) -> tuple[int, int]:
    """(deepest operator nesting, most arguments of one operator), read off the brackets."""
    depth = deepest = widest = 0
    counts: list[int] = []
    for token in seq:
        if token in OPERATORS:
            if counts:
                counts[-1] += 1
            depth += 1
            deepest = max(deepest, depth)
            counts.append(0)
        elif token == END:
            widest = max(widest, counts.pop())
            depth -= 1
        elif counts:
            counts[-1] += 1
    return deepest, widest


@pytest.fixture(scope="module")
def data():
    return generate(SMALL)


def test_every_label_is_the_value_an_independent_evaluator_finds(data):
    for split in data.values():
        for seq, label in split:
            assert stack_value(seq) == label


def test_the_lra_rules_hold_for_every_sequence(data):
    for split in data.values():
        for seq, _ in split:
            assert SMALL.min_length < len(seq) < SMALL.max_length
            assert set(seq) <= set(VOCAB[1:])
            deepest, widest = depth_and_args(seq)
            assert 1 <= deepest <= SMALL.max_depth - 1  # operators below the maximum depth only
            assert widest <= SMALL.max_args
            assert seq.count(END) == sum(seq.count(op) for op in OPERATORS)


def test_split_sizes_and_no_sequence_twice(data):
    assert {k: len(v) for k, v in data.items()} == {"train": 300, "valid": 40, "test": 40}
    texts = [" ".join(seq) for split in data.values() for seq, _ in split]
    assert len(set(texts)) == len(texts)


def test_seeded():
    config = dataclasses.replace(SMALL, train=30, valid=5, test=5)
    assert generate(config) == generate(config)
    assert generate(config) != generate(dataclasses.replace(config, seed=4))


def test_every_operator_and_label_occurs_and_the_majority_class_is_modest(data):
    tokens = Counter(t for seq, _ in data["train"] for t in seq)
    assert all(tokens[op] > 0 for op in OPERATORS)
    labels = Counter(label for _, label in data["train"])
    assert set(labels) == set(range(10)) and max(labels.values()) / 300 < 0.35


def test_full_lra_lengths():
    config = ListOpsConfig(train=20, valid=0, test=0, seed=1)
    (split,) = [generate(config)["train"]]
    assert all(500 < len(seq) < 2000 and stack_value(seq) == label for seq, label in split)
    assert "20 sequences; length min" in describe(split) and "majority class" in describe(split)


@pytest.mark.parametrize(
    "change,match",
    [(dict(max_args=1), "max_args"), (dict(op_prob=1.0), "op_prob"), (dict(min_length=10, max_length=11), "no length lies")],
    ids=["args", "prob", "lengths"],
)
def test_bad_configs_are_refused(change, match):
    with pytest.raises(ValueError, match=match):
        generate(dataclasses.replace(SMALL, **change))
