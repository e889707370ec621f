"""Fixed-point solvers: pure functions driven by ``lax.while_loop`` on flat ``(batch, n)`` iterates."""

from implicit_jax._registry import resolve
from implicit_jax.solvers.anderson import Anderson
from implicit_jax.solvers.base import AbstractFixedPointSolver, SolverInfo, StopCriterion, iterate
from implicit_jax.solvers.broyden import Broyden
from implicit_jax.solvers.cg import CGInfo, conjugate_gradient
from implicit_jax.solvers.fixed_point_iteration import FixedPointIteration
from implicit_jax.solvers.gmres import gmres
from implicit_jax.solvers.lbfgs import LBFGS
from implicit_jax.solvers.minimize import AbstractMinimizer, MinimizeInfo, minimize
from implicit_jax.solvers.optax_minimizer import OptaxMinimizer

#: solver names accepted wherever a solver is expected, mapped to default configurations.
SOLVERS = {
    "fixed_point_iteration": FixedPointIteration,
    "anderson": Anderson,
    "broyden": Broyden,
}


def resolve_solver(solver, option: str = "solver") -> AbstractFixedPointSolver:
    """A solver name or configured object -> configured object (ValueError listing the names)."""
    return resolve(solver, SOLVERS, AbstractFixedPointSolver, option, "Anderson(memory=5) or Broyden(memory=30)")


__all__ = [
    "AbstractMinimizer",
    "CGInfo",
    "LBFGS",
    "MinimizeInfo",
    "OptaxMinimizer",
    "conjugate_gradient",
    "gmres",
    "minimize",
    "AbstractFixedPointSolver",
    "Anderson",
    "Broyden",
    "FixedPointIteration",
    "SOLVERS",
    "SolverInfo",
    "StopCriterion",
    "iterate",
    "resolve_solver",
]
