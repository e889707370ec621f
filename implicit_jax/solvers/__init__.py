"""Pure-JAX solvers under ``lax.while_loop``, grouped by kind.

* :mod:`~implicit_jax.solvers.fixed_point`: fixed-point iteration, Anderson, Broyden (and the driver :func:`iterate`);
* :mod:`~implicit_jax.solvers.linear`: CG, per-row restarted GMRES and Dense (small systems, formed and factorised) as configured objects;
* :mod:`~implicit_jax.solvers.minimizers`: L-BFGS and Optax optimizers (and the driver :func:`minimize`);
* :mod:`~implicit_jax.solvers.stopping`: the stopping rule and the diagnostics they share.
"""

from collections.abc import Mapping
from typing import Any

from implicit_jax._registry import resolve
from implicit_jax.solvers.fixed_point import AbstractFixedPointSolver, Anderson, Broyden, FixedPointIteration, iterate
from implicit_jax.solvers.linear import CG, GMRES, AbstractLinearSolver, CGInfo, Dense, conjugate_gradient, dense_solve, gmres
from implicit_jax.solvers.minimizers import LBFGS, AbstractMinimizer, MinimizeInfo, OptaxMinimizer, minimize
from implicit_jax.solvers.stopping import STOP_MODES, SolverInfo, StopCriterion

#: fixed-point solver names accepted wherever a fixed-point solver is expected, mapped to default configurations.
SOLVERS = {
    "fixed_point_iteration": FixedPointIteration,
    "anderson": Anderson,
    "broyden": Broyden,
}

#: linear solver names, mapped to default configurations.
LINEAR_SOLVERS = {"cg": CG, "gmres": GMRES, "dense": Dense}


def resolve_solver(solver, option: str = "solver", options: Mapping[str, Any] | None = None) -> AbstractFixedPointSolver:
    """A fixed-point solver name (with ``options``, e.g. ``{"memory": 10}``) or configured object -> configured object.

    Unknown names, options that the solver does not take and values of the wrong type raise
    one ValueError listing the valid names or options.
    """
    return resolve(solver, SOLVERS, AbstractFixedPointSolver, option, "Anderson(memory=5) or Broyden(memory=30)", options)


def resolve_linear_solver(
    solver, option: str = "linear solver", options: Mapping[str, Any] | None = None
) -> AbstractLinearSolver:
    """A linear solver name (``"cg"``, ``"gmres"``, ``"dense"``, with ``options``) or configured object -> configured object."""
    return resolve(solver, LINEAR_SOLVERS, AbstractLinearSolver, option, "GMRES(restart=20) or CG()", options)


__all__ = [
    "CG",
    "GMRES",
    "LBFGS",
    "LINEAR_SOLVERS",
    "SOLVERS",
    "STOP_MODES",
    "AbstractFixedPointSolver",
    "AbstractLinearSolver",
    "AbstractMinimizer",
    "Anderson",
    "Broyden",
    "CGInfo",
    "Dense",
    "FixedPointIteration",
    "MinimizeInfo",
    "OptaxMinimizer",
    "SolverInfo",
    "StopCriterion",
    "conjugate_gradient",
    "dense_solve",
    "gmres",
    "iterate",
    "minimize",
    "resolve_linear_solver",
    "resolve_solver",
]
