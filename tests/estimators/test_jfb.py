"""Jacobian-free backprop: u = g."""

import chex
import jax
import jax.numpy as jnp
import pytest

import implicit_jax as ij
from implicit_jax.testing import linear_closed_form, linear_problem


@pytest.mark.slow
def test_linear_map_matches_its_closed_form():
    f, params, x, c = linear_problem()
    _, expected, dx = linear_closed_form(params, x, c, c)  # u = g = c
    grads = jax.grad(lambda p, x: jnp.sum(c * ij.fixed_point(f, p, x, backward="jfb", tol=1e-13, max_steps=300)), argnums=(0, 1))(
        params, x
    )
    chex.assert_trees_all_close(grads, (expected, dx), atol=1e-9)


def test_jfb_is_the_one_step_phantom_gradient_with_unit_damping():
    f, params, x, c = linear_problem(seed=1)
    grad = lambda bw: jax.grad(lambda p: jnp.sum(c * ij.fixed_point(f, p, x, backward=bw, tol=1e-13, max_steps=300)))(params)
    chex.assert_trees_all_close(
        grad("jfb"), grad(ij.PhantomNeumann(k=1, damping=1.0)), grad(ij.PhantomUnroll(k=1, damping=1.0)), atol=1e-9
    )
