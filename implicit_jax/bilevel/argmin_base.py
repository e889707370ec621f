r"""The skeleton every ``argmin`` backward shares.

For :math:`w^\star(\lambda) = \arg\min_w g(w, \lambda)` with :math:`g` smooth and strongly
convex in :math:`w` near :math:`w^\star`, the implicit function theorem on
:math:`\nabla_w g(w^\star, \lambda) = 0` gives, for an outer cotangent :math:`v = \partial F/\partial w^\star`,

.. math:: \bar\lambda = -\left(\partial^2_{\lambda w} g\right)^\top u, \qquad u = \left(\nabla^2_w g\right)^{-1} v

(e.g. Pedregosa 2016, eq. 3; Lorraine et al. 2020, eq. 4). Each estimator is a different
way of producing :math:`u` (CG, the L-BFGS estimate, a Neumann series, the identity);
:func:`custom_argmin` turns such a rule into its own ``jax.custom_vjp`` function whose
forward runs the inner solver under ``lax.while_loop`` (never differentiated) and whose
backward applies the rule at :math:`w^\star`, then one mixed second-derivative VJP.
The starting point ``w0`` gets a zero cotangent.
"""

from __future__ import annotations

import abc
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from implicit_jax.errors import raise_if_backward_failed
from implicit_jax.estimators.base import BackwardInfo
from implicit_jax.solvers.cg import CGInfo, conjugate_gradient
from implicit_jax.solvers.minimize import AbstractMinimizer, MinimizeInfo, OuterAwareness, minimize
from implicit_jax.solvers.base import StopCriterion

PyTree = Any


class ArgminProblem(NamedTuple):
    """Static description: ``objective(w_flat, theta) -> scalar`` with ``theta`` the differentiable inputs."""

    objective: Callable[[jax.Array, PyTree], jax.Array]

    def value_and_grad(self, theta: PyTree) -> Callable[[jax.Array], tuple[jax.Array, jax.Array]]:
        return jax.value_and_grad(lambda w: self.objective(w, theta))

    def solve(self, minimizer, criterion, theta, w0, *, outer=None, unrolled=False):
        opa = None
        if outer is not None:
            outer_fn, outer_consts, every = outer
            opa = OuterAwareness(jax.grad(lambda w: outer_fn(w, outer_consts)), every)
        return minimize(minimizer, self.value_and_grad(theta), w0, criterion, opa=opa, unrolled=unrolled)


class ArgminContext(NamedTuple):
    """What a rule may use: the problem, :math:`w^\\star`, the inner solver's memory and HVPs there."""

    problem: ArgminProblem
    criterion: StopCriterion
    theta: PyTree
    w: jax.Array
    solver_state: Any
    want_info: bool

    def hvp(self, u: jax.Array) -> jax.Array:
        """:math:`\\nabla^2_w g(w^\\star, \\lambda)\\, u` (forward-over-reverse)."""
        grad = jax.grad(self.problem.objective)
        return jax.jvp(lambda w: grad(w, self.theta), (self.w,), (u,))[1]

    def mixed_vjp(self, u: jax.Array) -> PyTree:
        """:math:`-(\\partial^2_{\\lambda w} g)^\\top u`, the hypergradient for the adjoint ``u``."""
        _, pull = jax.vjp(lambda theta: jax.grad(self.problem.objective)(self.w, theta), self.theta)
        return jax.tree_util.tree_map(jnp.negative, pull(u)[0])

    def cg(self, v: jax.Array, u0: jax.Array, tol: float, max_steps: int) -> tuple[jax.Array, CGInfo]:
        return conjugate_gradient(self.hvp, v, u0, tol=tol, max_steps=max_steps)

    def residual_info(self, u: jax.Array, v: jax.Array, *, steps=0, fallback_fraction=0.0) -> BackwardInfo:
        """Info for rules without a solve: :math:`\\|\\nabla^2 g\\, u - v\\|` (one HVP) only if a tap asked."""
        nan = jnp.full((), jnp.nan, v.dtype)
        abs_res = jnp.linalg.norm(self.hvp(u) - v) if self.want_info else nan
        return BackwardInfo(jnp.asarray(steps, v.dtype), abs_res, abs_res / jnp.linalg.norm(v), nan, jnp.asarray(fallback_fraction, v.dtype))


