"""The argmin adjoint context (HVPs, the mixed pull-back, CG) against dense derivatives, and option checks."""

import chex
import jax
import jax.numpy as jnp
import pytest

import implicit_jax as ij
from implicit_jax.bilevel.argmin_estimators import ArgminProblem
from implicit_jax.solvers import LBFGS, StopCriterion
from tests.bilevel import ridge
from tests.bilevel.argmin_estimators.common import LAM, W0


def _context(want_info=False):
    problem = ArgminProblem(lambda w, theta: ridge.inner(w, theta))
    inputs = (LAM, [jnp.ones(2)])
    w, _, state = problem.solve(LBFGS(), StopCriterion(tol=1e-12, max_steps=200), inputs, W0)
    return problem.backward_context(LBFGS(), StopCriterion(tol=1e-12), inputs, w, state, want_info)


@pytest.mark.slow
def test_hvp_and_pull_match_dense_derivatives():
    ctx = _context()
    u = jnp.linspace(-1.0, 1.0, ridge.D)
    chex.assert_trees_all_close(ctx.hvp(u), ridge.hessian(LAM) @ u, rtol=1e-9)
    mixed = jax.jacfwd(jax.grad(ridge.inner), argnums=1)(ctx.w, LAM)  # d(grad_w g)/d lambda
    d_theta, d_consts = ctx.pull(u)
    chex.assert_trees_all_close(d_theta, -(mixed @ u), rtol=1e-9)
    chex.assert_trees_all_close(d_consts, [jnp.zeros(2)])  # the outer loss's constants get no gradient


def test_cg_solves_the_hessian_system_and_reports_it():
    ctx = _context()
    v = ridge.outer_cotangent(LAM)
    u, info = ctx.cg(v, jnp.zeros_like(v), 1e-12, 100)
    chex.assert_trees_all_close(u, jnp.linalg.solve(ridge.hessian(LAM), v), rtol=1e-8)
    assert bool(info.converged) and 1 <= int(info.steps) <= ridge.D + 2 and float(info.rel_residual) <= 1e-12


def test_info_without_solve_costs_an_hvp_only_when_asked():
    v = ridge.outer_cotangent(LAM)
    assert jnp.isnan(_context(want_info=False).info_without_solve(v, v).abs_residual)
    info = _context(want_info=True).info_without_solve(v, v)
    chex.assert_trees_all_close(info.abs_residual, jnp.linalg.norm(ridge.hessian(LAM) @ v - v), rtol=1e-9)


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: ij.ArgminImplicit(max_steps=0), "max_steps"),
        (lambda: ij.ArgminNeumann(k=0), "k"),
        (lambda: ij.ArgminNeumann(step_size=-1.0), "step_size"),
        (lambda: ij.ArgminShine(opa_every=-1), "opa_every"),
        (lambda: ij.ArgminShine(refine=1.5), "refine"),
        (lambda: ij.ArgminShine(fallback_tol=0.0), "fallback_tol"),
    ],
)
def test_bad_options_name_the_field(make, field):
    with pytest.raises(ValueError, match=field):
        make()
