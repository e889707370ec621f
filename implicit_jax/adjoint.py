r"""The adjoint skeleton every ``jax.custom_vjp`` gradient estimator shares.

Both problem kinds are roots: a fixed point :math:`z^\star = f(\theta, z^\star, x)` is the
root of :math:`z \mapsto f(\theta, z, x) - z`, an inner minimiser
:math:`w^\star = \arg\min_w g(w, \lambda)` the root of :math:`w \mapsto \nabla_w g(w, \lambda)`.
With :math:`F(y, a)` the residual, :math:`y^\star(a)` its root and :math:`\bar y` the incoming
cotangent, the implicit function theorem gives the input cotangent

.. math:: \bar a = -(\partial_a F)^\top u, \qquad (\partial_y F)^\top u = \bar y

(Blondel et al., NeurIPS 2022, eq. 4). Gradient estimators differ in how they produce
:math:`u` (an adjoint solve, a quasi-Newton estimate, a truncated series, the identity).
A *problem* (:class:`~implicit_jax.estimators.base.FixedPointProblem`,
:class:`~implicit_jax.bilevel.argmin_estimators.base.ArgminProblem`) knows how to solve
itself and builds an :class:`AdjointContext` at the root; the context offers the products
an estimator needs (VJPs of :math:`f`, HVPs of :math:`g`) and ``pull(u)``, the map
:math:`u \mapsto \bar a`. An estimator is a *rule* ``(config, ctx, g) -> (d_inputs, info)``
and :func:`custom_root` turns it into that estimator's own ``jax.custom_vjp`` function: the
forward runs the solver under ``lax.while_loop`` (never differentiated), the backward calls
the rule at the root, and the starting point gets a zero cotangent (the root does not
depend on it).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from implicit_jax import _flat
from implicit_jax.errors import raise_if_backward_failed
from implicit_jax.solvers.stopping import SolverInfo, StopCriterion

PyTree = Any


class BackwardInfo(NamedTuple):
    """Diagnostics of a backward pass, read through :func:`~implicit_jax.backward_tap` (floats, maxima over samples).

    Attributes:
      steps: iterations of the adjoint solve (0 where there is none; -1 where the
        solver does not report it).
      abs_residual: residual of the adjoint estimate :math:`u`: :math:`\\|u - J^\\top u - g\\|`
        for a fixed point, :math:`\\|\\nabla^2 g\\, u - v\\|` for ``argmin`` (NaN where it would
        cost an extra product nobody asked for).
      rel_residual: the same divided by the norm of the cotangent.
      converged: 1.0 where the adjoint solve met its tolerance, else 0.0 (NaN where
        there is no adjoint solve).
      fallback_fraction: share of samples where the estimator fell back: SHINE to another
        direction, ``Implicit``/``ImplicitJVP`` to their linear-solver rescue of an unconverged
        adjoint (0 where nothing fell back).
    """

    steps: jax.Array
    abs_residual: jax.Array
    rel_residual: jax.Array
    converged: jax.Array
    fallback_fraction: jax.Array


def backward_tap(dtype=jnp.float32) -> BackwardInfo:
    """A zero "tap" to pass as ``fixed_point(..., backward_tap=tap)`` or ``argmin(..., backward_tap=tap)``.

    Differentiate with respect to it and its cotangent is the :class:`~implicit_jax.BackwardInfo` of the
    backward pass::

        def loss(params, tap):
            z = fixed_point(f, params, x, backward_tap=tap)
            return jnp.sum(z ** 2)

        grads, bwd_info = jax.grad(loss, argnums=(0, 1))(params, backward_tap())
    """
    zero = jnp.zeros((), dtype)
    return BackwardInfo(zero, zero, zero, zero, zero)


def linear_residual(apply_a, u: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Max over samples of :math:`\\|u - A u - b\\|` and of it divided by :math:`\\|b\\|` (one application of A)."""
    abs_res = _flat.row_norm(u - apply_a(u) - b)
    return jnp.max(abs_res), jnp.max(abs_res / (_flat.row_norm(b) + jnp.finfo(b.dtype).tiny))


