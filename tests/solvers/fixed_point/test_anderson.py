"""Anderson acceleration."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from implicit_jax.testing import contraction
from implicit_jax.solvers import Anderson, FixedPointIteration, StopCriterion, iterate
from implicit_jax.solvers.fixed_point.anderson import UNROLLED_SOLVE_MAX_SIZE, mixing_weights, solve_spd


def test_mixing_weights_solve_the_constrained_least_squares():
    rng = np.random.default_rng(0)
    g = rng.standard_normal((4, 10))
    valid = jnp.array([True, True, True, False])
    alpha, ok = mixing_weights(jnp.asarray(g @ g.T), valid, 0.0)
    assert bool(ok)
    alpha = np.asarray(alpha)
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
    x, ok = solve_spd(jnp.asarray(a), jnp.asarray(b))
    assert bool(ok)
    np.testing.assert_allclose(x, np.linalg.solve(a, b), rtol=1e-9)


@pytest.mark.parametrize("size", [5, UNROLLED_SOLVE_MAX_SIZE + 2])  # unrolled Cholesky, then LAPACK
def test_spd_solve_and_weights_act_on_leading_batch_axes(size):
    rng = np.random.default_rng(2)
    g = rng.standard_normal((3, 2, size, size + 2))
    gram = np.einsum("...mn,...kn->...mk", g, g)
    b = rng.standard_normal((3, 2, size))
    expected = np.linalg.solve(gram, b[..., None])[..., 0]
    x, ok = solve_spd(jnp.asarray(gram), jnp.asarray(b))
    assert ok.shape == (3, 2) and bool(ok.all())
    np.testing.assert_allclose(x, expected, rtol=1e-8)
    valid = jnp.asarray(rng.random((3, 2, size)) < 0.7).at[..., 0].set(True)
    batched = mixing_weights(jnp.asarray(gram), valid, 1e-8)[0]
    one_by_one = np.stack([[mixing_weights(jnp.asarray(gram[i, j]), valid[i, j], 1e-8)[0] for j in range(2)] for i in range(3)])
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-12)
    np.testing.assert_allclose(batched.sum(-1), 1.0, rtol=1e-12)
    assert np.all(np.where(valid, True, batched == 0))


@pytest.mark.parametrize("size", [2, UNROLLED_SOLVE_MAX_SIZE + 2])  # unrolled Cholesky, then LAPACK
def test_failed_solve_is_flagged_and_stays_finite_with_finite_gradients(size):
    # Anderson.step swaps in a plain step where `ok` is false; the solve must flag the failure
    # and keep x and its gradient finite, or the select's cotangent would be 0 * NaN = NaN.
    good = jnp.eye(size) + 0.1
    bad = jnp.ones((size, size)).at[0, 1].set(2.0).at[1, 0].set(2.0)  # indefinite (and singular for size > 2)
    a, b = jnp.stack([good, bad]), jnp.ones((2, size))
    x, ok = solve_spd(a, b)
    np.testing.assert_array_equal(ok, [True, False])
    assert bool(jnp.all(jnp.isfinite(x)))
    np.testing.assert_allclose(x[0], np.linalg.solve(good, np.ones(size)), rtol=1e-10)

    def kept(a):
        x, ok = solve_spd(a, b)
        return jnp.sum(jnp.where(ok[:, None], x, 0.0))

    grad = jax.grad(kept)(a)
    assert bool(jnp.all(jnp.isfinite(grad))) and bool(jnp.all(grad[1] == 0))


@pytest.mark.parametrize("memory", [5, UNROLLED_SOLVE_MAX_SIZE + 2])
def test_unrolled_gradient_stays_finite_through_the_degenerate_fallback(memory):
    # z = tanh(a z + 1) in one dimension: every least squares after the first steps is rank one,
    # so Anderson keeps falling back to plain steps. Autodiff through the unrolled solve must
    # not give NaN (from the weights not taken); it must give the implicit derivative
    # dz*/da = z* (1 - z*^2) / (1 - a (1 - z*^2)).
    def solution(a):
        fn = lambda z: jnp.tanh(a * z + 1.0)
        return iterate(Anderson(memory=memory), fn, jnp.zeros((1, 1), jnp.float64), StopCriterion(tol=1e-13, max_steps=60), unrolled=True)[0][0, 0]

    a = 0.5
    z, dz = jax.value_and_grad(solution)(a)
    s = 1.0 - z**2
    np.testing.assert_allclose(dz, z * s / (1.0 - a * s), rtol=1e-8)


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
    # residuals reach rounding level its elimination divides by ~0 (hypothesis
    # seed 684). The solver must still converge, never return NaN.
    fn = lambda z: -0.5 * z + 0.1 * 1.036 + 0.3185  # noqa: E731
    z, info, _ = iterate(Anderson(), fn, jnp.zeros((1, 1), jnp.float64), StopCriterion(tol=1e-12, max_steps=50))
    assert bool(info.converged.all()) and bool(jnp.all(jnp.isfinite(z)))
    np.testing.assert_allclose(z, (0.1 * 1.036 + 0.3185) / 1.5, rtol=1e-12)
