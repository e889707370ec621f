r"""The root-finding entry point: ``z = fixed_point(f, params, x, backward=...)``.

Solves :math:`z^\star = f(\theta, z^\star, x)` with a pure-JAX solver and gives
:math:`z^\star` the gradient that ``backward`` names. ``f`` has the signature of a
Flax ``apply``: ``f(params, z, x) -> z``.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from implicit_jax import _compiled, _flat, _partition
from implicit_jax.errors import raise_if_not_converged
from implicit_jax.estimators import AbstractBackward, BackwardInfo, FixedPointProblem, resolve_backward
from implicit_jax.solvers import AbstractFixedPointSolver, SolverInfo, StopCriterion, resolve_solver
from implicit_jax.solvers.stopping import StopMode

PyTree = Any


def _check_map(f, params, z0, x) -> None:
    try:
        out = jax.eval_shape(f, params, z0, x)
    except (TypeError, ValueError) as error:
        shapes = jax.tree_util.tree_map(lambda a: f"{jnp.result_type(a)}{list(jnp.shape(a))}", z0)
        raise type(error)(f"f(params, z, x) failed when called with z of shapes {shapes}: {error}") from error
    _flat.check_same_layout(z0, out)


#: A relative tolerance that each dtype reaches reliably (a few units of its rounding error).
SENSIBLE_TOL = {"bfloat16": 1e-2, "float16": 2e-3, "float32": 1e-5, "float64": 1e-10}


def _warn_if_unreachable(criterion: StopCriterion, dtype) -> None:
    """Warn (at trace time) when a relative tolerance is below the state dtype's unit roundoff."""
    if criterion.stop_mode == "abs" or (criterion.stop_mode == "mixed" and criterion.atol > 0):
        return  # an absolute tolerance's reach depends on the scale of z, unknown here
    roundoff = float(jnp.finfo(dtype).eps) / 2
    if criterion.tol < roundoff:
        name = jnp.dtype(dtype).name
        warnings.warn(
            f"tol={criterion.tol:g} is below what a {name} state can resolve (unit roundoff {roundoff:.1e}): "
            f"the relative residual will rarely reach it, and samples will end converged=False after max_steps. "
            f"Use tol >= {SENSIBLE_TOL.get(name, 10 * roundoff):g} for {name}, or solve in a wider dtype.",
            stacklevel=3,
        )


def _carry_static_leaves(f, params, x):
    """``(f, params, x)`` with the non-array leaves of ``params`` and ``x`` moved into ``f``.

    An Equinox module holds its activation function as a leaf; only the array leaves can be
    arguments of the traced solve (and receive gradients), the others ride along in ``f``.
    """
    if not (_partition.has_static_leaves(params) or _partition.has_static_leaves(x)):
        return f, params, x
    params_arrays, params_static = _partition.partition(params)
    x_arrays, x_static = _partition.partition(x)

    def f_on_arrays(p, z, xx):
        return f(_partition.combine(p, params_static), z, _partition.combine(xx, x_static))

    return f_on_arrays, params_arrays, x_arrays


def _solve_flat(f, layout, solver, backward, criterion, params, x, z0_flat, backward_tap):
    """The solve on the flat state, with the estimator's gradient."""
    # Hoist values that f closes over into explicit (differentiable) arguments, so that
    # custom_vjp sees no leaked tracers and gradients reach them too.
    converted, consts = jax.closure_convert(f, params, _flat.unflatten(layout, z0_flat), x)
    problem = FixedPointProblem(lambda p, z, xx: converted(p[0], z, xx, *p[1]), layout)
    z, info = backward.solve(problem, solver, criterion, ((params, consts), x), z0_flat, backward_tap)
    return z, (info if layout.batched else _drop_batch(info))


