"""Positional encodings, by the level they act at (each class's ``level``):

- "input": added to the embeddings once, ``forward(x [B, N, C], mask=None)``: sinusoidal, learned, floater, rnn;
- "rotary": rotates q and k, ``forward(q, k)``: rotary;
- "score": adds ``bias(q, k, scale)`` to the attention scores (and optionally ``value_term(weights)``): relative;
- "distance": a score bias that depends on |i − j| alone (``slopes``; ``bias`` for dense scores): alibi.
"""

from attnzoo.positional.alibi import ALiBi, alibi_bias, alibi_slopes
from attnzoo.positional.floater import FloaterDynamics, FloaterPosition, floater_trajectory, rk4
from attnzoo.positional.learned import LearnedPosition
from attnzoo.positional.relative import RelativePosition, relative_bias, relative_index, relative_values
from attnzoo.positional.rnn import RNNPosition
from attnzoo.positional.rotary import Rotary, rotary, rotary_angles
from attnzoo.positional.sinusoidal import SinusoidalPosition, sinusoidal_positions

# Every encoding by name, the one table (the registry, the CLI and the classifier read it).
ENCODINGS = {
    "sinusoidal": SinusoidalPosition,
    "learned": LearnedPosition,
    "relative": RelativePosition,
    "rotary": Rotary,
    "alibi": ALiBi,
    "floater": FloaterPosition,
    "rnn": RNNPosition,
}

__all__ = [
    "ENCODINGS",
    "ALiBi",
    "FloaterDynamics",
    "FloaterPosition",
    "LearnedPosition",
    "RNNPosition",
    "RelativePosition",
    "Rotary",
    "SinusoidalPosition",
    "alibi_bias",
    "alibi_slopes",
    "floater_trajectory",
    "relative_bias",
    "relative_index",
    "relative_values",
    "rk4",
    "rotary",
    "rotary_angles",
    "sinusoidal_positions",
]
