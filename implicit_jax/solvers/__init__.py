"""Fixed-point solvers: pure functions driven by ``lax.while_loop`` on flat ``(batch, n)`` iterates."""

from implicit_jax.solvers.anderson import Anderson
from implicit_jax.solvers.base import AbstractFixedPointSolver, SolverInfo, StopCriterion, iterate
from implicit_jax.solvers.broyden import Broyden
from implicit_jax.solvers.fixed_point_iteration import FixedPointIteration

#: solver names accepted wherever a solver is expected, mapped to default configurations.
SOLVERS = {
    "fixed_point_iteration": FixedPointIteration,
    "anderson": Anderson,
    "broyden": Broyden,
}


def resolve_solver(solver, option: str = "solver") -> AbstractFixedPointSolver:
    """A solver name or configured object -> configured object (ValueError listing the names)."""
    if isinstance(solver, AbstractFixedPointSolver):
        return solver
    if isinstance(solver, str) and solver in SOLVERS:
        return SOLVERS[solver]()
    raise ValueError(
        f"unknown {option} {solver!r}; valid names are {sorted(SOLVERS)}, "
        "or pass a configured object such as Anderson(memory=5) or Broyden(memory=30)."
    )


__all__ = [
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
