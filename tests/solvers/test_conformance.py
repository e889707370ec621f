"""One contract, checked over every solver of every kind (in the spirit of optax's ``contrib/_common_test.py``).

Fixed-point solvers, linear solvers and minimisers each solve a small problem with a known
answer per sample, report it honestly (steps, residuals, converged; never converged on
NaN), run under ``jit``, and are frozen, hashable configurations usable as static arguments.
"""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from implicit_jax.solvers import (
    CG,
    GMRES,
    LBFGS,
    LINEAR_SOLVERS,
    SOLVERS,
    AbstractLinearSolver,
    Broyden,
    OptaxMinimizer,
    StopCriterion,
    iterate,
    minimize,
)
from implicit_jax.testing import contraction

FIXED_POINT_SOLVERS = [SOLVERS[name]() for name in sorted(SOLVERS)] + [Broyden(line_search=True)]
MINIMIZERS = [LBFGS(), LBFGS(memory=3), OptaxMinimizer(optax.sgd(0.2, momentum=0.5))]


def name_of(solver) -> str:
    """A test id that is the same in every worker (an Optax optimizer's repr holds addresses)."""
    return type(solver).__name__ if isinstance(solver, OptaxMinimizer) else repr(solver)


BATCH, N = 3, 5


def _affine_problem(dtype):
    """z = W z + b, one b per sample, ||W|| = 0.5: the fixed point is (I - W)^{-1} b."""
    w = contraction(jax.random.PRNGKey(0), N, 0.5, dtype)
    b = jax.random.normal(jax.random.PRNGKey(1), (BATCH, N), dtype)
    return w, b, jnp.linalg.solve(jnp.eye(N, dtype=dtype) - w, b.T).T


def _spd(dtype):
    a = jax.random.normal(jax.random.PRNGKey(2), (N, N), dtype)
    return a @ a.T / N + jnp.eye(N, dtype=dtype)


@pytest.mark.slow
@pytest.mark.parametrize("solver", FIXED_POINT_SOLVERS, ids=name_of)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_fixed_point_solvers_converge_per_sample_under_jit(solver, dtype):
    w, b, expected = _affine_problem(dtype)
    criterion = StopCriterion(tol=1e-5 if dtype == jnp.float32 else 1e-10, max_steps=200)
    solve = jax.jit(lambda b: iterate(solver, lambda z: z @ w.T + b, jnp.zeros_like(b), criterion)[:2])
    z, info = solve(b)
    assert z.dtype == dtype and info.abs_residual.shape == info.converged.shape == (BATCH,)
    assert bool(jnp.all(info.converged)) and 1 <= int(info.steps) <= criterion.max_steps
    assert int(info.num_fn_evals) >= int(info.steps) + 1
    chex.assert_trees_all_close(
        z, expected, rtol=1e-4 if dtype == jnp.float32 else 1e-8, atol=1e-4 if dtype == jnp.float32 else 1e-9
    )


@pytest.mark.slow
@pytest.mark.parametrize("solver", FIXED_POINT_SOLVERS, ids=name_of)
def test_fixed_point_solvers_isolate_a_nan_sample_and_never_call_it_converged(solver):
    w, b, expected = _affine_problem(jnp.float64)
    b = b.at[1, 0].set(jnp.nan)
    z, info, _ = iterate(solver, lambda z: z @ w.T + b, jnp.zeros_like(b), StopCriterion(tol=1e-10, max_steps=200))
    np.testing.assert_array_equal(np.asarray(info.converged), [True, False, True])
    chex.assert_trees_all_close(z[jnp.array([0, 2])], expected[jnp.array([0, 2])], rtol=1e-8, atol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LINEAR_SOLVERS))
@pytest.mark.parametrize("stop_mode", ["abs", "rel"])
def test_linear_solvers_solve_spd_systems_and_report_true_residuals(name, stop_mode):
    solver = LINEAR_SOLVERS[name]()
    assert isinstance(solver, AbstractLinearSolver) and solver.name == name
    a = _spd(jnp.float64)
    # CG treats b as one system, GMRES each row: both see a (batch, n) right-hand side here
    b = jax.random.normal(jax.random.PRNGKey(3), (BATCH, N), jnp.float64)
    matvec = lambda v: v @ a.T
    criterion = StopCriterion(tol=1e-10, max_steps=50, stop_mode=stop_mode)
    x, info = jax.jit(lambda b: solver.solve(matvec, b, jnp.zeros_like(b), criterion))(b)
    chex.assert_trees_all_close(x, jnp.linalg.solve(a, b.T).T, rtol=1e-8, atol=1e-10)
    assert bool(jnp.all(info.converged)) and 1 <= int(info.steps) <= BATCH * N + 1
    # GMRES reports one residual per row; CG one for the whole right-hand side
    true_residual = jnp.linalg.norm(b - matvec(x), axis=None if name == "cg" else -1)
    chex.assert_trees_all_close(info.abs_residual, true_residual, rtol=1e-3, atol=1e-12)


@pytest.mark.parametrize("name", sorted(set(LINEAR_SOLVERS) - {"dense"}))  # a direct solve: no steps to cap
def test_linear_solvers_report_a_capped_solve_as_unconverged(name):
    a = _spd(jnp.float64)
    b = jax.random.normal(jax.random.PRNGKey(3), (BATCH, N), jnp.float64)
    _, info = LINEAR_SOLVERS[name]().solve(lambda v: v @ a.T, b, jnp.zeros_like(b), StopCriterion(tol=1e-14, max_steps=1))
    assert not bool(jnp.all(info.converged))


@pytest.mark.slow
@pytest.mark.parametrize("minimizer", MINIMIZERS, ids=name_of)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_minimizers_find_the_minimum_of_a_quadratic_under_jit(minimizer, dtype):
    a = _spd(dtype)
    c = jnp.arange(1.0, N + 1.0, dtype=dtype)
    value_and_grad = jax.value_and_grad(lambda w: 0.5 * w @ a @ w - c @ w)
    tol = 1e-4 if dtype == jnp.float32 else 1e-9
    w, info, _ = jax.jit(lambda w0: minimize(minimizer, value_and_grad, w0, StopCriterion(tol=tol, max_steps=2000)))(
        jnp.zeros(N, dtype)
    )
    assert w.dtype == dtype and bool(info.converged)
    chex.assert_trees_all_close(w, jnp.linalg.solve(a, c), rtol=1e-3 if dtype == jnp.float32 else 1e-7)


def test_minimizers_never_report_a_nan_objective_as_converged():
    value_and_grad = jax.value_and_grad(lambda w: jnp.sum(w**2) + jnp.nan)
    for minimizer in MINIMIZERS:
        _, info, _ = minimize(minimizer, value_and_grad, jnp.ones(N), StopCriterion(tol=1e-6, max_steps=20))
        assert not bool(info.converged), minimizer


@pytest.mark.parametrize("solver", FIXED_POINT_SOLVERS + MINIMIZERS + [CG(), GMRES(restart=4)], ids=name_of)
def test_every_solver_is_a_frozen_hashable_configuration(solver):
    assert dataclasses.is_dataclass(solver) and hash(solver) == hash(dataclasses.replace(solver))
    with pytest.raises(dataclasses.FrozenInstanceError):
        solver.name = "other"
