"""FLOATER: its RK4 integrator against exact ODE solutions (matrix exponential, closed forms), its
encoding against the sinusoidal one it starts from and against the integral of time-only dynamics,
the prefix property, gradients through the integrator, and the eval-mode cache."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import attnzoo.positional.floater as floater_module
from attnzoo.positional.floater import FloaterPosition, rk4
from attnzoo.positional.sinusoidal import sinusoidal_positions


def linear_system(seed=0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(4, 4, generator=gen, dtype=torch.float64) * 0.8
    y0 = torch.randn(4, generator=gen, dtype=torch.float64)
    return a, y0


@pytest.mark.parametrize("steps", [8, 16, 32], ids=lambda s: f"steps{s}")
def test_rk4_on_a_linear_ode_matches_the_matrix_exponential(steps):
    """dy/dt = A y from t0 = 0.3 to 1.3: y(t) = exp(A (t − t0)) y0 at every step, to RK4's accuracy."""
    a, y0 = linear_system()
    dt = 1.0 / steps
    traj = rk4(lambda t, y: a @ y, y0, 0.3, dt, steps)
    assert traj.shape == (steps + 1, 4)
    want = torch.stack([torch.linalg.matrix_exp(a * (k * dt)) @ y0 for k in range(steps + 1)])
    error = (traj - want).abs().max()
    assert error < 0.06 * dt**4, f"error {error:.2e} above the O(dt^4) bound {0.06 * dt**4:.2e} (seen: ~0.03·dt^4)"
    assert traj[0].equal(y0)


def final_error(f, y0, t0, t1, steps, exact):
    return (rk4(f, y0, t0, (t1 - t0) / steps, steps)[-1] - exact).abs().max().item()


@pytest.mark.parametrize(
    "name", ["linear-A", "time-dependent"], ids=["dy=Ay", "dy=cos(t)y"]
)
def test_rk4_is_fourth_order(name):
    """Halving the step divides the global error by ~2^4 = 16 (the time-dependent case also checks
    that the stages see t_k, t_k + dt/2, t_k + dt: a wrong stage time drops the order)."""
    if name == "linear-A":
        a, y0 = linear_system(1)
        f, t0, t1 = (lambda t, y: a @ y), 0.0, 2.0
        exact = torch.linalg.matrix_exp(a * 2.0) @ y0
    else:
        y0 = torch.tensor([1.0, -2.0], dtype=torch.float64)
        f, t0, t1 = (lambda t, y: math.cos(t) * y), 0.5, 3.5
        exact = y0 * math.exp(math.sin(t1) - math.sin(t0))
    errors = [final_error(f, y0, t0, t1, s, exact) for s in (10, 20, 40)]
    for coarse, fine in zip(errors, errors[1:]):
        assert 12.0 < coarse / fine < 20.0, f"errors {errors}: ratio {coarse / fine:.1f}, expected ~16"


def floater(dim=8, perturb=True, seed=0, **options):
    torch.manual_seed(seed)
    m = FloaterPosition(dim, **options).double()
    if perturb:  # leave the zero init, so the dynamics are not trivial
        with torch.no_grad():
            nn.init.normal_(m.dynamics.out.weight, std=0.5)
            nn.init.normal_(m.dynamics.out.bias, std=0.5)
    return m


@pytest.mark.parametrize("n", [1, 6, 40], ids=lambda n: f"N{n}")
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_zero_dynamics_is_exactly_the_sinusoidal_encoding(n, training):
    """Fresh (last layer zero): h ≡ 0, p ≡ 0, so FLOATER adds exactly sinusoidal_positions."""
    m = floater(dim=10, perturb=False, steps_per_position=3).train(training)
    x = torch.randn(2, n, 10, dtype=torch.float64)
    want = x + sinusoidal_positions(n, 10, dtype=torch.float64)
    torch.testing.assert_close(m(x), want, atol=0, rtol=0)
    torch.testing.assert_close(m(x, mask=torch.rand(2, n) > 0.5), want, atol=0, rtol=0)  # mask is ignored


def test_time_only_dynamics_integrate_to_the_quadrature_of_h():
    """With W₁'s p-columns zero, h depends on t only and p(t_i) = ∫₀^{t_i} h(τ) dτ: compared with a
    fine trapezoid rule; this pins the time scale t_i = i·dt and the sub-steps."""
    m = floater(dim=6, dt=0.25, steps_per_position=8)
    with torch.no_grad():
        m.dynamics.inp.weight.zero_()
        m.dynamics.time.mul_(3.0)
    n = 9
    got = m.encoding(n) - sinusoidal_positions(n, 6, dtype=torch.float64)
    tau = torch.linspace(0.0, (n - 1) * 0.25, 200 * (n - 1) + 1, dtype=torch.float64)
    with torch.no_grad():
        h = torch.stack([m.dynamics(float(t), torch.zeros(6, dtype=torch.float64)) for t in tau])  # [T, C]
    want = torch.stack([torch.trapezoid(h[: 200 * i + 1], tau[: 200 * i + 1], dim=0) for i in range(n)])
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)  # the trapezoid rule's own error ~1e-7
    assert got[-1].abs().max() > 0.1


