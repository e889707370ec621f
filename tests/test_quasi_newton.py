"""Low-rank quasi-Newton updates against their dense formulas."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from implicit_jax import quasi_newton as qn


def dense(inverse: qn.LowRankInverse) -> np.ndarray:
    n, live = inverse.u.shape[1], int(inverse.count)
    return -np.eye(n) + np.asarray(inverse.u[:live]).T @ np.asarray(inverse.v[:live])


def random_pairs(count, n, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(n), rng.standard_normal(n)) for _ in range(count)]


@pytest.mark.parametrize("update", ["good", "bad"])
def test_broyden_updates_match_dense_formula_and_secant(update):
    n = 7
    inverse = qn.broyden_init(n, memory=10, dtype=jnp.float64)
    h = -np.eye(n)
    for s, y in random_pairs(5, n):
        inverse = qn.BROYDEN_UPDATES[update](inverse, jnp.asarray(s), jnp.asarray(y))
        if update == "good":  # Sherman-Morrison form of Broyden's first method
            h = h + np.outer(s - h @ y, s @ h) / (s @ h @ y)
        else:
            h = h + np.outer(s - h @ y, y) / (y @ y)
        np.testing.assert_allclose(dense(inverse), h, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(dense(inverse) @ y, s, rtol=1e-9, atol=1e-9)  # secant condition
    assert int(inverse.count) == 5


def test_products_and_transpose_never_need_the_dense_matrix():
    n = 5
    inverse = qn.broyden_init(n, memory=4, dtype=jnp.float64)
    for s, y in random_pairs(3, n, seed=1):
        inverse = qn.good_broyden_update(inverse, jnp.asarray(s), jnp.asarray(y))
    x = jnp.asarray(np.random.default_rng(2).standard_normal(n))
    h = dense(inverse)
    np.testing.assert_allclose(qn.matvec(inverse, x), h @ x, rtol=1e-10)
    np.testing.assert_allclose(qn.rmatvec(inverse, x), h.T @ x, rtol=1e-10)
    np.testing.assert_allclose(dense(qn.transpose(inverse)), h.T, rtol=1e-10)


def test_full_memory_restarts_from_minus_identity():
    n, memory = 4, 2
    inverse = qn.broyden_init(n, memory, dtype=jnp.float64)
    pairs = random_pairs(3, n, seed=3)
    for s, y in pairs:
        inverse = qn.bad_broyden_update(inverse, jnp.asarray(s), jnp.asarray(y))
    fresh = qn.bad_broyden_update(qn.broyden_init(n, memory, dtype=jnp.float64), *map(jnp.asarray, pairs[2]))
    assert int(inverse.count) == 1
    np.testing.assert_allclose(dense(inverse), dense(fresh))


@pytest.mark.parametrize("update", ["good", "bad"])
def test_precomputed_products_and_refresh_match_full_products(update):
    n, memory = 5, 3
    inverse = qn.broyden_init(n, memory, dtype=jnp.float64)
    x = jnp.asarray(np.random.default_rng(9).standard_normal(n))
    for s, y in random_pairs(7, n, seed=4):  # wraps: exercises the restart
        s, y = jnp.asarray(s), jnp.asarray(y)
        new = qn.BROYDEN_UPDATES[update](inverse, s, y, hy=qn.matvec(inverse, y))
        reference = qn.BROYDEN_UPDATES[update](inverse, s, y)
        np.testing.assert_allclose(dense(new), dense(reference), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(
            qn.refresh_product(inverse, new, x, qn.matvec(inverse, x)), qn.matvec(new, x), rtol=1e-10, atol=1e-12
        )
        inverse = new


def test_inactive_update_leaves_the_estimate_unchanged():
    inverse = qn.broyden_init(3, memory=2, dtype=jnp.float64)
    out = qn.good_broyden_update(inverse, jnp.ones(3), 2 * jnp.ones(3), active=False)
    chex.assert_trees_all_equal(out, inverse)


def test_degenerate_update_is_skipped_not_nan():
    inverse = qn.broyden_init(3, memory=2, dtype=jnp.float32)
    zero = jnp.zeros(3, jnp.float32)
    out = qn.good_broyden_update(inverse, zero, zero)
    assert int(out.count) == 0
    chex.assert_tree_all_finite(out)


def dense_bfgs_inverse(pairs, n):
    s, y = pairs[-1]
    h = (s @ y) / (y @ y) * np.eye(n)
    for s, y in pairs:
        rho = 1.0 / (s @ y)
        v = np.eye(n) - rho * np.outer(y, s)
        h = v.T @ h @ v + rho * np.outer(s, s)
    return h


def spd_pairs(count, n, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n))
    hessian = a @ a.T + n * np.eye(n)
    return [(s, hessian @ s) for s in rng.standard_normal((count, n))]


@pytest.mark.slow
@pytest.mark.parametrize("count", [1, 3, 4, 9])
def test_lbfgs_two_loop_matches_dense_bfgs_on_the_last_pairs(count):
    n, memory = 6, 4
    pairs = spd_pairs(count, n, seed=count)
    state = qn.lbfgs_init(n, memory, dtype=jnp.float64)
    for s, y in pairs:
        state = qn.lbfgs_update(state, jnp.asarray(s), jnp.asarray(y))
    g = np.random.default_rng(0).standard_normal(n)
    expected = dense_bfgs_inverse(pairs[-memory:], n) @ g  # the ring keeps the newest `memory` pairs in order
    np.testing.assert_allclose(qn.lbfgs_inverse_hvp(state, jnp.asarray(g)), expected, rtol=1e-8)


def test_lbfgs_rejects_negative_curvature_and_empty_memory_is_identity():
    state = qn.lbfgs_init(3, 2, dtype=jnp.float64)
    g = jnp.array([1.0, -2.0, 3.0])
    np.testing.assert_allclose(qn.lbfgs_inverse_hvp(state, g), g)
    state = qn.lbfgs_update(state, jnp.ones(3), -jnp.ones(3))
    assert int(state.count) == 0


def test_lbfgs_jits():
    state = qn.lbfgs_init(3, 2, dtype=jnp.float32)
    state = jax.jit(qn.lbfgs_update)(state, jnp.ones(3, jnp.float32), 2 * jnp.ones(3, jnp.float32))
    np.testing.assert_allclose(jax.jit(qn.lbfgs_inverse_hvp)(state, jnp.ones(3, jnp.float32)), 0.5 * np.ones(3), rtol=1e-6)