def _solve_compiled(f, user_f, static, params, x, z0, z0_flat, tap):
    """``(z, info)`` of an eager call from cached compiled programs, or ``None`` when the call is traced.

    An estimator with a rescue (``Implicit``'s GMRES fallback) runs without it first; its
    rescue is compiled and run only if a backward pass reports a failure
    (:func:`_rescue_on_demand`).
    """
    layout, solver, backward, criterion = static
    maps = [_compiled.Map(f, (params, z0, x), user_f)]
    quick = backward.without_rescue()
    if quick is not None:
        first = _compiled.compiled(_solve_flat, maps, (layout, solver, quick, criterion), plain_closure=True)
        if first is not None:

            def whole_at(p, xx):  # traced residuals (a transformed pullback): the solve traced into that program
                whole = _compiled.compiled(_solve_flat, [maps[0]._replace(example=(p, z0, xx))], static)
                return functools.partial(_solve_flat, f, *static) if whole is None else whole

            return _rescue_on_demand(first, whole_at, layout.dtype)(params, x, z0_flat, tap)
    whole = _compiled.compiled(_solve_flat, maps, static)
    return None if whole is None else whole(params, x, z0_flat, tap)


def _rescue_on_demand(first: Callable, whole_at: Callable, dtype) -> Callable:
    """``(params, x, z0, tap) -> (z, info)`` running ``first`` (the estimator without its rescue), and the whole one where needed.

    The gradient is ``first``'s backward when that reports every sample converged
    (``BackwardInfo.converged == 1``). Otherwise ``whole_at(params, x)``, the compiled
    program of the whole estimator, is run from the root ``first`` found (so its forward
    solve stops at once) and gives the gradient. Under a transformation of the backward
    pass itself (its values traced), the whole estimator is used without looking.
    """

    @jax.custom_vjp
    def solve(params, x, z0, tap):
        return first(params, x, z0, tap)

    def solve_fwd(params, x, z0, tap):
        # a tap of NumPy zeros: no device operation to compile
        probe = BackwardInfo(*[np.zeros((), dtype)] * len(BackwardInfo._fields)) if tap is None else tap
        out, pull = jax.vjp(lambda p, xx, t: first(p, xx, z0, t), params, x, probe)
        return out, (pull, params, x, out[0], probe, tap is not None)

    def solve_bwd(residuals, cotangents):
        pull, params, x, root, probe, has_tap = residuals
        d_params, d_x, info = pull(cotangents)
        if not (_compiled._all_concrete(info) and float(info.converged) >= 1):  # NaN: rescue too
            whole = whole_at(params, x)
            _, pull = jax.vjp(lambda p, xx, t: whole(p, xx, root, t), params, x, probe)
            d_params, d_x, info = pull(cotangents)
        return d_params, d_x, np.zeros(root.shape, root.dtype), (info if has_tap else None)

    solve.defvjp(solve_fwd, solve_bwd)
    return solve


def _drop_batch(info: SolverInfo) -> SolverInfo:
    return info._replace(
        abs_residual=info.abs_residual[0],
        rel_residual=info.rel_residual[0],
        converged=info.converged[0],
        num_fallbacks=jnp.asarray(info.num_fallbacks)[0],
    )


