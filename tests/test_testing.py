"""The reference problems agree with independent computations."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from implicit_jax.testing import contraction, dense_implicit_grad, linear_closed_form, linear_problem, tanh_layer, tree_cosine


def test_contraction_has_the_requested_spectral_norm():
    w = contraction(jax.random.PRNGKey(3), 12, 0.9)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(w), 2), 0.9, rtol=1e-10)


def test_linear_closed_form_solves_the_fixed_point_and_matches_autodiff():
    f, params, x, c = linear_problem()
    u = jnp.linalg.solve(jnp.eye(6) - params["W"].T, c)
    z, grads, dx = linear_closed_form(params, x, c, u)
    chex.assert_trees_all_close(f(params, z, x), z, atol=1e-12)
    solve = lambda p, x: jnp.linalg.solve(jnp.eye(6) - p["W"], p["U"] @ x + p["b"])
    chex.assert_trees_all_close(
        jax.grad(lambda p, x: jnp.sum(c * solve(p, x)), argnums=(0, 1))(params, x), (grads, dx), atol=1e-10
    )


def test_dense_implicit_grad_matches_a_linear_closed_form():
    f, params, x, c = linear_problem()
    u = jnp.linalg.solve(jnp.eye(6) - params["W"].T, c)
    z, grads, dx = linear_closed_form(params, x, c, u)
    chex.assert_trees_all_close(dense_implicit_grad(f, params, x, z, c), (grads, dx), atol=1e-10)


def test_tanh_layer_shapes_and_cosine():
    f, params, x, _c = tanh_layer(d=8, batch=3, dtype=jnp.float32)
    assert f(params, jnp.zeros_like(x), x).shape == (3, 8) and x.dtype == jnp.float32
    assert tree_cosine({"a": jnp.ones(3)}, {"a": 2 * jnp.ones(3)}) > 0.999999
