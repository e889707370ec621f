import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from implicit_jax.solvers import LBFGS, StopCriterion, minimize


def rosenbrock(w):
    return jnp.sum(100.0 * (w[1:] - w[:-1] ** 2) ** 2 + (1 - w[:-1]) ** 2)


def test_minimises_rosenbrock():
    w, info, state = minimize(
        LBFGS(memory=10),
        jax.value_and_grad(rosenbrock),
        jnp.zeros(6, jnp.float64),
        StopCriterion(tol=1e-9, max_steps=500, stop_mode="abs"),
    )
    chex.assert_trees_all_close(w, jnp.ones(6), atol=1e-6)
    assert bool(info.converged) and float(info.grad_norm) <= 1e-9
    assert int(info.num_grad_evals) >= int(info.steps) + 1
    assert int(state.memory.count) > 0


def test_quadratic_memory_holds_valid_secant_pairs():
    a = jnp.diag(jnp.arange(1.0, 6.0, dtype=jnp.float64))
    vg = jax.value_and_grad(lambda w: 0.5 * w @ a @ w - jnp.sum(w))
    w, _info, state = minimize(
        LBFGS(memory=4), vg, jnp.zeros(5, jnp.float64), StopCriterion(tol=1e-10, max_steps=100, stop_mode="abs")
    )
    chex.assert_trees_all_close(w, 1.0 / jnp.arange(1.0, 6.0), atol=1e-9)
    stored = min(int(state.memory.count), 4)
    for i in range(stored):  # y = A s on a quadratic
        chex.assert_trees_all_close(state.memory.y[i], a @ state.memory.s[i], atol=1e-10)


@pytest.mark.slow
def test_unrolled_run_equals_while_loop_run_and_is_differentiable():
    def solve(scale, unrolled):
        vg = jax.value_and_grad(lambda w: jnp.sum((w - scale) ** 2) + 0.1 * jnp.sum(w**4))
        w, _, _ = minimize(
            LBFGS(), vg, jnp.zeros(3, jnp.float64), StopCriterion(tol=1e-10, max_steps=25, stop_mode="abs"), unrolled=unrolled
        )
        return w

    chex.assert_trees_all_close(solve(1.5, True), solve(1.5, False), atol=1e-12)
    grad = jax.grad(lambda s: jnp.sum(solve(s, True)))(1.5)
    eps = 1e-6
    fd = (jnp.sum(solve(1.5 + eps, False)) - jnp.sum(solve(1.5 - eps, False))) / (2 * eps)
    np.testing.assert_allclose(grad, fd, rtol=1e-5)


def test_nan_objective_is_never_converged():
    vg = jax.value_and_grad(lambda w: jnp.sum(jnp.log(w)))  # log of negatives: NaN
    _, info, _ = minimize(LBFGS(), vg, -jnp.ones(2), StopCriterion(tol=1e-6, max_steps=20))
    assert not bool(info.converged)


@pytest.mark.parametrize("field, value", [("memory", 0), ("max_linesearch", 0), ("c1", 1.5), ("c2", 1e-5), ("approx_eps", -1.0)])
def test_bad_options_are_rejected(field, value):
    with pytest.raises(ValueError, match=field):
        LBFGS(**{field: value})
