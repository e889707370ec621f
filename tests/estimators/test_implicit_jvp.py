"""Forward-mode, reverse-mode and second-order implicit differentiation through one custom_jvp."""

import chex
import jax
import jax.numpy as jnp
import pytest

import implicit_jax as ij
from implicit_jax.errors import NonConvergenceError
from implicit_jax.estimators import ADJOINT_SOLVERS
from implicit_jax.testing import dense_implicit_grad, linear_problem, tanh_layer

TIGHT = dict(tol=1e-12, max_steps=400)


@pytest.mark.slow
@pytest.mark.parametrize("solver", ADJOINT_SOLVERS)
def test_linear_map_tangents_match_the_closed_form(solver):
    # z* = (I - W)^-1 (U x + b): dz = (I - W)^-1 (dW z* + U dx + db)
    f, params, x, _ = linear_problem()
    backward = ij.ImplicitJVP(solver=solver, tol=1e-12, max_steps=300)
    solve = lambda p, x: ij.fixed_point(f, p, x, backward=backward, **TIGHT)
    keys = jax.random.split(jax.random.PRNGKey(3), 4)
    d_params = {name: jax.random.normal(k, a.shape, a.dtype) for (name, a), k in zip(params.items(), keys)}
    d_x = jax.random.normal(keys[3], x.shape, x.dtype)
    z, d_z = jax.jvp(solve, (params, x), (d_params, d_x))
    inverse = jnp.linalg.inv(jnp.eye(6) - params["W"])
    expected = inverse @ (d_params["W"] @ z + d_params["U"] @ x + params["U"] @ d_x + d_params["b"])
    chex.assert_trees_all_close(d_z, expected, atol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("solver", ["anderson", "gmres"])  # per-sample and whole-batch solves
def test_gradients_equal_the_dense_jacobian_solve_and_the_custom_vjp_estimator(solver):
    f, params, x, c = tanh_layer(d=12, batch=3)
    z = ij.fixed_point(f, params, x, batched=True, **TIGHT)
    expected = dense_implicit_grad(f, params, x, z, c)

    def loss(backward, p, x):
        return jnp.sum(c * ij.fixed_point(f, p, x, backward=backward, batched=True, **TIGHT))

    grads = jax.jit(jax.grad(lambda p, x: loss(ij.ImplicitJVP(solver=solver, **TIGHT), p, x), argnums=(0, 1)))(params, x)
    chex.assert_trees_all_close(grads, expected, atol=1e-9, rtol=1e-8)
    reverse = jax.grad(lambda p, x: loss("implicit", p, x), argnums=(0, 1))(params, x)
    chex.assert_trees_all_close(grads, reverse, atol=1e-9, rtol=1e-8)


@pytest.mark.slow
def test_forward_and_reverse_jacobians_agree_with_pytree_state():
    # z = (a, b) a tuple state, batched; jacfwd (tangent solves) = jacrev (adjoint solves)
    def f(p, z, x):
        a, b = z
        return jnp.tanh(a @ p["W"] + x), 0.5 * jnp.tanh(b + a @ p["V"])

    k = jax.random.split(jax.random.PRNGKey(0), 3)
    params = {"W": 0.3 * jax.random.normal(k[0], (4, 4)) / 2, "V": jax.random.normal(k[1], (4, 4)) / 2}
    x = jax.random.normal(k[2], (2, 4))
    z0 = (jnp.zeros((2, 4)), jnp.zeros((2, 4)))
    solve = lambda x, backward: ij.fixed_point(f, params, x, z0=z0, backward=backward, batched=True, **TIGHT)
    forward = jax.jacfwd(lambda x: solve(x, "implicit_jvp"))(x)
    reverse = jax.jacrev(lambda x: solve(x, "implicit"))(x)
    chex.assert_trees_all_close(forward, reverse, atol=1e-10)


@pytest.mark.slow
def test_hessian_matches_the_unrolled_solvers_hessian():
    # unroll differentiates the converged iterations twice by plain autodiff: a ground truth
    f, params, x, _ = tanh_layer(d=6, batch=1)
    loss = lambda x, backward: jnp.sum(
        ij.fixed_point(f, params, x, backward=backward, batched=True, solver="fixed_point_iteration", **TIGHT) ** 3
    )
    hessian = jax.jit(jax.hessian(lambda x: loss(x, "implicit_jvp")))(x)
    unrolled = jax.hessian(lambda x: loss(x, "unroll"))(x)
    chex.assert_trees_all_close(hessian, unrolled, atol=1e-9)
    flat = hessian.reshape(x.size, x.size)
    chex.assert_trees_all_close(flat, flat.T, atol=1e-10)  # symmetric


@pytest.mark.slow
def test_hessian_vector_product_in_params_matches_finite_differences_of_the_gradient():
    f, params, x, c = tanh_layer(d=8, batch=2)
    loss = lambda p: jnp.sum(jnp.sin(c * ij.fixed_point(f, p, x, backward="implicit_jvp", batched=True, **TIGHT)))
    grad = jax.grad(loss)
    direction = jax.tree.map(lambda a: jax.random.normal(jax.random.PRNGKey(5), a.shape, a.dtype), params)
    _, hvp = jax.jvp(grad, (params,), (direction,))  # forward over reverse
    eps = 1e-5
    shifted = lambda s: grad(jax.tree.map(lambda a, d: a + s * eps * d, params, direction))
    fd = jax.tree.map(lambda a, b: (a - b) / (2 * eps), shifted(1.0), shifted(-1.0))
    chex.assert_trees_all_close(hvp, fd, atol=1e-7, rtol=1e-6)


@pytest.mark.slow
def test_vmap_over_problems_equals_a_loop_and_float32_runs():
    f, params, x, c = tanh_layer(d=8, batch=3, dtype=jnp.float32)
    grad_one = jax.grad(
        lambda x1: jnp.sum(c[0] * ij.fixed_point(f, params, x1, backward="implicit_jvp", tol=1e-6, max_steps=100))
    )
    batched = jax.jit(jax.vmap(grad_one))(x)
    looped = jnp.stack([grad_one(x[i]) for i in range(3)])
    assert batched.dtype == jnp.float32
    chex.assert_trees_all_close(batched, looped, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["jvp", "grad"])
def test_unconverged_tangent_or_adjoint_solve_raises_with_throw(mode):
    f, params, x, _ = tanh_layer(d=8, batch=2)
    backward = ij.ImplicitJVP(solver="fixed_point_iteration", tol=1e-14, max_steps=2, fallback=None)
    solve = lambda x: ij.fixed_point(f, params, x, backward=backward, batched=True, throw=True, tol=1e-10, max_steps=300)
    # under jit the error comes back through the runtime's callback error, which quotes it
    with pytest.raises(Exception, match="backward='implicit_jvp' did not converge after 2 steps"):
        if mode == "jvp":
            jax.block_until_ready(jax.jit(lambda x: jax.jvp(solve, (x,), (x,))[1])(x))
        else:
            jax.block_until_ready(jax.jit(jax.grad(lambda x: jnp.sum(solve(x))))(x))
    with pytest.raises(NonConvergenceError, match="backward='implicit_jvp' did not converge"):  # eagerly: the error itself
        jax.jvp(solve, (x,), (x,))


def test_backward_tap_is_refused_with_a_pointer_to_implicit():
    f, params, x, _ = tanh_layer(d=4, batch=1)
    with pytest.raises(ValueError, match="use backward='implicit'"):
        ij.fixed_point(f, params, x, backward="implicit_jvp", batched=True, backward_tap=ij.backward_tap())


def test_bad_options_name_the_valid_choices():
    with pytest.raises(ValueError, match=r"unknown ImplicitJVP\(solver='qr'\); valid names are \['auto', 'anderson'"):
        ij.ImplicitJVP(solver="qr")
    with pytest.raises(ValueError, match=r"ImplicitJVP\(max_steps=...\) must be an integer >= 1"):
        ij.ImplicitJVP(max_steps=0)
