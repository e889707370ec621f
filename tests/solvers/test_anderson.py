"""Anderson acceleration."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from implicit_jax.problems import contraction
from implicit_jax.solvers import Anderson, FixedPointIteration, StopCriterion, iterate
from implicit_jax.solvers.anderson import UNROLLED_SOLVE_MAX_SIZE, mixing_weights, solve_spd


def test_mixing_weights_solve_the_constrained_least_squares():
    rng = np.random.default_rng(0)
    g = rng.standard_normal((4, 10))
    valid = jnp.array([True, True, True, False])
    alpha = np.asarray(mixing_weights(jnp.asarray(g @ g.T), valid, 0.0))
    assert alpha[3] == 0 and np.isclose(alpha.sum(), 1.0)
    # optimality: compare with the closed form on the valid slots
    gv = g[:3]
    w = np.linalg.solve(gv @ gv.T, np.ones(3))
    np.testing.assert_allclose(alpha[:3], w / w.sum(), rtol=1e-6)


def test_small_spd_solve_matches_numpy():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((6, 6))
    a = a @ a.T + 0.1 * np.eye(6)
    b = rng.standard_normal(6)
    np.testing.assert_allclose(solve_spd(jnp.asarray(a), jnp.asarray(b)), np.linalg.solve(a, b), rtol=1e-9)


@pytest.mark.parametrize("size", [5, UNROLLED_SOLVE_MAX_SIZE + 2])  # unrolled Cholesky, then LAPACK
def test_spd_solve_and_weights_act_on_leading_batch_axes(size):
    rng = np.random.default_rng(2)
    g = rng.standard_normal((3, 2, size, size + 2))
    gram = np.einsum("...mn,...kn->...mk", g, g)
    b = rng.standard_normal((3, 2, size))
    expected = np.linalg.solve(gram, b[..., None])[..., 0]
    np.testing.assert_allclose(solve_spd(jnp.asarray(gram), jnp.asarray(b)), expected, rtol=1e-8)
    valid = jnp.asarray(rng.random((3, 2, size)) < 0.7).at[..., 0].set(True)
    batched = mixing_weights(jnp.asarray(gram), valid, 1e-8)
    one_by_one = np.stack([[mixing_weights(jnp.asarray(gram[i, j]), valid[i, j], 1e-8) for j in range(2)] for i in range(3)])
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-12)
    np.testing.assert_allclose(batched.sum(-1), 1.0, rtol=1e-12)
    assert np.all(np.where(valid, True, batched == 0))


def test_indefinite_system_gives_non_finite_weights_not_silent_garbage():
    # Anderson.step falls back to a plain step on non-finite weights; the solve must not hide the failure
    a = jnp.array([[1.0, 2.0], [2.0, 1.0]])  # eigenvalues 3 and -1
    assert not np.all(np.isfinite(solve_spd(a, jnp.ones(2))))


def test_incremental_gram_matches_the_history():
    fn = lambda z: jnp.tanh(z @ jnp.full((4, 4), 0.2) + 1.0)
    solver = Anderson(memory=3)
    z = jnp.zeros((2, 4), jnp.float64)
    state = solver.init(z, fn(z))
    for _ in range(5):  # wraps around the ring
        z, fz, state, _ = solver.step(fn, z, fn(z), state, jnp.array([True, True]))
    np.testing.assert_allclose(state.gram, jnp.einsum("bmn,bkn->bmk", state.gs, state.gs), rtol=1e-12)


def test_anderson_solves_a_linear_system_in_few_steps():
    # On a linear map, Anderson with memory >= n is GMRES-like: converges in about n steps.
    n = 8
    w = contraction(jax.random.PRNGKey(0), n, 0.95)
    b = jnp.ones(n, jnp.float64)
    fn = lambda z: z @ w.T + b
    criterion = StopCriterion(tol=1e-9, max_steps=200)
    z, info, _ = iterate(Anderson(memory=n + 1), fn, jnp.zeros((1, n), jnp.float64), criterion)
    _, plain, _ = iterate(FixedPointIteration(), fn, jnp.zeros((1, n), jnp.float64), criterion)
    np.testing.assert_allclose(z[0], np.linalg.solve(np.eye(n) - w, b), rtol=1e-7)
    assert int(info.steps) <= n + 3 < int(plain.steps)


def test_invalid_configuration():
    with pytest.raises(ValueError, match="memory"):
        Anderson(memory=0)
    with pytest.raises(ValueError, match="mixing"):
        Anderson(mixing=0.0)


def test_degenerate_least_squares_falls_back_to_a_plain_step_instead_of_nan():
    # One dimension: every residual is parallel, the Gram matrix is rank one, and once the
    # residuals reach rounding level its elimination divides by ~0 (found by hypothesis:
    # seed 684). The solver must still converge, never return NaN.
    fn = lambda z: -0.5 * z + 0.1 * 1.036 + 0.3185  # noqa: E731
    z, info, _ = iterate(Anderson(), fn, jnp.zeros((1, 1), jnp.float64), StopCriterion(tol=1e-12, max_steps=50))
    assert bool(info.converged.all()) and bool(jnp.all(jnp.isfinite(z)))
    np.testing.assert_allclose(z, (0.1 * 1.036 + 0.3185) / 1.5, rtol=1e-12)
