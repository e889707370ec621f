import jax
import jax.numpy as jnp
import optax
import pytest

from implicit_jax import quasi_newton as qn
from implicit_jax.solvers import LBFGS, OptaxMinimizer, StopCriterion, minimize
from implicit_jax.solvers.minimizers.base import OuterAwareness, opa_pair


def _quadratic():
    a = jnp.diag(jnp.linspace(0.1, 10.0, 20, dtype=jnp.float64))
    return a, jax.value_and_grad(lambda w: 0.5 * w @ a @ w - jnp.sum(w))


@pytest.mark.slow
def test_rel_and_abs_stopping():
    _, vg = _quadratic()
    w0 = jnp.zeros(20, jnp.float64)
    _, info_abs, _ = minimize(LBFGS(), vg, w0, StopCriterion(tol=1e-3, max_steps=200, stop_mode="abs"))
    _, info_rel, _ = minimize(LBFGS(), vg, w0, StopCriterion(tol=1e-3, max_steps=200, stop_mode="rel"))
    assert float(info_abs.grad_norm) <= 1e-3
    assert float(info_rel.grad_norm) <= 1e-3 * jnp.sqrt(20.0)  # relative to |grad g(0)| = sqrt(20)
    assert bool(info_abs.converged) and bool(info_rel.converged)


@pytest.mark.slow
def test_opa_pair_is_a_secant_pair_along_the_outer_direction():
    a, vg = _quadratic()
    memory = qn.lbfgs_update(qn.lbfgs_init(20, 5, jnp.float64), jnp.ones(20) * 0.1, a @ (jnp.ones(20) * 0.1))
    w = jnp.ones(20, jnp.float64)
    outer = jnp.arange(20.0)
    new = opa_pair(memory, vg, w, vg(w)[1], lambda _: outer)
    assert int(new.count) == 2
    s, y = new.s[1], new.y[1]
    direction = qn.lbfgs_inverse_hvp(memory, outer)
    assert abs(float(jnp.vdot(s, direction)) / float(jnp.linalg.norm(s) * jnp.linalg.norm(direction)) - 1) < 1e-12
    assert abs(float(jnp.linalg.norm(s)) - float(jnp.linalg.norm(memory.s[0]))) < 1e-12  # last step's length
    assert float(jnp.max(jnp.abs(y - a @ s))) < 1e-10


def test_opa_costs_one_gradient_every_period():
    _, vg = _quadratic()
    optimizer = OptaxMinimizer(optax.sgd(0.05), memory=8)  # one gradient per step, so the count is exact
    _, info, state = minimize(
        optimizer, vg, jnp.zeros(20, jnp.float64), StopCriterion(tol=1e-12, max_steps=10), opa=OuterAwareness(lambda w: w, 3)
    )
    assert int(info.steps) == 10
    assert int(info.num_grad_evals) == 1 + 10 + 10 // 3
    assert int(state.memory.count) == 10 + 10 // 3


def test_opa_and_unrolling_do_not_mix():
    _, vg = _quadratic()
    with pytest.raises(ValueError, match="OPA"):
        minimize(LBFGS(), vg, jnp.zeros(20), StopCriterion(), opa=OuterAwareness(lambda w: w, 3), unrolled=True)
