"""Errors raised on request (``throw=True``), eagerly or from inside ``jax.jit``.

Inside a traced computation the check runs through ``jax.debug.callback``; the
exception then surfaces as a ``JaxRuntimeError`` whose message contains the
:class:`~implicit_jax.NonConvergenceError` text. Outside tracing it is raised directly.
"""

from __future__ import annotations

import jax
import numpy as np


class NonConvergenceError(RuntimeError):
    """A solve ended without meeting its tolerance (or with a non-finite residual)."""


def _is_traced(*arrays) -> bool:
    return any(isinstance(a, jax.core.Tracer) for a in arrays)


def _check_forward(converged, steps, abs_residual, rel_residual):
    converged = np.asarray(converged)
    if not converged.all():
        bad = np.flatnonzero(~converged.reshape(-1))
        raise NonConvergenceError(
            f"fixed_point did not converge: {bad.size} of {converged.size} sample(s) unconverged after "
            f"{int(np.max(steps))} steps (worst abs residual {np.nanmax(np.asarray(abs_residual)):.3e}, "
            f"worst rel residual {np.nanmax(np.asarray(rel_residual)):.3e}; NaN means a non-finite residual). "
            "Raise max_steps, loosen tol, damp the map, or use another solver."
        )


def _run_check(check, *args) -> None:
    """``check(*args)`` now, or from inside the traced computation when any argument is traced."""
    if _is_traced(*args):
        jax.debug.callback(check, *args)
    else:
        check(*args)


def raise_if_not_converged(info) -> None:
    """Raise :class:`~implicit_jax.NonConvergenceError` unless every sample of a forward solve converged."""
    _run_check(_check_forward, info.converged, info.steps, info.abs_residual, info.rel_residual)


def _check_argmin(converged, steps, grad_norm, value):
    if not bool(np.asarray(converged)):
        raise NonConvergenceError(
            f"argmin's inner solver did not converge after {int(steps)} steps (gradient norm "
            f"{float(grad_norm):.3e}, value {float(value):.6g}; NaN means a non-finite value). "
            "Raise max_steps, loosen tol, or check that g is smooth and strongly convex in w."
        )


def raise_if_argmin_not_converged(info) -> None:
    """Raise :class:`~implicit_jax.NonConvergenceError` unless an inner minimisation met its gradient tolerance."""
    _run_check(_check_argmin, info.converged, info.steps, info.grad_norm, info.value)


def _check_backward(name, converged, steps, abs_residual):
    converged = np.asarray(converged)
    if np.any(converged == 0.0):
        raise NonConvergenceError(
            f"the adjoint solve of backward={name!r} did not converge after {int(np.max(steps))} steps "
            f"(abs residual {np.nanmax(np.asarray(abs_residual)):.3e}). Raise its max_steps or tol, "
            "or use another adjoint solver."
        )


def raise_if_backward_failed(info, name: str) -> None:
    """Raise when a backward pass that has an adjoint solve reports ``converged == 0``."""
    _run_check(lambda *a: _check_backward(name, *a), info.converged, info.steps, info.abs_residual)
