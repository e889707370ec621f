"""What every fixed-point solver shares: the interface and the iteration driver.

A solver is a small immutable configuration object with two methods:

* ``init(z, fz) -> state``: solver memory for the flat ``(batch, n)`` iterate ``z``
  with ``fz = fn(z)``; every leaf of the state has a leading batch axis;
* ``step(fn, z, fz, state, active) -> (z_new, fn(z_new), state_new, num_fn_evals)``,
  where ``active`` (shape ``(batch,)``) marks the rows still iterating: the solver
  must leave the memory of the other rows unchanged (the driver masks nothing itself,
  so large buffers are never copied wholesale).

:func:`iterate` runs it to convergence. Rows of the flat view are independent
systems (samples): each row stops on its own residual, after which its result (the
lowest-residual iterate seen while it was active) and its diagnostics are fixed, so
one sample that diverges (or turns NaN) neither poisons nor delays the others. A
finished row's ``z`` may go on moving with the batch (``f`` is evaluated on every
row anyway), but it is never read again.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from implicit_jax._flat import row_norm
from implicit_jax.solvers.stopping import SolverInfo, StopCriterion

FlatFn = Callable[[jax.Array], jax.Array]


class AbstractFixedPointSolver(abc.ABC):
    """Interface of the forward (and adjoint) fixed-point solvers. Subclasses are frozen dataclasses."""

    #: whether ``step`` may run inside ``lax.scan`` under reverse-mode autodiff.
    supports_unrolling: bool = True
    #: what to do instead when ``supports_unrolling`` is false.
    unroll_hint: str = ""
    #: whether the final state holds an inverse-Jacobian estimate that SHINE can reuse.
    shares_inverse: bool = False

    @abc.abstractmethod
    def init(self, z: jax.Array, fz: jax.Array) -> Any: ...

    @abc.abstractmethod
    def step(
        self, fn: FlatFn, z: jax.Array, fz: jax.Array, state: Any, active: jax.Array
    ) -> tuple[jax.Array, jax.Array, Any, int | jax.Array]: ...

    def num_fallbacks(self, state: Any, batch: int) -> jax.Array:
        """Per sample, the steps so far in which the solver fell back to a plain fixed-point step."""
        del state
        return jnp.zeros((batch,), jnp.int32)

    def inverse_transpose_product(self, state: Any, v: jax.Array) -> jax.Array:
        """:math:`H^\\top v` per sample, :math:`H \\approx (J - I)^{-1}` the estimate in the final ``state``."""
        raise NotImplementedError(f"{type(self).__name__} keeps no inverse-Jacobian estimate (shares_inverse is False).")

    def adjoint_refinement(self, state: Any) -> tuple[AbstractFixedPointSolver, Callable | None]:
        """``(solver, init)`` for adjoint steps after a SHINE estimate: by default this solver from a fresh history."""
        del state
        return self, None


def residuals(z: jax.Array, fz: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-sample absolute and relative residuals of the fixed-point equation.

    Diagnostics only, so they carry no gradient: the norm's derivative is 0/0 at a zero
    residual (a sample that starts at its fixed point, e.g. zero padding), and a replayed
    VJP (``Unroll(replay=True)``) would multiply it by a zero cotangent and get NaN.
    """
    z, fz = lax.stop_gradient(z), lax.stop_gradient(fz)
    abs_res = row_norm(fz - z)
    return abs_res, abs_res / (row_norm(fz) + jnp.finfo(fz.dtype).tiny)


def stop_metric(criterion: StopCriterion, abs_res: jax.Array, rel_res: jax.Array) -> jax.Array:
    r"""The per-sample quantity that ``criterion`` compares with :func:`metric_bound` (lower is better).

    ``"abs"`` and ``"rel"``: the residual of that name. ``"mixed"``: the ratio
    :math:`\|f(z) - z\| / (\text{atol} + \text{tol}\,\|f(z)\|)`, with
    :math:`\|f(z)\| = ` ``abs_res / rel_res`` recovered from the two residuals.
    """
    if criterion.stop_mode == "abs":
        return abs_res
    if criterion.stop_mode == "rel":
        return rel_res
    f_norm = jnp.where(rel_res > 0, abs_res / jnp.where(rel_res > 0, rel_res, 1.0), 0.0)
    threshold = criterion.threshold(f_norm)
    return abs_res / jnp.maximum(threshold, jnp.finfo(abs_res.dtype).tiny)


def metric_bound(criterion: StopCriterion) -> float:
    """What :func:`stop_metric` must not exceed for a sample to have converged."""
    return 1.0 if criterion.stop_mode == "mixed" else criterion.tol


def _select_rows(mask: jax.Array, new: Any, old: Any) -> Any:
    def pick(a, b):
        m = jnp.reshape(mask, mask.shape + (1,) * (jnp.ndim(a) - 1))
        return jnp.where(m, a, b)

    return jax.tree_util.tree_map(pick, new, old)


class IterationCarry(NamedTuple):
    """The state of :func:`iterate` between two steps (also what ``Unroll(replay=True)`` stores per step)."""

    z: jax.Array
    fz: jax.Array
    state: Any
    best_z: jax.Array
    best_abs: jax.Array
    best_rel: jax.Array
    lowest_abs: jax.Array  # smallest absolute residual seen (the divergence test's reference)
    active: jax.Array
    steps: jax.Array
    num_fn_evals: jax.Array


