"""ListOps as the Long Range Arena generates it (Tay et al. 2021, arxiv.org/abs/2011.04006; the task
is Nangia & Bowman 2018, arxiv.org/abs/1804.06028): nested lists of operations on the digits 0–9,
whose value (0–9) is the label.

Rules (LRA's generator): operators MAX, MIN, MED (median, truncated to an int) and SM (sum mod 10);
below the maximum depth a node is an operator with probability 0.25, else a digit; an operator takes
2..max_args arguments; max depth 10, max args 10. A sequence is kept when 500 < length < 2000
tokens, where a digit is one token and an operator two (itself and its closing bracket), and only
once (de-duplicated across the splits). Seeded: the same config gives the same data.
"""

from __future__ import annotations

import random
import statistics
from collections import Counter
from dataclasses import dataclass

OPERATORS = ("[MAX", "[MIN", "[MED", "[SM")
END = "]"
VOCAB = ("<pad>", *(str(d) for d in range(10)), *OPERATORS, END)  # token id = index; 0 pads
TOKEN_ID = {token: i for i, token in enumerate(VOCAB)}


@dataclass
class ListOpsConfig:
    max_depth: int = 10
    max_args: int = 10
    op_prob: float = 0.25  # below max_depth, a node is an operator with this probability
    min_length: int = 500  # kept when min_length < length < max_length (tokens)
    max_length: int = 2000
    train: int = 96_000
    valid: int = 2_000
    test: int = 2_000
    seed: int = 0


class _TooLong(Exception):
    """A tree grew past the longest length kept: stop building it."""


def random_tree(rng: random.Random, config: ListOpsConfig, depth: int = 1, budget: list[int] | None = None):
    """One tree: a digit (int), or (operator, [arguments]). ``budget`` [tokens left] aborts a tree
    that would be too long to keep (raises _TooLong), which saves most of the generation time."""
    budget = [config.max_length] if budget is None else budget
    if depth >= config.max_depth or rng.random() > config.op_prob:
        budget[0] -= 1
        if budget[0] < 0:
            raise _TooLong
        return rng.randrange(10)
    budget[0] -= 2
    if budget[0] < 0:
        raise _TooLong
    n_args = rng.randint(2, config.max_args)
    args = [random_tree(rng, config, depth + 1, budget) for _ in range(n_args)]
    return rng.choice(OPERATORS), args


def tokens(tree) -> list[str]:
    """The tree as tokens: [MAX 2 [MIN 4 7 ] 0 ] (no parentheses: LRA's input strips them)."""
    if isinstance(tree, int):
        return [str(tree)]
    op, args = tree
    out = [op]
    for arg in args:
        out += tokens(arg)
    out.append(END)
    return out


def value(tree) -> int:
    """The tree's value, by recursion on the tree."""
    if isinstance(tree, int):
        return tree
    op, args = tree
    values = [value(a) for a in args]
    if op == "[MAX":
        return max(values)
    if op == "[MIN":
        return min(values)
    if op == "[MED":
        return int(statistics.median(values))
    return sum(values) % 10


def generate(config: ListOpsConfig) -> dict[str, list[tuple[list[str], int]]]:
    """{"train", "valid", "test"}: lists of (tokens, label), de-duplicated across the splits."""
    _check(config)
    rng = random.Random(config.seed)
    wanted = config.train + config.valid + config.test
    seen: set[str] = set()
    kept: list[tuple[list[str], int]] = []
    while len(kept) < wanted:
        try:
            tree = random_tree(rng, config)
        except _TooLong:
            continue
        seq = tokens(tree)
        if not config.min_length < len(seq) < config.max_length:
            continue
        text = " ".join(seq)
        if text in seen:
            continue
        seen.add(text)
        kept.append((seq, value(tree)))
    return {"train": kept[: config.train], "valid": kept[config.train : config.train + config.valid],
            "test": kept[config.train + config.valid :]}


def describe(split: list[tuple[list[str], int]]) -> str:
    """Length and label distributions of a split, one paragraph."""
    lengths = sorted(len(s) for s, _ in split)
    labels = Counter(label for _, label in split)
    q = statistics.quantiles(lengths, n=4) if len(lengths) > 1 else [lengths[0]] * 3
    majority = max(labels.values()) / len(split)
    return (
        f"{len(split)} sequences; length min {lengths[0]}, quartiles {q[0]:.0f} / {q[1]:.0f} / {q[2]:.0f}, max {lengths[-1]}; "
        f"labels {', '.join(f'{k}: {labels[k] / len(split):.1%}' for k in range(10))} (majority class {majority:.1%})"
    )


def _check(config: ListOpsConfig) -> None:
    for name in ("max_depth", "max_args", "min_length", "max_length", "train", "valid", "test"):
        value_ = getattr(config, name)
        if not isinstance(value_, int) or value_ < (2 if name == "max_args" else 0 if name in ("train", "valid", "test") else 1):
            raise ValueError(f"listops: {name} must be a positive int (max_args >= 2), got {value_!r}")
    if not 0 < config.op_prob < 1:
        raise ValueError(f"listops: op_prob must be in (0, 1), got {config.op_prob}")
    if config.min_length + 1 >= config.max_length:
        raise ValueError(f"listops: no length lies strictly between min_length={config.min_length} and max_length={config.max_length}")