def unsolved_info(residual: tuple[jax.Array, jax.Array] | None, dtype, *, steps=0, fallback_fraction=0.0) -> BackwardInfo:
    """Info for rules without an adjoint solve: ``residual`` is ``(abs, rel)`` or ``None`` (reported as NaN)."""
    nan = jnp.full((), jnp.nan, dtype)
    abs_res, rel_res = (nan, nan) if residual is None else residual
    return BackwardInfo(
        jnp.asarray(steps, dtype), abs_res.astype(dtype), rel_res.astype(dtype), nan, jnp.asarray(fallback_fraction, dtype)
    )


def solver_backward_info(info: SolverInfo, dtype, fallback_fraction=0.0) -> BackwardInfo:
    """Info for rules whose adjoint is a solve (fixed-point or linear solver)."""
    return BackwardInfo(
        jnp.asarray(info.steps).astype(dtype),
        jnp.max(info.abs_residual).astype(dtype),
        jnp.max(info.rel_residual).astype(dtype),
        jnp.all(info.converged).astype(dtype),
        jnp.asarray(fallback_fraction, dtype),
    )


class AdjointContext(NamedTuple):
    """What a rule may use: the problem, the solver, the differentiable inputs and the root.

    Problems subclass it to add their products (``linearize`` for fixed points, ``hvp`` for
    ``argmin``) and ``pull(u)``, the input cotangent for the adjoint estimate ``u``.
    """

    problem: Any
    solver: Any
    criterion: StopCriterion
    inputs: PyTree  # the differentiable inputs, as passed to problem.solve
    y: jax.Array  # the flat root
    solver_state: Any  # the forward solver's final memory, if the estimator keeps it (SHINE)
    want_info: bool  # whether a BackwardInfo is consumed (a tap was passed)


# A cotangent rule: (config, ctx, cotangent of the root) -> (cotangent of the inputs, BackwardInfo).
CotangentRule = Callable[[Any, AdjointContext, jax.Array], tuple[PyTree, BackwardInfo]]


def custom_root(rule: CotangentRule, name: str, *, keeps_solver_state: bool = False) -> Callable:
    """Wrap a cotangent rule into a root solve with a ``jax.custom_vjp`` backward.

    The returned function is ``(config, problem, solver, criterion, inputs, y0, tap) -> (y, info)``
    with flat ``y0``/``y`` and ``info`` the forward solver's; ``config`` (the estimator),
    ``problem``, ``solver`` and ``criterion`` are static. ``problem`` provides
    ``solve(solver, criterion, inputs, y0) -> (y, info, state)`` and
    ``backward_context(solver, criterion, inputs, y, state, want_info) -> AdjointContext``.
    ``tap`` is ``None`` or a :func:`~implicit_jax.backward_tap` value, whose cotangent becomes the rule's
    :class:`~implicit_jax.BackwardInfo`. The forward solver's final memory is saved for the backward
    pass only if ``keeps_solver_state``; otherwise the residuals are ``inputs`` and the root.
    """

    @functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3, 4))
    def solve(config, problem, solver, criterion, want_info, inputs, y0, tap):
        y, info, _ = problem.solve(solver, criterion, inputs, y0)
        return y, info

    def solve_fwd(config, problem, solver, criterion, want_info, inputs, y0, tap):
        y, info, state = problem.solve(solver, criterion, inputs, y0)
        return (y, info), (inputs, y, state if keeps_solver_state else None)

    def solve_bwd(config, problem, solver, criterion, want_info, residuals, cotangents):
        inputs, y, state = residuals
        g, _ = cotangents
        ctx = problem.backward_context(solver, criterion, inputs, y, state, want_info)
        d_inputs, info = rule(config, ctx, g)
        if criterion.throw:
            raise_if_backward_failed(info, name)
        return d_inputs, jnp.zeros_like(y), (info if want_info else None)

    solve.defvjp(solve_fwd, solve_bwd)

    def root_solve(config, problem, solver, criterion: StopCriterion, inputs: PyTree, y0: jax.Array, tap: BackwardInfo | None):
        return solve(config, problem, solver, criterion, tap is not None, inputs, y0, tap)

    root_solve.__name__ = root_solve.__qualname__ = f"{name}_root"
    root_solve.__doc__ = f"Root solve whose ``jax.custom_vjp`` backward is the {name!r} estimator: ``(config, problem, solver, criterion, inputs, y0, tap) -> (y, info)``."
    return root_solve
