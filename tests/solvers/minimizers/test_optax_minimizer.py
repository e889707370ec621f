import chex
import jax
import jax.numpy as jnp
import optax
import pytest

from implicit_jax.solvers import OptaxMinimizer, StopCriterion, minimize


def test_optax_optimizer_converges_and_records_secant_pairs():
    a = jnp.diag(jnp.array([1.0, 2.0, 4.0], jnp.float64))
    vg = jax.value_and_grad(lambda w: 0.5 * w @ a @ w - jnp.sum(w))
    w, info, state = minimize(
        OptaxMinimizer(optax.sgd(0.2, momentum=0.5), memory=5),
        vg,
        jnp.zeros(3, jnp.float64),
        StopCriterion(tol=1e-8, max_steps=500, stop_mode="abs"),
    )
    chex.assert_trees_all_close(w, jnp.array([1.0, 0.5, 0.25]), atol=1e-7)
    assert bool(info.converged) and int(info.num_grad_evals) == int(info.steps) + 1
    assert int(state.memory.count) == int(info.steps)
    chex.assert_trees_all_close(state.memory.y[0], a @ state.memory.s[0], atol=1e-12)


def test_runs_at_most_max_steps():
    vg = jax.value_and_grad(lambda w: jnp.sum(w**2))
    _, info, _ = minimize(OptaxMinimizer(optax.sgd(1e-3)), vg, jnp.ones(2), StopCriterion(tol=1e-12, max_steps=7))
    assert int(info.steps) == 7 and not bool(info.converged)


def test_rejects_non_optax_optimizer():
    with pytest.raises(TypeError, match="optax.GradientTransformation"):
        OptaxMinimizer("adam")


def test_line_search_optimizers_get_value_grad_and_value_fn():
    # optax.lbfgs() runs a zoom line search, which needs optax's extra arguments
    a = jnp.diag(jnp.array([1.0, 2.0, 4.0], jnp.float64))
    vg = jax.value_and_grad(lambda w: 0.5 * w @ a @ w - jnp.sum(w))
    w, info, state = jax.jit(
        lambda w0: minimize(
            OptaxMinimizer(optax.lbfgs(), memory=5), vg, w0, StopCriterion(tol=1e-10, max_steps=50, stop_mode="abs")
        )
    )(jnp.zeros(3, jnp.float64))
    chex.assert_trees_all_close(w, jnp.array([1.0, 0.5, 0.25]), atol=1e-9)
    assert bool(info.converged) and int(info.steps) <= 10
    assert int(info.num_grad_evals) > int(info.steps) + 1  # the line search's evaluations are counted
    assert int(state.memory.count) == int(info.steps)  # SHINE's own secant pairs are recorded as well
