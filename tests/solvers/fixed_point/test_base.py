"""The iteration driver: per-sample stopping, lowest-residual iterate, NaN handling, unrolling."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from implicit_jax.solvers import Anderson, Broyden, FixedPointIteration, StopCriterion, iterate


def scaled_map(rates):
    """Sample i contracts at rate rates[i] towards 1: z <- 1 + rate * (z - 1)."""
    return lambda z: 1.0 + rates[:, None] * (z - 1.0)


def test_each_sample_stops_on_its_own_residual_and_keeps_its_result():
    rates = jnp.array([0.1, 0.8])
    z, info, _ = iterate(
        FixedPointIteration(), scaled_map(rates), jnp.zeros((2, 3)), StopCriterion(tol=1e-6, max_steps=200, stop_mode="abs")
    )
    assert bool(info.converged.all())
    # the fast sample finished after a few steps, so its residual is not driven down to the slow one's
    assert float(info.abs_residual[0]) <= 1e-6 and float(info.abs_residual[0]) > 1e-12
    np.testing.assert_allclose(z, 1.0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("solver", [FixedPointIteration(), FixedPointIteration(damping=0.7), Anderson(), Broyden()])
def test_a_finished_sample_returns_what_it_would_alone(solver):
    # the fast sample finishes long before the slow one; the batch goes on iterating (its z may
    # keep moving), but its result and residuals are those of its own solve, step for step
    rates = jnp.array([0.2, 0.9])
    fn = lambda z: jnp.tanh(z @ (0.5 * jnp.eye(3, dtype=z.dtype) + 0.1).T + 1.0) * rates[:, None] + (1.0 - rates[:, None]) * 0.3
    criterion = StopCriterion(tol=1e-9, max_steps=300)
    z, info, _ = iterate(solver, fn, jnp.zeros((2, 3), jnp.float64), criterion)
    rate0 = rates[:1]
    fn0 = lambda z: jnp.tanh(z @ (0.5 * jnp.eye(3, dtype=z.dtype) + 0.1).T + 1.0) * rate0[:, None] + (1.0 - rate0[:, None]) * 0.3
    z0, info0, _ = iterate(solver, fn0, jnp.zeros((1, 3), jnp.float64), criterion)
    assert bool(info.converged.all()) and int(info.steps) > int(info0.steps)
    np.testing.assert_allclose(z[0], z0[0], rtol=1e-12)
    np.testing.assert_allclose(info.abs_residual[0], info0.abs_residual[0], rtol=1e-9)


def test_nan_sample_is_reported_and_does_not_poison_others():
    def fn(z):
        bad = jnp.array([False, True])[:, None]
        return jnp.where(bad & (jnp.abs(z) > 0.5), jnp.nan, 0.5 * z + 1.0)

    z, info, _ = jax.jit(lambda z0: iterate(Anderson(), fn, z0, StopCriterion(tol=1e-6, max_steps=100)))(jnp.zeros((2, 4)))
    assert bool(info.converged[0]) and not bool(info.converged[1])
    assert not np.isfinite(float(info.abs_residual[1]))
    np.testing.assert_allclose(z[0], 2.0, atol=1e-5)
    assert int(info.steps) < 100  # the NaN sample stopped iterating instead of running to max_steps


def test_unconverged_solve_reports_steps_and_returns_lowest_residual_iterate():
    fn = lambda z: -1.05 * z + 1.0  # diverging oscillation: the start is the best point
    z, info, _ = iterate(FixedPointIteration(), fn, jnp.zeros((1, 2)), StopCriterion(tol=1e-8, max_steps=7))
    assert int(info.steps) == 7 and int(info.num_fn_evals) == 8
    assert not bool(info.converged[0])
    np.testing.assert_allclose(z, 0.0)


@pytest.mark.slow
@pytest.mark.parametrize("solver", [FixedPointIteration(), Anderson(), Broyden()])
def test_unrolled_iteration_agrees_with_while_loop(solver):
    w = 0.5 * jnp.eye(3) + 0.1
    fn = lambda z: jnp.tanh(z @ w.T + 1.0)
    criterion = StopCriterion(tol=1e-6, max_steps=40)
    z1, info1, _ = iterate(solver, fn, jnp.zeros((2, 3)), criterion)
    z2, info2, _ = iterate(solver, fn, jnp.zeros((2, 3)), criterion, unrolled=True)
    chex.assert_trees_all_close(z1, z2, rtol=1e-6)
    assert int(info1.steps) == int(info2.steps)


def test_stop_criterion_validates():
    with pytest.raises(ValueError, match="stop_mode must be one of"):
        StopCriterion(stop_mode="max")
    with pytest.raises(ValueError, match="max_steps"):
        StopCriterion(max_steps=0)
    with pytest.raises(ValueError, match="tol"):
        StopCriterion(tol=-1.0)