def test_encoding_of_a_position_does_not_depend_on_n():
    for training in (True, False):
        m = floater().train(training)
        long = m.encoding(30).detach()
        for n in (1, 7, 29):
            torch.testing.assert_close(m.encoding(n).detach(), long[:n], atol=0, rtol=0)


def test_gradients_flow_through_the_integrator():
    """gradcheck of the encoding against finite differences in every dynamics parameter, and the
    layer's gradient reaches each of them."""
    m = floater(dim=4, hidden=3, steps_per_position=2)
    names, params = zip(*m.named_parameters())
    zeros = torch.zeros(1, 5, 4, dtype=torch.float64)

    def encoding_of(*values):  # the layer on x = 0, i.e. its encoding, as a function of the parameters
        return torch.func.functional_call(m, dict(zip(names, values)), (zeros,))

    inputs = [p.detach().clone().requires_grad_(True) for p in params]
    assert torch.autograd.gradcheck(encoding_of, inputs, eps=1e-6, atol=1e-7)
    x = torch.randn(2, 12, 4, dtype=torch.float64)
    m(x).square().sum().backward()
    for name, p in zip(names, params):
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_a_fresh_layer_learns_too():
    """At init the last layer is zero, yet it gets a gradient (the hidden activations are not zero)."""
    m = floater(perturb=False)
    m(torch.randn(2, 10, 8, dtype=torch.float64)).square().sum().backward()
    assert m.dynamics.out.weight.grad.abs().sum() > 0 and m.dynamics.out.bias.grad.abs().sum() > 0


def test_eval_cache_reuses_the_trajectory_and_invalidates_when_parameters_change(monkeypatch):
    calls = []
    original = floater_module.rk4
    monkeypatch.setattr(floater_module, "rk4", lambda *a, **k: calls.append(1) or original(*a, **k))
    m = floater().eval()
    x = torch.randn(2, 20, 8, dtype=torch.float64)
    with torch.no_grad():
        y = m(x)
        assert len(calls) == 1
        torch.testing.assert_close(m(x), y, atol=0, rtol=0)
        torch.testing.assert_close(m(x[:, :7]), y[:, :7], atol=0, rtol=0)  # a prefix of the cached trajectory
        assert len(calls) == 1
        m.dynamics.inp.weight.add_(0.3)  # what an optimizer step does: in place, the version counter moves
        y2 = m(x)
        assert len(calls) == 2 and (y2 - y).abs().max() > 1e-3
        m.load_state_dict({k: v + 0.1 for k, v in m.state_dict().items()})
        y3 = m(x)
        assert len(calls) == 3
    torch.testing.assert_close(y3, m.train()(x).detach(), atol=0, rtol=0)  # the cache holds what training computes
    calls.clear()
    m.train()
    m(x), m(x)
    assert len(calls) == 2, "training recomputes every call"
    m.eval()
    m(x).sum().backward()  # eval with gradients wanted: recomputed, the gradient arrives
    assert len(calls) == 3 and m.dynamics.out.weight.grad.abs().sum() > 0


def test_defaults_and_protocol():
    m = FloaterPosition(16)
    assert m.level == "input" and "2003.09229" in m.paper
    assert m.dt == 0.1 and m.steps_per_position == 1 and m.dynamics.inp.out_features == 16
    assert m(torch.randn(1, 3, 16)).dtype == torch.float32


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: FloaterPosition(7), "even"),
        (lambda: FloaterPosition(8, dt=0.0), "dt"),
        (lambda: FloaterPosition(8, steps_per_position=0), "steps_per_position"),
        (lambda: FloaterPosition(8, hidden=0), "hidden"),
        (lambda: FloaterPosition(8)(torch.randn(2, 5, 6)), "C=8"),
        (lambda: rk4(lambda t, y: y, torch.ones(2), 0.0, 0.1, -1), "steps"),
    ],
    ids=["odd-dim", "dt0", "substeps0", "hidden0", "wrong-width", "rk4-negative-steps"],
)
def test_errors_name_the_fix(call, match):
    with pytest.raises(ValueError, match=match):
        call()
