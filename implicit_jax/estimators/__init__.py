"""Backward estimators for fixed points: one module and one ``jax.custom_vjp`` (or ``custom_jvp``) per mode."""

from collections.abc import Callable, Mapping
from typing import Any

from implicit_jax import _deprecated
from implicit_jax._registry import resolve
from implicit_jax.adjoint import BackwardInfo, backward_tap
from implicit_jax.estimators.base import AbstractBackward, FixedPointContext, FixedPointProblem
from implicit_jax.estimators.implicit import ADJOINT_SOLVERS, Implicit, LinearSolveOptions
from implicit_jax.estimators.implicit_jvp import ImplicitJVP
from implicit_jax.estimators.jfb import JFB
from implicit_jax.estimators.phantom import PhantomNeumann, PhantomUnroll
from implicit_jax.estimators.shine import Shine
from implicit_jax.estimators.unroll import Unroll
from implicit_jax.solvers import AbstractFixedPointSolver, AbstractLinearSolver, resolve_linear_solver, resolve_solver

#: backward names accepted by ``fixed_point(backward=...)``, mapped to default configurations.
BACKWARDS = {
    "unroll": Unroll,
    "implicit": Implicit,
    "implicit_jvp": ImplicitJVP,
    "shine": Shine,
    "jfb": JFB,
    "phantom_unroll": PhantomUnroll,
    "phantom_neumann": PhantomNeumann,
}


def resolve_backward(backward, options: Mapping[str, Any] | None = None) -> AbstractBackward:
    """A backward name (with ``options``, e.g. ``{"k": 3, "damping": 0.8}``) or configured object -> configured object.

    Unknown names, options that the estimator does not take and values of the wrong type
    raise one ValueError listing the valid names or options. A solver-valued option accepts a
    name (``{"solver": "gmres"}``, ``{"fallback": "cg"}`` or ``{"fallback": None}``).
    """
    example = "PhantomUnroll(k=5, damping=0.5), Shine(fallback=True) or Implicit(solver=GMRES(restart=20))"
    converters: dict[type, Callable[..., Any]] = {
        AbstractLinearSolver: resolve_linear_solver,
        AbstractFixedPointSolver: resolve_solver,
    }
    return resolve(backward, BACKWARDS, AbstractBackward, "backward", example, options, converters)


__all__ = [
    "ADJOINT_SOLVERS",
    "BACKWARDS",
    "JFB",
    "AbstractBackward",
    "BackwardInfo",
    "FixedPointContext",
    "FixedPointProblem",
    "Implicit",
    "ImplicitJVP",
    "LinearSolveOptions",
    "PhantomNeumann",
    "PhantomUnroll",
    "Shine",
    "Unroll",
    "backward_tap",
    "resolve_backward",
]


def __getattr__(name: str):
    if name == "custom_fixed_point":
        return _deprecated.custom_fixed_point
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