def initial_carry(
    solver: AbstractFixedPointSolver,
    fn: FlatFn,
    z0: jax.Array,
    criterion: StopCriterion,
    init: Callable[[jax.Array, jax.Array], Any] | None = None,
) -> IterationCarry:
    """The carry before the first step: one evaluation of ``fn`` at ``z0`` and the solver's memory."""
    fz0 = fn(z0)
    abs0, rel0 = residuals(z0, fz0)
    state0 = (solver.init if init is None else init)(z0, fz0)
    done0 = (stop_metric(criterion, abs0, rel0) <= metric_bound(criterion)) | ~jnp.isfinite(abs0)
    return IterationCarry(z0, fz0, state0, z0, abs0, rel0, abs0, ~done0, jnp.zeros((), jnp.int32), jnp.ones((), jnp.int32))


def iteration_step(solver: AbstractFixedPointSolver, fn: FlatFn, criterion: StopCriterion, c: IterationCarry) -> IterationCarry:
    """One solver step, with per-sample best-iterate tracking; finished rows stop counting."""
    z, fz, st, nfev = solver.step(fn, c.z, c.fz, c.state, c.active)
    abs_res, rel_res = residuals(z, fz)
    m_new, m_best = stop_metric(criterion, abs_res, rel_res), stop_metric(criterion, c.best_abs, c.best_rel)
    finite = jnp.isfinite(abs_res)
    better = c.active & ((m_new < m_best) | ~finite)
    diverged = (
        jnp.zeros_like(finite) if criterion.divergence_ratio is None else abs_res > criterion.divergence_ratio * c.lowest_abs
    )
    # A finished row's result is its best iterate, fixed from now on (`better` needs `active`),
    # and solvers mask their own memory by `active`; its z and fz are never read again, so they
    # are not held back with a select (a pass over the batch and a copy of fz per step).
    return IterationCarry(
        z=z,
        fz=fz,
        state=st,
        best_z=_select_rows(better, z, c.best_z),
        best_abs=jnp.where(better, abs_res, c.best_abs),
        best_rel=jnp.where(better, rel_res, c.best_rel),
        lowest_abs=jnp.where(c.active, jnp.minimum(c.lowest_abs, abs_res), c.lowest_abs),
        active=c.active & finite & ~diverged & (m_new > metric_bound(criterion)),
        steps=c.steps + 1,
        num_fn_evals=c.num_fn_evals + nfev,
    )


def keep_iterating(criterion: StopCriterion, c: IterationCarry) -> jax.Array:
    """Whether another step is due: some row is still active and the step cap is not reached."""
    return jnp.any(c.active) & (c.steps < criterion.max_steps)


def iteration_result(
    solver: AbstractFixedPointSolver, criterion: StopCriterion, c: IterationCarry
) -> tuple[jax.Array, SolverInfo, Any]:
    """``(z, info, state)`` from the final carry: the lowest-residual iterate per sample."""
    converged = (stop_metric(criterion, c.best_abs, c.best_rel) <= metric_bound(criterion)) & jnp.isfinite(c.best_abs)
    info = SolverInfo(
        c.steps, c.num_fn_evals, c.best_abs, c.best_rel, converged, solver.num_fallbacks(c.state, c.best_z.shape[0])
    )
    return c.best_z, info, c.state


def iterate(
    solver: AbstractFixedPointSolver,
    fn: FlatFn,
    z0: jax.Array,
    criterion: StopCriterion,
    *,
    init: Callable[[jax.Array, jax.Array], Any] | None = None,
    unrolled: bool = False,
) -> tuple[jax.Array, SolverInfo, Any]:
    """Run ``solver`` on ``z = fn(z)`` from the flat ``(batch, n)`` point ``z0``.

    Args:
      solver: the solver configuration.
      fn: the map on flat iterates.
      z0: starting point.
      criterion: tolerance, step cap and stop mode.
      init: optional ``(z0, fn(z0)) -> state`` replacing ``solver.init`` (e.g. to warm
        start from a quasi-Newton estimate, see ``Broyden.warm_start``).
      unrolled: run exactly ``max_steps`` masked iterations in ``lax.scan`` so that
        autodiff (any mode) can go through them (time and memory grow with ``max_steps``);
        the default uses ``lax.while_loop`` and stops as soon as every sample is done.

    Returns:
      ``(z, info, state)``: the lowest-residual iterate per sample, diagnostics with
      per-sample residuals, and the solver's final memory.
    """
    if unrolled and not solver.supports_unrolling:
        raise ValueError(
            f"{type(solver).__name__} with these options cannot be unrolled (backward='unroll'); {solver.unroll_hint}"
        )
    carry = initial_carry(solver, fn, z0, criterion, init)
    body = functools.partial(iteration_step, solver, fn, criterion)
    keep_going = functools.partial(keep_iterating, criterion)
    if unrolled:

        def scan_body(c, _):
            return lax.cond(keep_going(c), body, lambda c: c, c), None

        carry, _ = lax.scan(scan_body, carry, None, length=criterion.max_steps)
    else:
        carry = lax.while_loop(keep_going, body, carry)
    return iteration_result(solver, criterion, carry)
