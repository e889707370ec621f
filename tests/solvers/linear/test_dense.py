"""The direct solve of small per-row systems (formed matrices, QR) against dense solves."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from implicit_jax.solvers import Dense, StopCriterion, dense_solve
from implicit_jax.solvers.linear import dense_matrices


def rows_of_matrices(batch=3, n=7, radius=1.5, seed=0):
    """``M = I - A`` per row, ``A`` Gaussian with spectral radius about ``radius``, and a right-hand side."""
    rng = np.random.default_rng(seed)
    m = jnp.asarray(np.eye(n) - rng.standard_normal((batch, n, n)) * radius / np.sqrt(n))
    return m, jnp.asarray(rng.standard_normal((batch, n))), lambda v: jnp.einsum("bij,bj->bi", m, v)


def test_the_matrices_are_formed_from_the_products():
    m, _, matvec = rows_of_matrices()
    chex.assert_trees_all_close(dense_matrices(matvec, 3, 7, jnp.float64), m, atol=0)


def test_each_row_is_solved_exactly_where_the_fixed_point_iteration_diverges():
    m, b, matvec = rows_of_matrices(radius=1.5)  # I - M has spectral radius above one
    x, info = jax.jit(lambda b: Dense().solve(matvec, b, jnp.zeros_like(b), StopCriterion(1e-10, 1)))(b)
    chex.assert_trees_all_close(x, jnp.linalg.solve(m, b[..., None])[..., 0], atol=1e-12)
    assert bool(jnp.all(info.converged)) and int(info.steps) == 1 and int(info.num_fn_evals) == 7
    chex.assert_trees_all_close(info.abs_residual, jnp.linalg.norm(b - matvec(x), axis=-1), atol=1e-14)
    np.testing.assert_array_less(info.rel_residual, 1e-13)


def test_a_singular_row_is_reported_unconverged_and_the_others_are_not():
    m, b, _ = rows_of_matrices()
    m = m.at[1].set(jnp.outer(jnp.arange(1.0, 8.0), jnp.ones(7)))  # rank one
    _, info = dense_solve(lambda v: jnp.einsum("bij,bj->bi", m, v), b, b, StopCriterion(1e-8, 1))
    np.testing.assert_array_equal(info.converged, [True, False, True])


def test_a_bfloat16_system_is_factorised_in_float32():
    m, b, _ = rows_of_matrices(radius=0.5)
    m16, b16 = m.astype(jnp.bfloat16), b.astype(jnp.bfloat16)
    x, info = dense_solve(lambda v: jnp.einsum("bij,bj->bi", m16, v), b16, b16, StopCriterion(1e-2, 1))
    assert x.dtype == jnp.bfloat16 and bool(jnp.all(info.converged))
    expected = jnp.linalg.solve(m16.astype(jnp.float32), b16.astype(jnp.float32)[..., None])[..., 0]
    chex.assert_trees_all_close(x.astype(jnp.float32), expected, rtol=2e-2, atol=2e-2)


def test_the_solve_is_differentiable_through_the_matrix():
    # what ImplicitJVP's higher orders need: d/dt M(t)^{-1} b = -M^{-1} M'(t) M^{-1} b
    m, b, _ = rows_of_matrices(batch=1, radius=0.5)
    direction = jnp.asarray(np.random.default_rng(1).standard_normal(m.shape))
    solve = lambda t: dense_solve(lambda v: jnp.einsum("bij,bj->bi", m + t * direction, v), b, b, StopCriterion(1e-8, 1))[0]
    x = solve(0.0)
    expected = -jnp.linalg.solve(m, jnp.einsum("bij,bj->bi", direction, x)[..., None])[..., 0]
    chex.assert_trees_all_close(jax.jacfwd(solve)(0.0), expected, atol=1e-10)
