r"""The inner-optimisation entry point: ``w = argmin(g, hparams, w0, backward=...)``.

Solves :math:`w^\star(\lambda) = \arg\min_w g(w, \lambda)` with a pure-JAX inner solver
and gives :math:`w^\star` the hypergradient that ``backward`` names (see
:mod:`implicit_jax.bilevel.argmin_estimators`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from implicit_jax import _compiled, _flat, _partition
from implicit_jax._checks import check_float_scalar, describe, eval_shape_or_explain
from implicit_jax._registry import resolve
from implicit_jax.adjoint import BackwardInfo
from implicit_jax.bilevel.argmin_estimators import ARGMIN_BACKWARDS, AbstractArgminBackward, ArgminProblem
from implicit_jax.errors import raise_if_argmin_not_converged
from implicit_jax.solvers.minimizers import LBFGS, AbstractMinimizer, OptaxMinimizer
from implicit_jax.solvers.stopping import StopCriterion, StopMode

PyTree = Any

#: inner-solver names accepted by ``argmin(solver=...)``.
MINIMIZERS = {"lbfgs": LBFGS}


def resolve_minimizer(solver, options: Mapping[str, Any] | None = None) -> AbstractMinimizer:
    """A name (with ``options``), a configured minimiser or an Optax optimizer -> configured minimiser."""
    if isinstance(solver, optax.GradientTransformation) and not options:
        return OptaxMinimizer(solver)
    return resolve(
        solver,
        MINIMIZERS,
        AbstractMinimizer,
        "argmin solver",
        "LBFGS(memory=60), OptaxMinimizer(optax.adam(1e-2)) or an optax optimizer",
        options,
    )


def resolve_argmin_backward(backward, options: Mapping[str, Any] | None = None) -> AbstractArgminBackward:
    """An argmin backward name (with ``options``, e.g. ``{"k": 50}``) or configured object -> configured object."""
    return resolve(
        backward,
        ARGMIN_BACKWARDS,
        AbstractArgminBackward,
        "argmin backward",
        "ArgminShine(opa_every=5) or ArgminNeumann(k=50, step_size=0.1)",
        options,
    )


def _check_objective(g, w0, hparams) -> None:
    out = eval_shape_or_explain(g, "g(w, hparams)", {"w": w0, "hparams": hparams})
    check_float_scalar(out, "g(w, hparams)")


def _check_inputs(w0, hparams) -> None:
    for what, tree in (("w0", w0), ("hparams", hparams)):
        leaves = jax.tree_util.tree_leaves(tree)
        if what == "w0" and not leaves:
            raise ValueError("argmin needs w0 with at least one array leaf (the inner variables).")
        for leaf in leaves:
            if jnp.issubdtype(jnp.result_type(leaf), jnp.complexfloating):
                raise TypeError(
                    f"argmin does not support complex {what} (got dtype {jnp.result_type(leaf)}). {_flat.COMPLEX_ADVICE}"
                )
            if not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
                raise TypeError(
                    f"argmin differentiates with respect to {what}, so its leaves must be floating point; "
                    f"got dtype {jnp.result_type(leaf)} in {what} = {describe(tree)}."
                )


def _solve_flat_with_outer(g, outer_loss, minimizer, backward, criterion, hparams, w0, backward_tap):
    """The inner solve on the flat ``w``, with the estimator's hypergradient; ``outer_loss`` for outer-problem awareness."""
    w0_flat, unravel = ravel_pytree(w0)
    # Hoist values that g closes over into explicit (differentiable) arguments.
    converted, consts = jax.closure_convert(g, w0, hparams)
    objective = lambda w, theta: converted(unravel(w), theta[0], *theta[1])
    outer, outer_consts = None, []
    if outer_loss is not None:
        outer_converted, outer_consts = jax.closure_convert(outer_loss, w0)
        outer = (lambda w, c: outer_converted(unravel(w), *c), backward.outer_awareness())
    inputs = ((hparams, list(consts)), list(outer_consts))
    w, info = backward.solve(ArgminProblem(objective, outer), minimizer, criterion, inputs, w0_flat, backward_tap)
    return unravel(w), info


def _solve_flat(g, minimizer, backward, criterion, hparams, w0, backward_tap):
    """:func:`_solve_flat_with_outer` without an outer loss."""
    return _solve_flat_with_outer(g, None, minimizer, backward, criterion, hparams, w0, backward_tap)