def fixed_point(
    f: Callable[[PyTree, PyTree, PyTree], PyTree],
    params: PyTree,
    x: PyTree,
    *,
    z0: PyTree | None = None,
    solver: str | AbstractFixedPointSolver = "anderson",
    backward: str | AbstractBackward = "implicit",
    tol: float = 1e-5,
    max_steps: int = 50,
    stop_mode: StopMode = "rel",
    atol: float = 0.0,
    batched: bool = False,
    throw: bool = False,
    return_info: bool = False,
    backward_tap: BackwardInfo | None = None,
):
    """Solve ``z = f(params, z, x)`` and differentiate the solution with the chosen estimator.

    Args:
      f: the map, ``f(params, z, x) -> z`` with the same pytree structure, shapes and
        dtypes for ``z`` in and out. It may close over traced values.
      params: parameters (any pytree); gradients flow to them.
      x: input (any pytree); gradients flow to it.
      z0: starting point; defaults to ``zeros_like(x)`` (pass it when the state's shape
        differs from the input's). Its gradient is zero except for ``backward="unroll"``.
      solver: ``"anderson"``, ``"broyden"``, ``"fixed_point_iteration"`` or a configured
        object (``Anderson(memory=5)``, ``Broyden(memory=30)``, ``FixedPointIteration(damping=0.5)``).
      backward: ``"implicit"``, ``"implicit_jvp"`` (also forward mode and Hessians),
        ``"shine"``, ``"jfb"``, ``"phantom_unroll"``, ``"phantom_neumann"``, ``"unroll"`` or a configured object
        (``Implicit(solver=GMRES(restart=20))``, ``Shine(fallback=True)``, ``PhantomUnroll(k=5, damping=0.5)``...).
      tol: tolerance on the residual named by ``stop_mode`` (per sample).
      max_steps: iteration cap of the forward solve.
      stop_mode: ``"rel"`` (:math:`\\|f(z)-z\\| \\le \\text{tol}\\,\\|f(z)\\|`), ``"abs"``
        (:math:`\\|f(z)-z\\| \\le \\text{tol}`) or ``"mixed"``
        (:math:`\\|f(z)-z\\| \\le \\text{atol} + \\text{tol}\\,\\|f(z)\\|`, the peers' test, which a fixed
        point at zero can meet); see :mod:`implicit_jax.solvers.stopping`.
      atol: absolute part of ``stop_mode="mixed"``.
      batched: the leading axis of every leaf of ``z`` indexes independent samples: each
        gets its own stopping test, quasi-Newton/Anderson memory and residual.
      throw: raise :class:`~implicit_jax.NonConvergenceError` if the forward solve (or the backward's
        adjoint solve) ends unconverged; works under ``jit``. An eager call with ``throw=True``
        runs op by op (see below), so that the adjoint's error reaches it as itself.
      return_info: also return the forward :class:`~implicit_jax.solvers.SolverInfo`.
      backward_tap: a :func:`~implicit_jax.backward_tap` value; its gradient is the :class:`~implicit_jax.BackwardInfo`
        of the backward pass.

    Returns:
      ``z`` (same structure as ``z0``), or ``(z, info)`` with ``return_info=True``.
      ``info`` fields are per sample (shape ``(batch,)``) when ``batched``.

    Called outside ``jax.jit`` (or under an eager ``jax.grad``), the solve and its backward run
    as compiled programs kept in a small cache keyed on ``f``'s traced program, its shapes and
    the configuration, so a repeated call does not compile again; ``f`` is traced at every call,
    so globals and closure values it reads are always current. An estimator with a rescue
    (``Implicit``'s GMRES fallback) runs without it first, and the rescue is compiled and run
    only for a backward pass that reports a failure (the gradient is the same).
    """
    solver = resolve_solver(solver)
    backward = resolve_backward(backward)
    backward.check_solver(solver)
    criterion = StopCriterion(tol=tol, max_steps=max_steps, stop_mode=stop_mode, throw=throw, atol=atol)
    if z0 is None:
        if not jax.tree_util.tree_leaves(x) or _partition.has_static_leaves(x):
            raise ValueError(
                "z0 defaults to zeros_like(x), but x has no array leaves or some that are not arrays; pass z0 (the initial state)."
            )
        z0 = jax.tree_util.tree_map(jnp.zeros_like, x)
    if _partition.has_static_leaves(z0):
        raise TypeError(
            f"the fixed-point state z0 must hold only arrays; it has leaves of type {_partition.static_leaf_types(z0)}. "
            "Keep functions and other static values in params, in x or in f's closure."
        )
    user_f = f
    f, params, x = _carry_static_leaves(f, params, x)
    f = _compiled.retraced(f)
    layout = _flat.layout_of(z0, batched)
    _warn_if_unreachable(criterion, layout.dtype)
    _check_map(f, params, z0, x)

    z0_flat = _flat.flatten(layout, z0)
    static = (layout, solver, backward, criterion)
    # throw=True runs op by op, so that an eager call gets the adjoint's NonConvergenceError as
    # itself (raised from a compiled program it arrives inside a JaxRuntimeError).
    solved = None if throw else _solve_compiled(f, user_f, static, params, x, z0, z0_flat, backward_tap)
    z, info = _solve_flat(f, *static, params, x, z0_flat, backward_tap) if solved is None else solved
    if throw:
        raise_if_not_converged(info)
    z = _flat.unflatten(layout, z)
    return (z, info) if return_info else z
