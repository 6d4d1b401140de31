"""What ``attnzoo.describe`` reports about a mechanism, declared once beside its module."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MechanismInfo:
    paper: str  # authors, year and link
    complexity: str  # time and memory in N, as the code achieves them
    causal: bool  # honours causal=True
    mask: bool  # honours a [B, N] padding mask
    variable_length: bool = True  # any N works (False: bounded by max_len)
    qk: bool = True  # compares queries with keys (rotary positions apply); False for mixers without q·k
    scores: bool = False  # forms explicit per-pair scores (score biases apply: relative, ALiBi)
    distance: bool = False  # forms scores block by block and adds a bias of |i − j| to them (ALiBi)

    def honours(self, level: str) -> bool:
        """Whether an encoding acting at ``level`` can act here: "input" everywhere, "rotary" where
        queries meet keys, "score" where explicit per-pair scores exist, "distance" there and where
        blocked scores take a bias of |i − j|."""
        return (level == "input" or (level == "rotary" and self.qk) or (level == "score" and self.scores)
                or (level == "distance" and (self.scores or self.distance)))
