"""Backprop through the unrolled solver: the reference the implicit estimators approximate."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import implicit_jax as ij
from implicit_jax.testing import linear_closed_form, linear_problem, tanh_layer


@pytest.mark.slow
@pytest.mark.parametrize("solver", ["fixed_point_iteration", "anderson", "broyden"])
def test_linear_map_matches_closed_form(solver):
    f, params, x, c = linear_problem()
    u = jnp.linalg.solve(jnp.eye(6) - params["W"].T, c)
    _, expected, dx = linear_closed_form(params, x, c, u)
    loss = lambda p, x: jnp.sum(c * ij.fixed_point(f, p, x, solver=solver, backward="unroll", tol=1e-12, max_steps=200))
    chex.assert_trees_all_close(jax.grad(loss, argnums=(0, 1))(params, x), (expected, dx), atol=1e-5)


@pytest.mark.slow
def test_gradient_reaches_z0_only_when_unconverged():
    f, params, x, c = tanh_layer(d=8, batch=2)
    z0 = jnp.zeros_like(x)
    grad_z0 = lambda steps: jax.grad(
        lambda z0: jnp.sum(c * ij.fixed_point(f, params, x, z0=z0, backward="unroll", tol=1e-14, max_steps=steps, batched=True))
    )(z0)
    assert np.linalg.norm(grad_z0(2)) > 1e-2
    assert np.linalg.norm(grad_z0(200)) < 1e-10


def test_line_search_cannot_be_unrolled():
    f, params, x, _ = linear_problem()
    with pytest.raises(ValueError, match="line_search=False"):
        ij.fixed_point(f, params, x, solver=ij.Broyden(line_search=True), backward="unroll")


@pytest.mark.parametrize(
    "solver", ["fixed_point_iteration", ij.Anderson(memory=3), ij.Broyden(memory=8)], ids=["fpi", "anderson", "broyden"]
)  # small memories compile faster
@pytest.mark.slow
@pytest.mark.parametrize("max_steps", [3, 60])  # stopped by the cap (z0 matters) and converged
def test_replay_equals_autodiff_through_the_scan(solver, max_steps):
    f, params, x, c = tanh_layer(d=8, batch=3)
    z0 = 0.1 * jnp.ones_like(x)

    def grads(replay):
        def loss(p, x, z0):
            return jnp.sum(
                c
                * ij.fixed_point(
                    f, p, x, z0=z0, solver=solver, backward=ij.Unroll(replay=replay), tol=1e-10, max_steps=max_steps, batched=True
                )
            )

        return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(params, x, z0)

    replayed = grads(True)
    chex.assert_trees_all_close(replayed, grads(False), atol=1e-12, rtol=1e-10)
    assert (np.linalg.norm(replayed[2]) > 1e-2) == (max_steps == 3)


@pytest.mark.slow
def test_replay_matches_closed_form_under_vmap():
    f, params, x, c = linear_problem()
    u = jnp.linalg.solve(jnp.eye(6) - params["W"].T, c)
    _, expected, _ = linear_closed_form(params, x, c, u)
    loss = lambda p, x: jnp.sum(c * ij.fixed_point(f, p, x, backward=ij.Unroll(replay=True), tol=1e-12, max_steps=60))
    per_input = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0)))(params, jnp.stack([x, x]))
    chex.assert_trees_all_close(jax.tree_util.tree_map(lambda g: g[1], per_input), expected, atol=1e-6)


def test_replay_is_reverse_mode_only_and_keeps_the_solver_check():
    f, params, x, _ = linear_problem()
    with pytest.raises(ValueError, match="line_search=False"):
        ij.fixed_point(f, params, x, solver=ij.Broyden(line_search=True), backward=ij.Unroll(replay=True))
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(lambda x: ij.fixed_point(f, params, x, backward=ij.Unroll(replay=True)), (x,), (x,))
