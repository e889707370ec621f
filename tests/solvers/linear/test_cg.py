import chex
import jax.numpy as jnp
import numpy as np

from implicit_jax.solvers import conjugate_gradient


def _spd(n, seed=0, shift=0.1):
    a = np.random.default_rng(seed).normal(size=(n, n))
    return jnp.asarray(a @ a.T / n + shift * np.eye(n))


def test_solves_spd_system_to_tolerance():
    a = _spd(12)
    b = jnp.arange(12.0, dtype=jnp.float64)
    x, info = conjugate_gradient(lambda v: a @ v, b, jnp.zeros(12), tol=1e-12, max_steps=100)
    chex.assert_trees_all_close(x, jnp.linalg.solve(a, b), rtol=1e-9)
    assert bool(info.converged) and float(info.residual) <= 1e-12
    assert int(info.steps) <= 12 + 5  # n steps in exact arithmetic, a few more in floating point


def test_warm_start_at_the_solution_takes_no_step():
    a = _spd(6)
    b = jnp.ones(6, jnp.float64)
    _, info = conjugate_gradient(lambda v: a @ v, b, jnp.linalg.solve(a, b), tol=1e-8, max_steps=10)
    assert int(info.steps) == 1 and bool(info.converged)  # only the initial residual product


def test_reports_non_convergence_and_indefinite_matrices():
    a = _spd(30, shift=1e-4)
    b = jnp.ones(30, jnp.float64)
    _, info = conjugate_gradient(lambda v: a @ v, b, jnp.zeros(30), tol=1e-14, max_steps=2)
    assert not bool(info.converged) and float(info.residual) > 1e-14
    x, info = conjugate_gradient(lambda v: -v, b, jnp.zeros(30), tol=1e-8, max_steps=10)
    assert not bool(info.converged) and np.all(np.isfinite(x))
