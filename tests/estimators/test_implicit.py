"""Exact implicit differentiation against closed forms, dense Jacobian solves and finite differences."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import implicit_jax as ij
from implicit_jax.estimators import ADJOINT_SOLVERS
from implicit_jax.testing import dense_implicit_grad, linear_closed_form, linear_problem, tanh_layer


@pytest.mark.slow
@pytest.mark.parametrize("adjoint", ADJOINT_SOLVERS)
def test_linear_map_matches_closed_form(adjoint):
    f, params, x, c = linear_problem()
    u = jnp.linalg.solve(jnp.eye(6) - params["W"].T, c)
    z_exact, grads_exact, dx_exact = linear_closed_form(params, x, c, u)

    def loss(p, x):
        z = ij.fixed_point(f, p, x, backward=ij.Implicit(solver=adjoint, tol=1e-12, max_steps=300), tol=1e-12, max_steps=300)
        return jnp.sum(c * z), z

    (_, z), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, x)
    chex.assert_trees_all_close(z, z_exact, atol=1e-5)
    chex.assert_trees_all_close(grads, (grads_exact, dx_exact), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("solver", ["anderson", "broyden", "fixed_point_iteration"])
def test_tanh_layer_matches_dense_jacobian_solve(solver):
    f, params, x, c = tanh_layer(d=16, batch=3)
    z = ij.fixed_point(f, params, x, solver=solver, tol=1e-12, max_steps=500, batched=True)
    expected = dense_implicit_grad(f, params, x, z, c)
    grads = jax.grad(
        lambda p, x: jnp.sum(c * ij.fixed_point(f, p, x, solver=solver, tol=1e-12, max_steps=500, batched=True)), argnums=(0, 1)
    )(params, x)
    chex.assert_trees_all_close(grads, expected, atol=1e-8, rtol=1e-7)


@pytest.mark.slow
def test_gmres_adjoint_is_exact_where_the_adjoint_iteration_diverges():
    f, params, x, c = linear_problem()
    params = dict(params, W=1.5 * jnp.linalg.qr(jax.random.normal(jax.random.PRNGKey(3), (6, 6)))[0])  # every |eigenvalue| = 1.5
    u = jnp.linalg.solve(jnp.eye(6) - params["W"].T, c)
    _, grads_exact, dx_exact = linear_closed_form(params, x, c, u)

    def grads_and_info(adjoint, **options):
        def loss(p, x, tap):  # Anderson with a full memory solves the forward (like GMRES on a linear map)
            backward = ij.Implicit(solver=adjoint, tol=1e-12, max_steps=60, **options)
            z = ij.fixed_point(
                f, p, x, solver=ij.Anderson(memory=8), backward=backward, tol=1e-12, max_steps=60, backward_tap=tap
            )
            return jnp.sum(c * z)

        d_params, d_x, info = jax.grad(loss, argnums=(0, 1, 2))(params, x, ij.backward_tap(jnp.float64))
        return (d_params, d_x), info

    grads, info = grads_and_info("gmres")
    chex.assert_trees_all_close(grads, (grads_exact, dx_exact), atol=1e-10)
    assert 1 <= float(info.steps) <= 6 and float(info.converged) == 1.0  # at most n Arnoldi steps
    _, diverged = grads_and_info("fixed_point_iteration", fallback=None)
    # |eigenvalue| 1.5: the residual grows 1e4-fold (ADJOINT_DIVERGENCE_RATIO) in about 23 of the 60 steps
    assert float(diverged.converged) == 0.0 and 20 <= float(diverged.steps) <= 26
    rescued, info = grads_and_info("fixed_point_iteration")  # the default: GMRES takes over
    chex.assert_trees_all_close(rescued, (grads_exact, dx_exact), atol=1e-10)
    assert float(info.converged) == 1.0 and float(info.fallback_fraction) == 1.0 and float(info.steps) <= 26 + 6


@pytest.mark.slow
def test_tanh_layer_matches_finite_differences():
    f, params, x, c = tanh_layer(d=8, batch=2)
    loss = lambda p: jnp.sum(c * ij.fixed_point(f, p, x, tol=1e-13, max_steps=500, batched=True))
    grads = jax.grad(loss)(params)
    direction = jax.tree_util.tree_map(lambda a: jax.random.normal(jax.random.PRNGKey(7), a.shape, a.dtype), params)
    eps = 1e-6
    shift = lambda s: jax.tree_util.tree_map(lambda a, d: a + s * eps * d, params, direction)
    fd = (loss(shift(1.0)) - loss(shift(-1.0))) / (2 * eps)
    analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(direction)))
    np.testing.assert_allclose(analytic, fd, rtol=1e-6)


@pytest.mark.slow
def test_backward_tap_reports_the_adjoint_solve():
    f, params, x, c = tanh_layer(d=8, batch=2)

    def loss(p, tap):
        return jnp.sum(c * ij.fixed_point(f, p, x, batched=True, tol=1e-8, backward=ij.Implicit(tol=1e-9), backward_tap=tap))

    _, info = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, ij.backward_tap(jnp.float64))
    assert 1 <= float(info.steps) < 50 and float(info.converged) == 1.0
    assert float(info.rel_residual) <= 1e-9


@pytest.mark.slow
def test_unconverged_adjoint_raises_with_throw():
    f, params, x, c = tanh_layer(d=8, batch=2)
    loss = lambda p: jnp.sum(
        c
        * ij.fixed_point(
            f, p, x, batched=True, throw=True, backward=ij.Implicit(solver="fixed_point_iteration", max_steps=2, tol=1e-12)
        )
    )
    with pytest.raises(Exception, match="adjoint solve of backward='implicit' did not converge"):
        jax.block_until_ready(jax.jit(jax.grad(loss))(params))


def test_invalid_configuration():
    with pytest.raises(ValueError, match="valid names are"):
        ij.Implicit(solver="cg")
    with pytest.raises(ValueError, match="max_steps"):
        ij.Implicit(max_steps=0)


@settings(max_examples=8, deadline=None)
@given(
    d=st.integers(1, 7),
    norm=st.floats(0.05, 0.95),
    seed=st.integers(0, 2**16),
    solver=st.sampled_from(["anderson", "broyden", "fixed_point_iteration"]),
)
@pytest.mark.slow
def test_property_random_linear_contractions_match_the_closed_form(d, norm, seed, solver):
    f, params, x, c = linear_problem(d=d, seed=seed, norm=norm)
    u = jnp.linalg.solve(jnp.eye(d) - params["W"].T, c)
    _, expected, dx = linear_closed_form(params, x, c, u)
    loss = lambda p, x: jnp.sum(c * ij.fixed_point(f, p, x, solver=solver, tol=1e-12, max_steps=2000))
    chex.assert_trees_all_close(jax.grad(loss, argnums=(0, 1))(params, x), (expected, dx), rtol=1e-6, atol=1e-8)


# A linear map whose Jacobian has eigenvalues -4 to -5: the forward (Broyden) converges, the
# adjoint iteration u = J^T u + g diverges (so does float32 Anderson on it: 2.8e18 off H^-1).
H = jnp.array([[5.0, 0.3, 0.1], [0.3, 5.5, 0.2], [0.1, 0.2, 6.0]], jnp.float32)
B = jnp.array([1.0, 2.0, 3.0], jnp.float32)


def newton_like(b, w, _):
    return w - (H @ w - b)


def jacobian_and_info(backward):
    jac = jax.jacrev(
        lambda b: ij.fixed_point(newton_like, b, (), z0=jnp.zeros(3, jnp.float32), solver="broyden", backward=backward)
    )(B)
    if isinstance(backward, ij.ImplicitJVP):  # it has no tap
        return jac, None
    loss = lambda b, tap: jnp.sum(
        ij.fixed_point(newton_like, b, (), z0=jnp.zeros(3, jnp.float32), solver="broyden", backward=backward, backward_tap=tap)
    )
    return jac, jax.jit(jax.grad(loss, argnums=1))(B, ij.backward_tap())


ITERATION = "fixed_point_iteration"


@pytest.mark.parametrize(
    "backward", [ij.Implicit(solver=ITERATION), ij.ImplicitJVP(solver=ITERATION)], ids=["implicit", "implicit_jvp"]
)
@pytest.mark.slow
def test_an_unconverged_adjoint_is_rescued_by_gmres_per_sample(backward):
    jac, info = jacobian_and_info(backward)
    chex.assert_trees_all_close(jac, jnp.linalg.inv(H), atol=1e-6)
    if info is not None:
        assert float(info.fallback_fraction) == 1.0 and float(info.converged) == 1.0 and float(info.rel_residual) < 1e-5
        jax.jacrev(
            lambda b: ij.fixed_point(
                newton_like, b, (), z0=jnp.zeros(3, jnp.float32), solver="broyden", backward=backward, throw=True
            )
        )(B)  # rescued: no raise


def test_without_the_rescue_the_failure_is_flagged_and_raised():
    jac, info = jacobian_and_info(ij.Implicit(solver=ITERATION, fallback=None))
    assert float(info.converged) == 0.0 and float(info.fallback_fraction) == 0.0
    assert not np.allclose(jac, jnp.linalg.inv(H), atol=1e-3)
    with pytest.raises(ij.NonConvergenceError):
        jax.jacrev(
            lambda b: ij.fixed_point(
                newton_like,
                b,
                (),
                z0=jnp.zeros(3, jnp.float32),
                solver="broyden",
                backward=ij.Implicit(solver=ITERATION, fallback=None),
                throw=True,
            )
        )(B)


@pytest.mark.slow
def test_only_the_unconverged_samples_are_rescued():
    # two samples: one with a contractive map (plain adjoint converges), one with the map above
    def f(p, z, x):
        scale = jnp.array([[1.0], [0.0]], jnp.float32)  # row 0 contractive, row 1 newton-like
        return scale * (0.3 * z + x) + (1 - scale) * (z - (z @ H.T - x))

    x = jnp.stack([B, B])
    loss = lambda x, tap: jnp.sum(
        ij.fixed_point(f, (), x, solver="broyden", backward=ij.Implicit(solver=ITERATION), batched=True, backward_tap=tap)
    )
    grad, info = jax.grad(loss, argnums=(0, 1))(x, ij.backward_tap())
    chex.assert_trees_all_close(grad[0], jnp.full(3, 1 / 0.7, jnp.float32), rtol=1e-5)
    chex.assert_trees_all_close(grad[1], jnp.linalg.solve(H.T, jnp.ones(3, jnp.float32)), rtol=1e-5)
    assert float(info.fallback_fraction) == 0.5 and float(info.converged) == 1.0


def test_fallback_option_is_checked():
    with pytest.raises(TypeError, match="fallback"):
        ij.Implicit(fallback="gmres")


def test_auto_solves_a_small_state_directly_and_a_larger_one_by_iteration():
    config = ij.Implicit()
    assert config.solver == "auto" and isinstance(config.solver_for(1, 32), ij.Dense)
    assert isinstance(config.solver_for(16, 8), ij.Dense) and isinstance(config.solver_for(2, 32), ij.Anderson)
    for d, batch, direct in ((8, 2, True), (24, 2, False)):  # 2 * 8 * 8 = 128 and 2 * 24 * 24 = 1152 entries
        f, params, x, c = tanh_layer(d=d, batch=batch)

        def loss(p, tap):
            return jnp.sum(c * ij.fixed_point(f, p, x, batched=True, tol=1e-10, max_steps=200, backward_tap=tap))

        grads, info = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, ij.backward_tap(jnp.float64))
        z = ij.fixed_point(f, params, x, batched=True, tol=1e-10, max_steps=200)
        chex.assert_trees_all_close(grads, dense_implicit_grad(f, params, x, z, c)[0], atol=1e-8)
        assert float(info.converged) == 1.0 and (float(info.steps) == 1.0) == direct
        assert float(info.rel_residual) <= (1e-14 if direct else 1e-10)


def test_auto_differentiates_a_non_contractive_small_map_exactly_without_a_rescue():
    jac, info = jacobian_and_info(ij.Implicit())  # the Newton-like map: J has eigenvalues -4 to -5
    chex.assert_trees_all_close(jac, jnp.linalg.inv(H), atol=1e-6)
    assert float(info.fallback_fraction) == 0.0 and float(info.converged) == 1.0 and float(info.steps) == 1.0
