"""implicit_jax: fixed points, implicit layers and bi-level problems with honest gradient estimators."""

from implicit_jax import quasi_newton
from implicit_jax.errors import NonConvergenceError
from implicit_jax.estimators import (
    BACKWARDS,
    JFB,
    AbstractBackward,
    BackwardInfo,
    Implicit,
    PhantomNeumann,
    PhantomUnroll,
    Shine,
    Unroll,
    backward_tap,
)
from implicit_jax.fixed_point import fixed_point
from implicit_jax.solvers import SOLVERS, AbstractFixedPointSolver, Anderson, Broyden, FixedPointIteration, SolverInfo

__version__ = "0.1.0"

__all__ = [
    "AbstractBackward",
    "AbstractFixedPointSolver",
    "Anderson",
    "BACKWARDS",
    "BackwardInfo",
    "Broyden",
    "FixedPointIteration",
    "Implicit",
    "JFB",
    "NonConvergenceError",
    "PhantomNeumann",
    "PhantomUnroll",
    "SOLVERS",
    "Shine",
    "SolverInfo",
    "Unroll",
    "backward_tap",
    "fixed_point",
    "quasi_newton",
]
