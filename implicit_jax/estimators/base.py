r"""The skeleton every backward estimator shares.

Notation: :math:`z^\star = f(\theta, z^\star, x)`, :math:`J = \partial f / \partial z` at
:math:`z^\star`, :math:`g` the incoming cotangent. Exact implicit differentiation gives

.. math:: \bar\theta = (\partial f / \partial \theta)^\top u, \quad u = (I - J^\top)^{-1} g,

and each estimator is a different way of producing :math:`u` (or, for the phantom
unrolled gradient, of producing :math:`\bar\theta` directly). :func:`custom_fixed_point`
turns an estimator's *cotangent rule* into its own ``jax.custom_vjp`` function: the
forward runs the solver under ``lax.while_loop`` (never differentiated), the backward
calls the rule at the solution. The initial point ``z0`` gets a zero cotangent: the
fixed point does not depend on it.
"""

from __future__ import annotations

import abc
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from implicit_jax import _flat
from implicit_jax.errors import raise_if_backward_failed
from implicit_jax.solvers.base import AbstractFixedPointSolver, SolverInfo, StopCriterion, iterate

PyTree = Any


class BackwardInfo(NamedTuple):
    """Diagnostics of a backward pass, read through :func:`backward_tap` (floats, maxima over samples).

    Attributes:
      steps: iterations of the adjoint solve (0 where there is none; -1 where the
        solver does not report it).
      abs_residual: :math:`\\|u - J^\\top u - g\\|` of the adjoint estimate :math:`u`
        (NaN where it would cost an extra VJP nobody asked for).
      rel_residual: the same divided by :math:`\\|g\\|`.
      converged: 1.0 where the adjoint solve met its tolerance, else 0.0 (NaN where
        there is no adjoint solve).
      fallback_fraction: share of samples where SHINE fell back to the Jacobian-free
        direction (0 for the other estimators).
    """

    steps: jax.Array
    abs_residual: jax.Array
    rel_residual: jax.Array
    converged: jax.Array
    fallback_fraction: jax.Array


def backward_tap(dtype=jnp.float32) -> BackwardInfo:
    """A zero "tap" to pass as ``fixed_point(..., backward_tap=tap)``.

    Differentiate with respect to it and its cotangent is the :class:`BackwardInfo` of the
    backward pass::

        def loss(params, tap):
            z = fixed_point(f, params, x, backward_tap=tap)
            return jnp.sum(z ** 2)

        grads, bwd_info = jax.grad(loss, argnums=(0, 1))(params, backward_tap())
    """
    zero = jnp.zeros((), dtype)
    return BackwardInfo(zero, zero, zero, zero, zero)


class FixedPointProblem(NamedTuple):
    """Static description of the problem: ``fn(params, z, x)`` on pytrees and the state layout."""

    fn: Callable[[PyTree, PyTree, PyTree], PyTree]
    layout: _flat.StateLayout

    def flat_fn(self, params: PyTree, x: PyTree) -> Callable[[jax.Array], jax.Array]:
        return _flat.flat_map(self.layout, lambda z: self.fn(params, z, x))

    def solve(self, solver, criterion, params, x, z0, *, unrolled: bool = False):
        return iterate(solver, self.flat_fn(params, x), z0, criterion, unrolled=unrolled)


