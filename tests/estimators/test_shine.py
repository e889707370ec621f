"""SHINE (Ramzi et al. 2022): reuse of the forward quasi-Newton inverse (Broyden's or Anderson's) in the backward pass."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import implicit_jax as ij
from implicit_jax.testing import linear_closed_form, linear_problem, tanh_layer, tree_cosine

# Measured on tanh_layer(d=64, batch=8, ||W|| = 0.9, x_scale=0.3), Broyden to rel 1e-10,
# seeds 0-3: SHINE cosine to the exact gradient 0.922-0.933, Jacobian-free 0.888-0.909.
SHINE_COSINE_THRESHOLD = 0.9


def grads(f, params, x, c, backward, tol=1e-10, tap=None, solver="broyden"):
    """((d params, d x), BackwardInfo or None) of sum(c * z*)."""

    def loss(p, x, tap):
        return jnp.sum(
            c * ij.fixed_point(f, p, x, solver=solver, backward=backward, tol=tol, max_steps=200, batched=True, backward_tap=tap)
        )

    d_params, d_x, info = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(params, x, tap)
    return (d_params, d_x), info


SOLVERS = ["broyden", "anderson"]


@pytest.mark.slow
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("seed", [0, 1])
def test_converged_shine_beats_threshold_and_jacobian_free(seed, solver):
    f, params, x, c = tanh_layer(d=64, batch=8, seed=seed)
    (exact, _), _ = grads(f, params, x, c, "implicit")
    (shine, _), _ = grads(f, params, x, c, "shine", solver=solver)
    (jfb, _), _ = grads(f, params, x, c, "jfb", solver=solver)
    assert tree_cosine(shine, exact) > SHINE_COSINE_THRESHOLD
    assert tree_cosine(shine, exact) > tree_cosine(jfb, exact)


@pytest.mark.parametrize("solver", SOLVERS)
def test_refine_recovers_the_exact_gradient(solver):
    f, params, x, c = tanh_layer(d=32, batch=4)
    exact, _ = grads(f, params, x, c, "implicit")
    refined, info = grads(f, params, x, c, ij.Shine(refine=20, refine_tol=1e-12), tap=ij.backward_tap(jnp.float64), solver=solver)
    assert tree_cosine(refined, exact) > 0.999999
    assert 1 <= float(info.steps) <= 20


def test_linear_map_after_convergence_is_close_to_exact():
    # On a linear map Broyden explores the Krylov space of the residual, so H^T c is accurate in the directions used.
    f, params, x, c = linear_problem(d=6)
    u = jnp.linalg.solve(jnp.eye(6) - params["W"].T, c)
    _, exact, _ = linear_closed_form(params, x, c, u)
    shine = jax.grad(
        lambda p: jnp.sum(c * ij.fixed_point(f, p, x, solver=ij.Broyden(memory=50), backward="shine", tol=1e-13, max_steps=100))
    )(params)
    assert tree_cosine(shine, exact) > 0.9


@pytest.mark.slow
def test_anderson_with_memory_above_the_dimension_is_exact_on_a_linear_map():
    # The differences of d + 1 iterates of an affine map span R^d and satisfy Delta R = (W - I) Delta Z,
    # so the multisecant estimate is (W - I)^{-1} itself and SHINE gives the implicit gradient.
    f, params, x, c = linear_problem(d=6)
    u = jnp.linalg.solve(jnp.eye(6) - params["W"].T, c)
    _, exact, _ = linear_closed_form(params, x, c, u)
    solver = ij.Anderson(memory=8, regularization=0.0)
    z0 = jax.random.normal(jax.random.key(3), (6,), jnp.float64)  # a generic start, so the iterates explore every direction
    shine = jax.grad(
        lambda p: jnp.sum(
            c * ij.fixed_point(f, p, x, z0=z0, solver=solver, backward="shine", tol=1e-13, stop_mode="abs", max_steps=7)
        )
    )(params)
    chex.assert_trees_all_close(shine, exact, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("batched", [True, False])
def test_shine_on_anderson_takes_every_state_type(batched):
    """Pytree params and a tuple state, batched or not, under jit, vmap equal to the batched solve."""
    k = jax.random.split(jax.random.key(0), 3)
    params = {"A": 0.2 * jax.random.normal(k[0], (4, 4)), "B": {"w": 0.15 * jax.random.normal(k[1], (3, 4))}}
    x = jax.random.normal(k[2], (2, 4) if batched else (4,))

    def f(p, z, x):
        a, b = z
        return jnp.tanh(a @ p["A"].T + x + 0.1 * jnp.sum(b, axis=-1, keepdims=True)), jnp.tanh(a @ p["B"]["w"].T)

    lead = (2,) if batched else ()
    z0 = (jnp.zeros(lead + (4,)), jnp.zeros(lead + (3,)))

    def loss(p, x, backward):
        z = ij.fixed_point(f, p, x, z0=z0, solver="anderson", backward=backward, tol=1e-10, max_steps=100, batched=batched)
        return sum(jnp.sum(leaf**2) for leaf in z)

    shine = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)(params, x, "shine")
    exact = jax.grad(loss, argnums=(0, 1))(params, x, "implicit")
    chex.assert_trees_all_equal_structs(shine, exact)
    assert tree_cosine(shine, exact) > 0.9
    if batched:  # each sample has its own history: vmap over single samples gives the batched gradient

        def single(p, xi):
            z = ij.fixed_point(
                f, p, xi, z0=(jnp.zeros(4), jnp.zeros(3)), solver="anderson", backward="shine", tol=1e-10, max_steps=100
            )
            return sum(jnp.sum(leaf**2) for leaf in z)

        per_sample = jax.vmap(jax.grad(single), in_axes=(None, 0))(params, x)
        chex.assert_trees_all_close(jax.tree_util.tree_map(lambda g: g.sum(0), per_sample), shine[0], rtol=1e-6, atol=1e-12)


@pytest.mark.slow
def test_fallback_triggers_per_sample_where_the_estimate_blows_up():
    # Sample 0 saturates tanh (J ~ 0, SHINE u ~ g). Sample 1 sits near z = 0 with W = 0.99 I,
    # so I - J is nearly singular along the cotangent, which Broyden explored: its SHINE
    # direction has norm ~60 ||g|| (measured), far above the official 1.8 ||g|| rule, and the
    # fallback replaces it by the Jacobian-free g for that sample only.
    d = 16
    params = {"W": 0.99 * jnp.eye(d, dtype=jnp.float64)}
    x = jnp.stack([3.0 * jnp.ones(d), 1e-3 * jnp.ones(d)])
    c = jnp.ones((2, d)) + 0.1 * jax.random.normal(jax.random.PRNGKey(2), (2, d), jnp.float64)
    f = lambda p, z, x: jnp.tanh(z @ p["W"].T + x)

    def dx(backward, tap=None):
        return grads(f, params, x, c, backward, tol=1e-10, tap=tap)

    (_, dx_shine), _ = dx("shine")
    (_, dx_jfb), _ = dx("jfb")
    (_, dx_fallback), info = dx(ij.Shine(fallback=True), tap=ij.backward_tap(jnp.float64))
    assert float(info.fallback_fraction) == 0.5
    np.testing.assert_allclose(dx_fallback[1], dx_jfb[1], rtol=1e-10)  # fell back
    np.testing.assert_allclose(dx_fallback[0], dx_shine[0], rtol=1e-10)  # kept SHINE
    assert np.linalg.norm(dx_shine[1]) > 1.8 * np.linalg.norm(dx_jfb[1])
    # a ratio above the amplification turns the fallback off
    (_, dx_loose), info = dx(ij.Shine(fallback=True, fallback_ratio=1e6), tap=ij.backward_tap(jnp.float64))
    assert float(info.fallback_fraction) == 0.0
    np.testing.assert_allclose(dx_loose, dx_shine, rtol=1e-10)


def test_needs_a_quasi_newton_forward_solver():
    f, params, x, _ = linear_problem()
    with pytest.raises(ValueError, match="needs solver='broyden' or 'anderson'"):
        ij.fixed_point(f, params, x, solver="fixed_point_iteration", backward="shine")


def test_tap_reports_adjoint_residual_only_on_request():
    f, params, x, c = tanh_layer(d=16, batch=2)
    _, info = grads(f, params, x, c, "shine", tap=ij.backward_tap(jnp.float64))
    assert float(info.steps) == 0 and np.isfinite(float(info.abs_residual)) and np.isnan(float(info.converged))


def test_invalid_configuration():
    with pytest.raises(ValueError, match="refine"):
        ij.Shine(refine=-1)
    with pytest.raises(ValueError, match="fallback_ratio"):
        ij.Shine(fallback_ratio=0.0)
