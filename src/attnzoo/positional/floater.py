"""FLOATER: position encodings from a continuous dynamical system (Liu, Yu, Dhillon & Hsieh 2020,
"Learning to Encode Position for Transformer with Continuous Dynamical Model"). arxiv.org/abs/2003.09229

Positions are samples of a trajectory p(t) that follows a learned ODE, dp/dt = h_θ(t, p), p(0) = 0,
taken at t_i = i·dt. The encoding added to the embeddings is e_i = s_i + p(t_i), s the sinusoidal
encoding (the initial encoding: with h ≡ 0, FLOATER is exactly the sinusoidal encoding). h_θ is a
small MLP whose last layer starts at zero, so a fresh FLOATER *is* the sinusoidal encoding and
learns to depart from it.

The ODE is solved here by a fixed-step classic Runge–Kutta (RK4) integrator, ``steps_per_position``
sub-steps per position, not an adaptive black-box solver: results are deterministic, gradients are
exact backpropagation through the steps. Cost: O(N·steps_per_position) *sequential* steps of the
MLP on one [C] vector (no batch axis: the trajectory is shared by every sequence), in training on
every call. In eval mode without gradients the trajectory is cached (keyed on the parameters'
storage and version counters) and a shorter N reuses a prefix of a longer one.

Differences from the paper: positions are injected once at the input (the paper re-injects a
shared trajectory in every block); h_θ is a one-hidden-layer tanh MLP on [p; t] (our choice of
network, smooth so RK4 keeps its order); time runs t_i = i·dt with dt = 0.1 by default (our choice:
a unit dt would make p move ten times further per position and push t, an MLP input, into the
thousands at LRA lengths).
n positions, c width, u hidden width of h_θ, s integration steps.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from attnzoo.core.checks import check_int
from attnzoo.positional.sinusoidal import sinusoidal_positions

DEFAULT_DT = 0.1  # time between consecutive positions: t_i = i·dt


def rk4(f: Callable[[float, Tensor], Tensor], y0: Tensor, t0: float, dt: float, steps: int) -> Tensor:
    """Classic fourth-order Runge–Kutta, fixed step. f(t, y) -> dy/dt, y0 any shape.
    Returns the trajectory [steps + 1, *y0.shape]: y(t0), y(t0 + dt), ..., y(t0 + steps·dt).

    Equivalent to: t_k = t0 + k·dt;  k1 = f(t_k, y_k), k2 = f(t_k + dt/2, y_k + dt/2·k1),
    k3 = f(t_k + dt/2, y_k + dt/2·k2), k4 = f(t_k + dt, y_k + dt·k3);
    y_{k+1} = y_k + dt/6·(k1 + 2·k2 + 2·k3 + k4). Global error O(dt⁴). Differentiable in y0 and in
    whatever f closes over (plain autograd through every step).
    """
    check_int(steps, "steps", minimum=0, where="rk4")
    ys, y = [y0], y0
    for step in range(steps):
        t = t0 + step * dt
        k1 = f(t, y)
        k2 = f(t + dt / 2, y + dt / 2 * k1)
        k3 = f(t + dt / 2, y + dt / 2 * k2)
        k4 = f(t + dt, y + dt * k3)
        y = y + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        ys.append(y)
    return torch.stack(ys)


class FloaterDynamics(nn.Module):
    """h_θ(t, p) = W₂ tanh(W₁ p + w_t·t + b₁) + b₂: p [C], t a float -> [C]. W₂, b₂ start at zero,
    so h ≡ 0 at init. (W₁ and w_t together are one linear layer on [p; t].)"""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.inp = nn.Linear(dim, hidden)  # W₁, b₁ (torch's default init)
        self.time = nn.Parameter(torch.empty(hidden).uniform_(-1.0, 1.0) / math.sqrt(dim + 1))  # w_t, like a column of W₁
        self.out = nn.Linear(hidden, dim)  # W₂, b₂
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, t: float, p: Tensor) -> Tensor:
        return self.out(torch.tanh(self.inp(p) + t * self.time))


def floater_trajectory(dynamics: Callable[[float, Tensor], Tensor], p0: Tensor, n: int, *, dt: float, steps_per_position: int) -> Tensor:
    """p0 [C] -> [N, C]: p(t_0), ..., p(t_{N−1}), t_i = i·dt, from dp/dt = dynamics(t, p), p(t_0) = p0.

    Equivalent to: rk4(dynamics, p0, 0.0, dt / steps_per_position, (N − 1)·steps_per_position)[::steps_per_position].
    Row i does not depend on N (the same steps are taken in the same order up to t_i).
    """
    if n == 0:
        return p0.new_zeros(0, p0.shape[-1])
    h = dt / steps_per_position
    return rk4(dynamics, p0, 0.0, h, (n - 1) * steps_per_position)[::steps_per_position]


class FloaterPosition(nn.Module):
    """Input-level encoding: x [B, N, C] -> x + (sinusoidal_positions(N, C) + p(t_0..t_{N−1})). Any N.

    Args:
        dim: C, even (the sinusoidal initial encoding pairs sin and cos).
        max_len: accepted for the common signature and ignored: the ODE is integrated as far as asked.
        hidden: width of h_θ's hidden layer; None means dim.
        dt: time between consecutive positions (t_i = i·dt), default 0.1.
        steps_per_position: RK4 sub-steps per position (step dt / steps_per_position), default 1.
        base: the sinusoidal encoding's base.

    Note:
        ``mask`` is accepted and ignored, as for the sinusoidal encoding: positions are indices 0..N-1,
        padding included. Training recomputes the trajectory every call (gradients flow through the
        integrator); eval mode without gradients caches it (see the module docstring).
    """

    level = "input"
    paper = (
        "Liu, Yu, Dhillon & Hsieh 2020, Learning to Encode Position for Transformer with Continuous Dynamical Model, "
        "arxiv.org/abs/2003.09229"
    )

    def __init__(
        self,
        dim: int,
        max_len: int | None = None,
        *,
        hidden: int | None = None,
        dt: float = DEFAULT_DT,
        steps_per_position: int = 1,
        base: float = 10000.0,
    ):
        super().__init__()
        check_int(dim, "dim", minimum=2, where="floater")
        if dim % 2:
            raise ValueError(f"floater: its initial encoding is sinusoidal, so dim must be even, got dim={dim}")
        if max_len is not None:
            check_int(max_len, "max_len", minimum=1, where="floater")
        hidden = dim if hidden is None else hidden
        check_int(hidden, "hidden", minimum=1, where="floater")
        check_int(steps_per_position, "steps_per_position", minimum=1, where="floater")
        for name, value in (("dt", dt), ("base", base)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"floater: {name} must be a finite number > 0, got {value!r}")
        self.dim, self.dt, self.steps_per_position, self.base = dim, float(dt), steps_per_position, float(base)
        self.dynamics = FloaterDynamics(dim, hidden)
        self._cache: tuple[tuple, Tensor] | None = None  # (key, trajectory [N_cached, C]), eval mode only

    def _trajectory(self, n: int) -> Tensor:
        ref = self.dynamics.out.weight
        p0 = ref.new_zeros(self.dim)
        return floater_trajectory(self.dynamics, p0, n, dt=self.dt, steps_per_position=self.steps_per_position)

    def positions(self, n: int) -> Tensor:
        """[N, C]: p(t_0), ..., p(t_{N−1}) in the parameters' dtype, from the cache when allowed."""
        params = list(self.parameters())
        if self.training or (torch.is_grad_enabled() and any(p.requires_grad for p in params)):
            return self._trajectory(n)
        key = (self.dt, self.steps_per_position, tuple((p.device, p.dtype, p.data_ptr(), p._version) for p in params))
        if self._cache is None or self._cache[0] != key or self._cache[1].shape[0] < n:
            self._cache = (key, self._trajectory(n))
        return self._cache[1][:n]

    def encoding(self, n: int) -> Tensor:
        """[N, C]: e_i = s_i + p(t_i), in the parameters' dtype."""
        ref = self.dynamics.out.weight
        return sinusoidal_positions(n, self.dim, base=self.base, device=ref.device, dtype=ref.dtype) + self.positions(n)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x [B, N, C] -> x + encoding(N); ``mask`` is ignored (see the class note)."""
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != self.dim:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"floater: x must be [B, N, C] with C={self.dim}, got {got}")
        return x + self.encoding(x.shape[1]).to(x.dtype)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, dt={self.dt}, steps_per_position={self.steps_per_position}"
