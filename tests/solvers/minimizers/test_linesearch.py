import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from implicit_jax.solvers import LBFGS, StopCriterion, minimize
from implicit_jax.solvers.minimizers.linesearch import Trial, cubic_minimizer, wolfe_line_search

C1, C2 = 1e-4, 0.9


def search(fn, w, direction, alpha0=1.0, max_trials=20, approx_eps=1e-6, unrolled=False):
    vg = jax.value_and_grad(fn)
    value, grad = vg(w)
    slope = jnp.vdot(direction, grad)
    trial, found, evals = wolfe_line_search(
        vg,
        w,
        value,
        grad,
        direction,
        slope,
        jnp.asarray(alpha0, w.dtype),
        c1=C1,
        c2=C2,
        approx_eps=approx_eps,
        max_trials=max_trials,
        unrolled=unrolled,
    )
    return trial, bool(found), int(evals), value, slope


def assert_weak_wolfe(trial, value, slope):
    assert float(trial.value) <= float(value + C1 * trial.alpha * slope)
    assert float(trial.slope) >= C2 * float(slope)


def test_unit_step_on_a_well_scaled_quadratic_is_accepted_at_once():
    fn = lambda w: 0.5 * jnp.sum(w**2)
    w = jnp.array([3.0, -1.0], jnp.float64)
    trial, found, evals, value, slope = search(fn, w, -w)
    assert found and evals == 1 and float(trial.alpha) == 1.0
    assert_weak_wolfe(trial, value, slope)
    chex.assert_trees_all_close(trial.grad, jax.grad(fn)(trial.w))


@pytest.mark.parametrize("scale, expect", [(100.0, "bracket"), (0.001, "expand")])
def test_too_long_steps_are_bracketed_and_too_short_ones_expanded(scale, expect):
    a = jnp.diag(jnp.array([1.0, 10.0], jnp.float64))
    fn = lambda w: 0.5 * w @ a @ w + 0.25 * jnp.sum(w**4)
    w = jnp.array([1.0, 1.0], jnp.float64)
    trial, found, evals, value, slope = search(fn, w, -scale * jax.grad(fn)(w))
    assert found and evals > 1
    assert_weak_wolfe(trial, value, slope)
    assert (float(trial.alpha) < 1.0) if expect == "bracket" else (float(trial.alpha) > 1.0)


def test_cubic_step_is_exact_on_a_cubic_and_safeguarded():
    phi = lambda a: (a - 0.3) ** 2 * (a + 2.0)  # local minimiser at 0.3
    dphi = jax.grad(phi)
    point = lambda a: Trial(jnp.float64(a), phi(jnp.float64(a)), dphi(jnp.float64(a)), None, None)
    np.testing.assert_allclose(cubic_minimizer(point(0.0), point(1.0)), 0.3, rtol=1e-12)
    np.testing.assert_allclose(cubic_minimizer(point(1.0), point(0.0)), 0.3, rtol=1e-12)  # ends in either order
    # the minimiser at 0.3 lies outside the middle 80% of [0.27, 1]: bisection instead
    np.testing.assert_allclose(cubic_minimizer(point(0.27), point(1.0)), 0.635, rtol=1e-12)


def test_rounding_noise_in_the_value_is_handled_by_the_approximate_wolfe_test():
    # Near a minimiser the value's rounding error (modelled by a deterministic 1e-7 ripple the
    # gradient does not see) exceeds the true decrease (~2e-9): Armijo rejects the exact step
    # for ever, the approximate Wolfe test (slopes stay accurate) accepts it.
    offset = 3e-5
    ripple = lambda w: 1e-7 * jnp.cos(jnp.pi * (jnp.sum(w) - 4.0) / (4 * offset))  # max at the minimiser
    fn = lambda w: 0.5 * jnp.sum((w - 1.0) ** 2) + 1.0 + jax.lax.stop_gradient(ripple(w))
    w = jnp.full(4, 1.0 + offset, jnp.float64)
    trial, found, evals, _, _ = search(fn, w, -(w - 1.0))
    assert found and evals == 1
    chex.assert_trees_all_close(trial.w, jnp.ones(4), atol=1e-12)
    _, found_strict, _, _, _ = search(fn, w, -(w - 1.0), approx_eps=0.0)
    assert not found_strict


def test_a_failed_search_never_moves_uphill_or_onto_nan():
    fn = lambda w: jnp.sum(w**2) + jnp.sum(jnp.log(2.0 - w))  # NaN for w > 2
    w = jnp.array([1.0], jnp.float64)
    trial, found, evals, value, _ = search(fn, w, -jax.grad(fn)(w) * 1e6, max_trials=2)
    assert not found and evals == 2
    assert np.isfinite(float(trial.value)) and float(trial.value) <= float(value)


def test_nan_region_is_backed_out_of():
    fn = lambda w: jnp.sum((w - 1.5) ** 2) - jnp.sum(jnp.log(2.0 - w))  # NaN for w > 2
    w = jnp.array([0.0], jnp.float64)
    trial, found, _, value, slope = search(fn, w, jnp.array([1.0], jnp.float64), alpha0=5.0)
    assert found and float(trial.w[0]) < 2.0
    assert_weak_wolfe(trial, value, slope)


def test_unrolled_search_equals_while_loop_search():
    fn = lambda w: jnp.sum(jnp.cosh(w)) + 0.1 * jnp.sum(w**4)
    w = jnp.array([2.0, -1.0, 0.5], jnp.float64)
    direction = -50.0 * jax.grad(fn)(w)
    a, b = search(fn, w, direction), search(fn, w, direction, unrolled=True)
    chex.assert_trees_all_close(a[0], b[0])
    assert a[1:3] == b[1:3]


def test_lbfgs_converges_in_float32_on_an_ill_conditioned_logistic_regression():
    # float32 with an absolute gradient tolerance near rounding: the old Armijo backtracking
    # never converged here (every step spent all its trials), the Wolfe search does in few evaluations
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(400, 30)) * np.logspace(0, 2, 30), jnp.float32)
    y = jnp.asarray(rng.random(400) < 0.5, jnp.float32)
    fn = lambda w: jnp.mean(jax.nn.softplus(x @ w) - y * (x @ w)) + 1e-4 * jnp.sum(w**2)
    _w, info, _ = minimize(
        LBFGS(), jax.value_and_grad(fn), jnp.zeros(30, jnp.float32), StopCriterion(tol=1e-5, max_steps=500, stop_mode="abs")
    )
    assert bool(info.converged), info
    assert int(info.num_grad_evals) <= 2 * int(info.steps) + 1
