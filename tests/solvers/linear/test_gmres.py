"""Per-sample restarted GMRES against dense solves and SciPy's GMRES."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse.linalg

from implicit_jax.solvers import StopCriterion, gmres


def batched_system(batch=3, n=12, radius=0.9, seed=0):
    """``M = I - A`` per row, ``A`` Gaussian with spectral radius about ``radius`` (circular law)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((batch, n, n)) * radius / np.sqrt(n)
    m = jnp.asarray(np.eye(n) - a)
    b = jnp.asarray(rng.standard_normal((batch, n)))
    return m, b, lambda v: jnp.einsum("bij,bj->bi", m, v)


def test_full_krylov_space_solves_each_row_in_at_most_n_steps():
    m, b, matvec = batched_system(n=12, radius=1.5)  # spectral radius > 1: fixed-point iteration diverges
    x, info = jax.jit(lambda b: gmres(matvec, b, b, StopCriterion(1e-11, 100), restart=12))(b)
    chex.assert_trees_all_close(x, jnp.linalg.solve(m, b[..., None])[..., 0], atol=1e-9)
    assert bool(jnp.all(info.converged))
    assert int(info.steps) <= 12  # finite termination of the Arnoldi process
    assert int(info.num_fn_evals) == int(info.steps) + 2  # initial residual, steps, final residual
    np.testing.assert_array_less(info.rel_residual, 1e-11)


@pytest.mark.parametrize("restart", [3, 5])
def test_restarted_cycles_match_scipy(restart):
    m, b, matvec = batched_system(batch=2, n=10, radius=0.8, seed=1)
    cycles = 4
    x, info = gmres(matvec, b, b, StopCriterion(1e-30, restart * cycles), restart=restart)  # runs exactly `cycles` cycles
    assert int(info.steps) == restart * cycles and not bool(jnp.any(info.converged))
    for row in range(2):
        expected, _ = scipy.sparse.linalg.gmres(
            np.asarray(m[row]), np.asarray(b[row]), x0=np.asarray(b[row]), restart=restart, maxiter=cycles, rtol=1e-30, atol=0.0
        )
        np.testing.assert_allclose(x[row], expected, rtol=1e-8, atol=1e-10)


@pytest.mark.slow
def test_rows_are_independent_systems():
    _m, b, matvec = batched_system(batch=3, n=10, seed=2)
    b = b.at[1].multiply(1e-3)  # a smaller right-hand side: same relative work, other absolute scale
    criterion = StopCriterion(1e-9, 200, stop_mode="rel")
    x, info = gmres(matvec, b, b, criterion, restart=4)
    for row in range(3):
        alone, alone_info = gmres(
            lambda v: matvec(jnp.zeros_like(b).at[row].set(v[0]))[row : row + 1],
            b[row : row + 1],
            b[row : row + 1],
            criterion,
            restart=4,
        )
        np.testing.assert_allclose(x[row], alone[0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(info.rel_residual[row], alone_info.rel_residual[0], rtol=1e-6)
    assert bool(jnp.all(info.converged))


def test_a_converged_row_stops_and_a_zero_rhs_takes_no_step():
    _m, b, matvec = batched_system(batch=2, n=8, seed=3)
    b = b.at[0].set(0.0)
    x, info = gmres(matvec, b, b, StopCriterion(1e-10, 100, stop_mode="abs"), restart=8)
    chex.assert_trees_all_equal(x[0], jnp.zeros(8))
    assert bool(jnp.all(info.converged)) and float(info.abs_residual[0]) == 0.0


def test_non_finite_row_is_reported_and_does_not_spoil_the_others():
    m, b, _ = batched_system(batch=3, n=8, seed=4)
    m = m.at[1, 0, 0].set(jnp.nan)
    matvec = lambda v: jnp.einsum("bij,bj->bi", m, v)
    x, info = gmres(matvec, b, b, StopCriterion(1e-10, 50), restart=8)
    assert not bool(info.converged[1]) and not bool(jnp.isfinite(info.abs_residual[1]))
    assert bool(info.converged[0]) and bool(info.converged[2])
    expected = jnp.linalg.solve(m[jnp.array([0, 2])], b[jnp.array([0, 2]), :, None])[..., 0]
    chex.assert_trees_all_close(x[jnp.array([0, 2])], expected, atol=1e-8)


def test_step_cap_reports_non_convergence():
    _, b, matvec = batched_system(batch=2, n=30, radius=0.95, seed=5)
    x, info = gmres(matvec, b, b, StopCriterion(1e-12, 7), restart=5)
    assert int(info.steps) == 7 and not bool(jnp.any(info.converged))
    assert bool(jnp.all(jnp.isfinite(info.abs_residual)))
    # the residuals are the true ones, not the Givens estimate
    np.testing.assert_allclose(info.abs_residual, jnp.linalg.norm(b - matvec(x), axis=-1), rtol=1e-10)


def test_float32_jit_and_vmap_over_problems():
    m, b, _ = batched_system(batch=4, n=16, radius=0.9, seed=6)
    m, b = m.astype(jnp.float32), b.astype(jnp.float32)

    def solve_one(mi, bi):  # one system as a batch of one
        x, info = gmres(lambda v: v @ mi.T, bi[None], bi[None], StopCriterion(1e-5, 64), restart=16)
        return x[0], info.converged[0]

    x, converged = jax.jit(jax.vmap(solve_one))(m, b)
    assert x.dtype == jnp.float32 and bool(jnp.all(converged))
    chex.assert_trees_all_close(x, jnp.linalg.solve(m, b[..., None])[..., 0], atol=1e-4)