def argmin(
    g: Callable[[PyTree, PyTree], jax.Array],
    hparams: PyTree,
    w0: PyTree,
    *,
    solver: str | AbstractMinimizer | optax.GradientTransformation = "lbfgs",
    backward: str | AbstractArgminBackward = "implicit",
    tol: float = 1e-6,
    max_steps: int = 500,
    stop_mode: StopMode = "rel",
    atol: float = 0.0,
    outer_loss: Callable[[PyTree], jax.Array] | None = None,
    throw: bool = False,
    return_info: bool = False,
    backward_tap: BackwardInfo | None = None,
):
    """Minimise ``g(w, hparams)`` over ``w`` and differentiate the minimiser w.r.t. ``hparams``.

    Args:
      g: scalar inner objective ``g(w, hparams)``, smooth and strongly convex in ``w`` near
        the solution. It may close over traced values (they receive gradients too).
      hparams: outer variables (any pytree of floats).
      w0: starting point (any pytree of floats); its gradient is zero except for ``"unroll"``.
      solver: ``"lbfgs"``, ``LBFGS(memory=...)``, ``OptaxMinimizer(opt)`` or directly an Optax
        optimizer (run for at most ``max_steps`` steps).
      backward: ``"implicit"``, ``"shine"``, ``"neumann"``, ``"jfb"``, ``"unroll"`` or a configured
        object (``ArgminImplicit(max_steps=50)``, ``ArgminShine(opa_every=5)``, ``ArgminNeumann(k=50, step_size=0.1)``).
      tol: gradient-norm tolerance of the inner solve (relative to :math:`\\|\\nabla g(w_0)\\|` for
        ``stop_mode="rel"``, absolute for ``"abs"``, ``atol + tol`` :math:`\\|\\nabla g(w_0)\\|` for
        ``"mixed"``); also the default CG tolerance.
      atol: absolute part of ``stop_mode="mixed"``.
      max_steps: inner iteration cap.
      outer_loss: ``F(w) -> scalar``, the outer loss as a function of the inner variables;
        needed only by SHINE's outer-problem awareness (``ArgminShine(opa_every=k)``).
      throw: raise :class:`implicit_jax.NonConvergenceError` when the inner solve (or the
        backward's CG solve) ends unconverged; works under ``jit``.
      return_info: also return the :class:`implicit_jax.solvers.MinimizeInfo`.
      backward_tap: a :func:`implicit_jax.backward_tap` value; its gradient is the backward's
        :class:`implicit_jax.BackwardInfo` (CG steps and residual, SHINE fallback).

    Returns:
      ``w`` (structure of ``w0``), or ``(w, info)`` with ``return_info=True``.

    Called outside ``jax.jit``, the solve and its backward run as compiled programs cached on
    ``g`` (and ``outer_loss``), their traced programs and the configuration, as for
    :func:`~implicit_jax.fixed_point`; ``throw=True`` runs op by op.
    """
    minimizer = resolve_minimizer(solver)
    backward = resolve_argmin_backward(backward)
    criterion = StopCriterion(tol=tol, max_steps=max_steps, stop_mode=stop_mode, throw=throw, atol=atol)
    if _partition.has_static_leaves(w0):
        raise TypeError(
            f"argmin's w0 must hold only arrays; it has leaves of type {_partition.static_leaf_types(w0)}. "
            "Keep functions and other static values in hparams or in g's closure."
        )
    user_g = g
    if _partition.has_static_leaves(hparams):  # e.g. an Equinox module: its non-array leaves ride along in g
        hparams, static_leaves = _partition.partition(hparams)
        g = lambda w, h: user_g(w, _partition.combine(h, static_leaves))
    _check_inputs(w0, hparams)
    _check_objective(g, w0, hparams)
    if backward.outer_awareness() and outer_loss is None:
        raise ValueError(f"{backward!r} uses outer-problem awareness, so argmin needs outer_loss=F (F(w) -> scalar).")
    outer = outer_loss if backward.outer_awareness() else None
    maps = [_compiled.Map(g, (w0, hparams), user_g)] + ([] if outer is None else [_compiled.Map(outer, (w0,))])
    static = (minimizer, backward, criterion)
    # throw=True runs op by op, so that an eager call gets the backward's NonConvergenceError as itself.
    solve = None if throw else _compiled.compiled(_solve_flat if len(maps) == 1 else _solve_flat_with_outer, maps, static)
    if solve is not None:
        w, info = solve(hparams, w0, backward_tap)
    else:  # fresh aliases: JAX's tracing cache would hand back the values of an earlier call's globals
        outer_alias = None if outer is None else _compiled.retraced(outer)
        w, info = _solve_flat_with_outer(_compiled.retraced(g), outer_alias, *static, hparams, w0, backward_tap)
    if throw:
        raise_if_argmin_not_converged(info)
    return (w, info) if return_info else w
