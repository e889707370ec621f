"""Anderson acceleration."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from implicit_jax.solvers import Anderson, FixedPointIteration, StopCriterion, iterate
from implicit_jax.solvers.fixed_point.anderson import (
    LAPACK_SOLVE_MIN_SIZE,
    _gauss_jordan,
    effective_regularization,
    mixing_weights,
    solve_spd,
)
from implicit_jax.testing import contraction


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


def test_unrolled_elimination_of_other_platforms_matches_the_cpu_loop():
    # solve_spd unrolls its Gauss-Jordan loop off CPU (lax.platform_dependent); check that path here.
    rng = np.random.default_rng(3)
    g = rng.standard_normal((4, 5, 7))
    a, b = jnp.asarray(g @ g.transpose(0, 2, 1)), jnp.asarray(rng.standard_normal((4, 5)))
    (rolled, ok_rolled), (unrolled, ok_unrolled) = (_gauss_jordan(a, b, unroll) for unroll in (1, True))
    assert bool(ok_rolled.all()) and bool(ok_unrolled.all())
    np.testing.assert_allclose(unrolled, rolled, rtol=1e-12)
    np.testing.assert_allclose(rolled, np.linalg.solve(np.asarray(a), np.asarray(b)[..., None])[..., 0], rtol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("size", [5, LAPACK_SOLVE_MIN_SIZE + 1])  # Gauss-Jordan, then LAPACK
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


@pytest.mark.slow
@pytest.mark.parametrize("size", [2, LAPACK_SOLVE_MIN_SIZE + 1])  # Gauss-Jordan, then LAPACK
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


@pytest.mark.slow
@pytest.mark.parametrize("memory", [5, LAPACK_SOLVE_MIN_SIZE + 1])
def test_unrolled_gradient_stays_finite_through_the_degenerate_fallback(memory):
    # z = tanh(a z + 1) in one dimension: every least squares after the first steps is rank one,
    # so Anderson keeps falling back to plain steps. Autodiff through the unrolled solve must
    # not give NaN (from the weights not taken); it must give the implicit derivative
    # dz*/da = z* (1 - z*^2) / (1 - a (1 - z*^2)).
    def solution(a):
        fn = lambda z: jnp.tanh(a * z + 1.0)
        return iterate(
            Anderson(memory=memory), fn, jnp.zeros((1, 1), jnp.float64), StopCriterion(tol=1e-13, max_steps=60), unrolled=True
        )[0][0, 0]

    a = 0.5
    z, dz = jax.value_and_grad(solution)(a)
    s = 1.0 - z**2
    np.testing.assert_allclose(dz, z * s / (1.0 - a * s), rtol=1e-8)


@pytest.mark.slow
def test_incremental_gram_matches_the_history():
    fn = lambda z: jnp.tanh(z @ jnp.full((4, 4), 0.2) + 1.0)
    solver = Anderson(memory=3)
    z = jnp.zeros((2, 4), jnp.float64)
    state = solver.init(z, fn(z))
    for _ in range(5):  # wraps around the ring
        z, _fz, state, _ = solver.step(fn, z, fn(z), state, jnp.array([True, True]))
    np.testing.assert_allclose(state.gram, jnp.einsum("bmn,bkn->bmk", state.gs, state.gs), rtol=1e-12)


@pytest.mark.slow
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
    fn = lambda z: -0.5 * z + 0.1 * 1.036 + 0.3185
    z, info, _ = iterate(Anderson(), fn, jnp.zeros((1, 1), jnp.float64), StopCriterion(tol=1e-12, max_steps=50))
    assert bool(info.converged.all()) and bool(jnp.all(jnp.isfinite(z)))
    np.testing.assert_allclose(z, (0.1 * 1.036 + 0.3185) / 1.5, rtol=1e-12)


def _float32_case(name):
    h = jnp.array([[5.0, 0.3, 0.1], [0.3, 5.5, 0.2], [0.1, 0.2, 6.0]], jnp.float32)
    b = jnp.array([1.0, 2.0, 3.0], jnp.float32)
    if name == "diagonal, memory >= size":  # residuals become linearly dependent
        # ||(I - J)^-1|| = 1000: a residual of tol leaves an error up to 1000 tol
        return (
            (lambda z: jnp.array([0.9, 0.99, 0.999], jnp.float32) * z),
            jnp.array([[1.0, 0.4, -0.2]], jnp.float32),
            jnp.zeros(3),
            1e3,
        )
    return (lambda z: z - (z @ h.T - b)), jnp.zeros((1, 3), jnp.float32), jnp.linalg.solve(h, b), 0.25  # eigenvalues -4..-5


@pytest.mark.slow
@pytest.mark.parametrize("name", ["diagonal, memory >= size", "linear, non-contractive"])
def test_float32_converges_as_fast_as_float64_when_residuals_become_dependent(name):
    fn, z0, solution, inverse_norm = _float32_case(name)
    criterion = StopCriterion(tol=1e-5, max_steps=200, stop_mode="abs")
    z32, info32, _ = iterate(Anderson(), fn, z0, criterion)
    _, info64, _ = iterate(Anderson(), lambda z: fn(z.astype(jnp.float32)).astype(jnp.float64), z0.astype(jnp.float64), criterion)
    assert bool(info32.converged.all()) and bool(info64.converged.all())
    assert int(info32.steps) <= int(info64.steps) + 3 <= 12
    np.testing.assert_allclose(z32[0], solution, atol=inverse_norm * criterion.tol)
    assert int(info32.num_fallbacks[0]) == 0


def test_regularization_floor_follows_the_dtype():
    assert effective_regularization(1e-8, 5, jnp.float64) == 1e-8
    assert effective_regularization(1e-8, 5, jnp.float32) == pytest.approx(50 * float(jnp.finfo(jnp.float32).eps))
    assert effective_regularization(1e-2, 5, jnp.float32) == 1e-2


@pytest.mark.slow
def test_one_dimension_is_the_secant_method():
    # An affine scalar map: the secant method is exact (up to the O(rho) regularisation) after
    # two points, so each step gains a factor ~rho; plain iteration would gain a factor 2.
    for dtype in (jnp.float32, jnp.float64):
        fn = lambda z: 0.5 * z + jnp.asarray(3.0, dtype)
        for tol, max_steps in ((1e-5, 3), (1e-12 if dtype == jnp.float64 else 1e-7, 4)):
            z, info, _ = iterate(Anderson(), fn, jnp.zeros((1, 1), dtype), StopCriterion(tol=tol, max_steps=50))
            assert bool(info.converged.all()) and int(info.steps) <= max_steps
            np.testing.assert_allclose(z[0, 0], 6.0, rtol=2 * tol)  # error = residual / (1 - 0.5)


def test_a_failed_least_squares_is_counted_and_restarts_the_history():
    solver = Anderson(memory=3)
    fn = lambda z: 0.5 * z
    z = jnp.ones((2, 4))
    state = solver.init(z, fn(z))
    for _ in range(2):
        z_prev = z
        z, _fz, state, _ = solver.step(fn, z, fn(z), state, jnp.ones(2, bool))
    poisoned = state._replace(gram=state.gram.at[1, 0, 0].set(jnp.nan))  # sample 1's least squares fails
    z_new, _, after, _ = solver.step(fn, z, fn(z), poisoned, jnp.ones(2, bool))
    np.testing.assert_array_equal(after.fallbacks, [0, 1])
    np.testing.assert_array_equal(after.count, [4, 1])  # sample 1 keeps only the newest pair
    np.testing.assert_allclose(z_new[1], fn(z)[1])  # a plain fixed-point step
    assert bool(jnp.all(jnp.isfinite(z_new)))
    assert solver.num_fallbacks(after, 2).tolist() == [0, 1]
    del z_prev


@pytest.mark.slow
def test_convergence_does_not_depend_on_xla_optimisation_flags():
    # The step count of a float32 problem with dependent residuals must be the same with
    # XLA's optimisations on and off (they change rounding in the Gram matrix).
    import os
    import subprocess
    import sys

    code = (
        "import jax.numpy as jnp, implicit_jax as ij\n"
        "x0 = jnp.array([0.3, jnp.pi / 4, 0.6])\n"
        "z, info = ij.fixed_point(lambda p, z, x: jnp.cos(z), (), (), z0=x0, solver=ij.Anderson(memory=4), tol=1e-6,"
        " stop_mode='abs', max_steps=100, return_info=True)\n"
        "print(int(info.steps), bool(info.converged))\n"
    )
    outputs = []
    for flags in ("", "--xla_backend_optimization_level=0"):
        env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
        outputs.append(
            subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()
        )
    assert outputs[0] == outputs[1] and outputs[0][1] == "True" and int(outputs[0][0]) <= 8


def _history(mixing=1.0, regularization=1e-8, steps=4, memory=4, fn=None):
    """Anderson's state after ``steps`` steps on a small nonlinear map (float64, 2 samples, n = 5)."""
    rng = np.random.default_rng(3)
    w = jnp.asarray(0.5 * rng.standard_normal((5, 5)) / np.sqrt(5))
    fn = fn or (lambda z: jnp.tanh(z @ w.T + 1.0))
    solver = Anderson(memory=memory, mixing=mixing, regularization=regularization)
    z0 = jnp.asarray(rng.standard_normal((2, 5)))
    _, _, state = iterate(solver, fn, z0, StopCriterion(tol=1e-30, max_steps=steps))
    return solver, fn, state