def cg_info(info: CGInfo, v: jax.Array, fallback_fraction=0.0) -> BackwardInfo:
    return BackwardInfo(
        info.steps.astype(v.dtype), (info.residual * jnp.linalg.norm(v)).astype(v.dtype), info.residual.astype(v.dtype),
        info.converged.astype(v.dtype), jnp.asarray(fallback_fraction, v.dtype),
    )


# (config, ctx, v) -> (u, BackwardInfo) with u ~ (Hessian)^{-1} v.
AdjointRule = Callable[[Any, ArgminContext, jax.Array], tuple[jax.Array, BackwardInfo]]


def custom_argmin(rule: AdjointRule, name: str):
    """Wrap an adjoint rule into a ``jax.custom_vjp`` inner minimisation.

    Signature ``(config, problem, minimizer, criterion, outer, want_info, theta, w0, outer_consts, tap) -> (w, info)``;
    the first six arguments are static. ``outer`` is ``None`` or ``(outer_fn, every)`` for OPA.
    """

    @functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3, 4, 5))
    def solve(config, problem, minimizer, criterion, outer, want_info, theta, w0, outer_consts, tap):
        w, info, _ = _forward(problem, minimizer, criterion, outer, theta, w0, outer_consts)
        return w, info

    def solve_fwd(config, problem, minimizer, criterion, outer, want_info, theta, w0, outer_consts, tap):
        w, info, state = _forward(problem, minimizer, criterion, outer, theta, w0, outer_consts)
        return (w, info), (theta, w, state, outer_consts)

    def solve_bwd(config, problem, minimizer, criterion, outer, want_info, residuals, cotangents):
        theta, w, state, outer_consts = residuals
        v, _ = cotangents
        ctx = ArgminContext(problem, criterion, theta, w, state, want_info)
        u, info = rule(config, ctx, v)
        if criterion.throw:
            raise_if_backward_failed(info, name)
        zeros = jax.tree_util.tree_map(jnp.zeros_like, outer_consts)
        return ctx.mixed_vjp(u), jnp.zeros_like(w), zeros, (info if want_info else None)

    solve.defvjp(solve_fwd, solve_bwd)
    solve.__name__ = f"{name}_argmin"
    solve.__doc__ = f"Inner minimisation whose ``jax.custom_vjp`` backward is the {name!r} hypergradient."
    return solve


def _forward(problem, minimizer, criterion, outer, theta, w0, outer_consts):
    full_outer = None if outer is None else (outer[0], outer_consts, outer[1])
    return problem.solve(minimizer, criterion, theta, w0, outer=full_outer)


class AbstractArgminBackward(abc.ABC):
    """A hypergradient estimator for :func:`implicit_jax.argmin`: frozen, hashable configuration."""

    name: str = ""

    def outer_awareness(self) -> int:
        """OPA period in inner steps (0: this estimator does not use the outer loss)."""
        return 0

    @abc.abstractmethod
    def solve(self, problem: ArgminProblem, minimizer: AbstractMinimizer, criterion: StopCriterion, theta, w0, outer, tap) -> tuple[jax.Array, MinimizeInfo]:
        ...


class CustomVJPArgminBackward(AbstractArgminBackward):
    """Estimators defined by an adjoint rule, each with its own ``jax.custom_vjp`` function."""

    _custom_solve: Callable = None

    def solve(self, problem, minimizer, criterion, theta, w0, outer, tap):
        static_outer, outer_consts = (None, ()) if outer is None else ((outer[0], outer[2]), outer[1])
        return type(self)._custom_solve(self, problem, minimizer, criterion, static_outer, tap is not None, theta, w0, outer_consts, tap)