class BackwardContext(NamedTuple):
    """What a cotangent rule may use: the problem, the solution and one linearisation of ``f`` there."""

    problem: FixedPointProblem
    solver: AbstractFixedPointSolver
    criterion: StopCriterion
    params: PyTree
    x: PyTree
    z: jax.Array  # flat fixed point
    solver_state: Any  # the forward solver's final memory (e.g. Broyden's inverse estimate)
    want_info: bool  # whether a BackwardInfo is consumed (a tap was passed)

    def linearize(self):
        """``(jvp_t, pull)``: ``u -> J^T u`` and ``u -> (df/dparams^T u, df/dx^T u)``, sharing one linearisation."""
        layout = self.problem.layout

        def flat_f(params, z, x):
            return _flat.flatten(layout, self.problem.fn(params, _flat.unflatten(layout, z), x))

        _, vjp = jax.vjp(flat_f, self.params, self.z, self.x)

        def jvp_t(u):
            return vjp(u)[1]

        def pull(u):
            d_params, _, d_x = vjp(u)
            return d_params, d_x

        return jvp_t, pull

    def adjoint_residual(self, jvp_t, u: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Max over samples of :math:`\\|u - J^\\top u - g\\|` and of it divided by :math:`\\|g\\|` (one VJP)."""
        return linear_residual(jvp_t, u, g)


def linear_residual(apply_a, u: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Max over samples of :math:`\\|u - A u - b\\|` and of it divided by :math:`\\|b\\|` (one application of A)."""
    abs_res = _flat.row_norm(u - apply_a(u) - b)
    return jnp.max(abs_res), jnp.max(abs_res / (_flat.row_norm(b) + jnp.finfo(b.dtype).tiny))


def no_adjoint_info(ctx: BackwardContext, jvp_t, u: jax.Array | None, g: jax.Array, *, steps=0, fallback_fraction=0.0) -> BackwardInfo:
    """Info for rules without an adjoint solve.

    The residual of ``u`` costs one VJP, so it is computed only when a tap asked for it
    and the rule forms a ``u`` at all; it is NaN otherwise.
    """
    nan = jnp.full((), jnp.nan, g.dtype)
    abs_res, rel_res = ctx.adjoint_residual(jvp_t, u, g) if (ctx.want_info and u is not None) else (nan, nan)
    return BackwardInfo(jnp.asarray(steps, g.dtype), abs_res, rel_res, nan, jnp.asarray(fallback_fraction, g.dtype))


def solver_backward_info(info: SolverInfo, dtype, fallback_fraction=0.0) -> BackwardInfo:
    """Info for rules whose adjoint is a fixed-point solve."""
    return BackwardInfo(
        info.steps.astype(dtype),
        jnp.max(info.abs_residual).astype(dtype),
        jnp.max(info.rel_residual).astype(dtype),
        jnp.all(info.converged).astype(dtype),
        jnp.asarray(fallback_fraction, dtype),
    )


# A cotangent rule: (config, ctx, g) -> ((d params, d x), BackwardInfo).
CotangentRule = Callable[[Any, BackwardContext, jax.Array], tuple[tuple[PyTree, PyTree], BackwardInfo]]


def custom_fixed_point(rule: CotangentRule, name: str, keeps_solver_state: bool = False):
    """Wrap a cotangent rule into a ``jax.custom_vjp`` fixed-point solve.

    The returned function has signature
    ``(config, problem, solver, criterion, want_info, params, x, z0, tap) -> (z, info)``
    with flat ``z0``/``z``; the first five arguments are static (``want_info``: a tap
    was passed, so the backward info is consumed). The forward solver's final memory is
    saved for the backward pass only if ``keeps_solver_state`` (SHINE); otherwise the
    residuals are just ``params``, ``x`` and ``z*``.
    """

    @functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3, 4))
    def solve(config, problem, solver, criterion, want_info, params, x, z0, tap):
        z, info, _ = problem.solve(solver, criterion, params, x, z0)
        return z, info

    def solve_fwd(config, problem, solver, criterion, want_info, params, x, z0, tap):
        z, info, state = problem.solve(solver, criterion, params, x, z0)
        return (z, info), (params, x, z, state if keeps_solver_state else None)

    def solve_bwd(config, problem, solver, criterion, want_info, residuals, cotangents):
        params, x, z, state = residuals
        g, _ = cotangents
        ctx = BackwardContext(problem, solver, criterion, params, x, z, state, want_info)
        (d_params, d_x), info = rule(config, ctx, g)
        if criterion.throw:
            raise_if_backward_failed(info, name)
        return d_params, d_x, jnp.zeros_like(z), (info if want_info else None)

    solve.defvjp(solve_fwd, solve_bwd)
    solve.__name__ = f"{name}_fixed_point"
    solve.__doc__ = f"Fixed-point solve whose ``jax.custom_vjp`` backward is the {name!r} estimator."
    return solve


class AbstractBackward(abc.ABC):
    """A backward estimator: a frozen, hashable configuration with a ``solve`` entry point."""

    #: name used in error messages and in ``fixed_point(backward=<name>)``.
    name: str = ""

    def check_solver(self, solver: AbstractFixedPointSolver) -> None:
        """Raise if this estimator cannot run with ``solver`` (default: any solver works)."""

    @abc.abstractmethod
    def solve(
        self,
        problem: FixedPointProblem,
        solver: AbstractFixedPointSolver,
        criterion: StopCriterion,
        params: PyTree,
        x: PyTree,
        z0: jax.Array,
        tap: BackwardInfo | None,
    ) -> tuple[jax.Array, SolverInfo]:
        ...


class CustomVJPBackward(AbstractBackward):
    """Estimators defined by a cotangent rule, each with its own ``jax.custom_vjp`` function."""

    #: the ``jax.custom_vjp`` function built by :func:`custom_fixed_point` in the subclass's module.
    _custom_solve: Callable = None

    def solve(self, problem, solver, criterion, params, x, z0, tap):
        return type(self)._custom_solve(self, problem, solver, criterion, tap is not None, params, x, z0, tap)