def _dense_inverse(state, sample, mixing, regularization):
    """H = -beta I + (dX + beta dG) M^-1 dG^T built explicitly from one sample's history (numpy)."""
    fs, gs = np.asarray(state.fs[sample]), np.asarray(state.gs[sample])
    memory, n = fs.shape
    count = int(state.count[sample])
    k = (count - 1) % memory
    others = [j for j in range(min(count, memory)) if j != k]
    d_g = np.stack([gs[k] - gs[j] for j in others], axis=1)
    d_x = np.stack([(fs[k] - gs[k]) - (fs[j] - gs[j]) for j in others], axis=1)
    rho = effective_regularization(regularization, memory, np.float64)
    norms = np.array([gs[j] @ gs[j] for j in others])
    m = d_g.T @ d_g + rho * (np.diag(norms) + gs[k] @ gs[k])
    return -mixing * np.eye(n) + (d_x + mixing * d_g) @ np.linalg.solve(m, d_g.T), d_g, d_x, fs[k] - gs[k], gs[k]


@pytest.mark.slow
@pytest.mark.parametrize("mixing", [1.0, 0.5])
def test_multisecant_product_equals_the_dense_matrix_of_the_same_history(mixing):
    solver, _, state = _history(mixing=mixing, regularization=1e-3)  # a visible regularisation term
    v = jnp.asarray(np.random.default_rng(4).standard_normal((2, 5)))
    product = np.asarray(solver.inverse_transpose_product(state, v))
    for sample in range(2):
        dense, *_ = _dense_inverse(state, sample, mixing, 1e-3)
        np.testing.assert_allclose(product[sample], dense.T @ np.asarray(v[sample]), rtol=1e-10, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("mixing", [1.0, 0.5])
def test_the_estimate_satisfies_the_secant_equations_and_reproduces_the_next_anderson_step(mixing):
    solver, fn, state = _history(mixing=mixing, regularization=0.0)  # only the float64 floor 10 m eps
    eye = jnp.eye(5)
    for sample in range(2):
        columns = jax.vmap(
            lambda e: solver.inverse_transpose_product(jax.tree_util.tree_map(lambda a: a[sample : sample + 1], state), e[None])[
                0
            ]
        )(eye)
        h = np.asarray(columns)  # rows are H^T e_i, so this is H
        dense, d_g, d_x, x_k, g_k = _dense_inverse(state, sample, mixing, 0.0)
        np.testing.assert_allclose(h, dense, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(h @ d_g, d_x, rtol=1e-6, atol=1e-9)  # H dG = dX
        one = jax.tree_util.tree_map(lambda a: a[sample : sample + 1], state)
        z_next = solver.step(fn, jnp.asarray(x_k)[None], jnp.asarray(x_k + g_k)[None], one, jnp.ones((1,), bool))[0]
        np.testing.assert_allclose(np.asarray(z_next[0]), x_k - h @ g_k, rtol=1e-7, atol=1e-9)  # x+ = x_k - H g_k


def test_a_constant_map_gives_minus_the_identity_and_one_pair_gives_minus_beta():
    solver, _, state = _history(fn=lambda z: jnp.ones_like(z) * 0.3, steps=3)
    v = jnp.asarray(np.random.default_rng(5).standard_normal((2, 5)))
    np.testing.assert_allclose(solver.inverse_transpose_product(state, v), -v, rtol=1e-9)  # dG = -dX
    damped = Anderson(memory=4, mixing=0.5)
    fresh = damped.init(v, jnp.tanh(v))  # one pair, no differences yet
    np.testing.assert_allclose(damped.inverse_transpose_product(fresh, v), -0.5 * v, rtol=1e-12)
