"""The shared adjoint skeleton: a cotangent rule on any problem becomes a custom_vjp root solve."""

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import implicit_jax as ij
from implicit_jax.adjoint import (
    AdjointContext,
    BackwardInfo,
    backward_tap,
    custom_root,
    linear_residual,
    solver_backward_info,
    unsolved_info,
)
from implicit_jax.solvers import SolverInfo, StopCriterion


class ScalarRoot(NamedTuple):
    """The root of y^3 + a y - b (a, b > 0): one real root, found by Newton steps."""

    def solve(self, solver, criterion, inputs, y0):
        a, b = inputs
        y = jax.lax.fori_loop(0, 60, lambda _, y: y - (y**3 + a * y - b) / (3 * y**2 + a), y0)
        info = SolverInfo(jnp.int32(60), jnp.int32(60), jnp.abs(y**3 + a * y - b), jnp.zeros(()), jnp.ones((), bool))
        return y, info, {"slope": 3 * y**2 + a}

    def backward_context(self, solver, criterion, inputs, y, state, want_info):
        return AdjointContext(self, solver, criterion, inputs, y, state, want_info)


def exact_rule(config, ctx, g):
    # F(y, a, b) = y^3 + a y - b: u = g / F_y, d_inputs = -(F_a u, F_b u) = (-y u, u)
    slope = ctx.solver_state["slope"] if ctx.solver_state is not None else 3 * ctx.y**2 + ctx.inputs[0]
    u = g / slope
    return (-ctx.y * u, u), unsolved_info(None, g.dtype, steps=1)


root = custom_root(exact_rule, "exact")
root_with_state = custom_root(exact_rule, "exact", keeps_solver_state=True)


@pytest.mark.parametrize("solve", [root, root_with_state], ids=["residuals", "solver_state"])
def test_custom_root_gives_the_implicit_function_theorem_gradient(solve):
    a, b = jnp.asarray(2.0, jnp.float64), jnp.asarray(3.0, jnp.float64)
    y_of = lambda a, b: solve(None, ScalarRoot(), None, StopCriterion(), (a, b), jnp.asarray(1.0, jnp.float64), None)[0]
    y = y_of(a, b)
    np.testing.assert_allclose(y**3 + a * y - b, 0.0, atol=1e-12)
    grads = jax.jit(jax.grad(y_of, argnums=(0, 1)))(a, b)
    eps = 1e-6
    fd = ((y_of(a + eps, b) - y_of(a - eps, b)) / (2 * eps), (y_of(a, b + eps) - y_of(a, b - eps)) / (2 * eps))
    chex.assert_trees_all_close(grads, fd, rtol=1e-7)
    # the starting point gets no gradient: the root does not depend on it
    d_y0 = jax.grad(lambda y0: solve(None, ScalarRoot(), None, StopCriterion(), (a, b), y0, None)[0])(
        jnp.asarray(1.0, jnp.float64)
    )
    assert float(d_y0) == 0.0


def test_a_tap_receives_the_rules_info_and_the_wrapper_names_the_estimator():
    a, b = jnp.asarray(2.0, jnp.float64), jnp.asarray(3.0, jnp.float64)
    loss = lambda a, tap: root(None, ScalarRoot(), None, StopCriterion(), (a, b), jnp.asarray(1.0, jnp.float64), tap)[0]
    info = jax.grad(loss, argnums=1)(a, backward_tap(jnp.float64))
    assert isinstance(info, BackwardInfo) and float(info.steps) == 1.0 and np.isnan(float(info.abs_residual))
    assert root.__name__ == "exact_root"


def test_info_helpers():
    apply_a = lambda u: 0.5 * u
    u, b = jnp.ones((2, 3)), jnp.full((2, 3), 0.5)
    abs_res, rel_res = linear_residual(apply_a, u, b)  # u - Au - b = 0
    assert float(abs_res) == 0.0 and float(rel_res) == 0.0
    info = solver_backward_info(
        SolverInfo(jnp.int32(4), jnp.int32(5), jnp.array([1e-3, 2e-3]), jnp.array([1e-4, 3e-4]), jnp.array([True, False])),
        jnp.float32,
    )
    chex.assert_trees_all_close(info, BackwardInfo(*map(jnp.float32, (4.0, 2e-3, 3e-4, 0.0, 0.0))))


def test_every_fixed_point_estimator_module_owns_its_custom_vjp_wrapper():
    # The path from a class to its rule is visible: each class's solve calls its module's wrapper by name.
    import inspect

    from implicit_jax.estimators import implicit, jfb, phantom, shine

    for module, wrapper, cls in [
        (implicit, "implicit_fixed_point", ij.Implicit),
        (shine, "shine_fixed_point", ij.Shine),
        (jfb, "jfb_fixed_point", ij.JFB),
        (phantom, "phantom_unroll_fixed_point", ij.PhantomUnroll),
        (phantom, "phantom_neumann_fixed_point", ij.PhantomNeumann),
    ]:
        assert callable(getattr(module, wrapper))
        assert wrapper in inspect.getsource(cls.solve)
