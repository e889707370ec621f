"""implicit_jax: fixed points, implicit layers and bi-level problems with honest gradient estimators."""

from implicit_jax import quasi_newton
from implicit_jax.bilevel import (
    FDS,
    FG2U,
    ArgminImplicit,
    ArgminJFB,
    ArgminNeumann,
    ArgminShine,
    ArgminUnroll,
    Reverse,
    Truncated,
    argmin,
    shared_schedule,
    unrolled_hypergradient,
)
from implicit_jax.errors import NonConvergenceError
from implicit_jax.estimators import (
    BACKWARDS,
    JFB,
    AbstractBackward,
    BackwardInfo,
    Implicit,
    ImplicitJVP,
    PhantomNeumann,
    PhantomUnroll,
    Shine,
    Unroll,
    backward_tap,
)
from implicit_jax.fixed_point import fixed_point
from implicit_jax.solvers import SOLVERS, AbstractFixedPointSolver, Anderson, Broyden, FixedPointIteration, SolverInfo
from implicit_jax.solvers.lbfgs import LBFGS
from implicit_jax.solvers.minimize import MinimizeInfo
from implicit_jax.solvers.optax_minimizer import OptaxMinimizer

__version__ = "0.1.0"

__all__ = [
    "AbstractBackward",
    "ArgminImplicit",
    "ArgminJFB",
    "ArgminNeumann",
    "ArgminShine",
    "ArgminUnroll",
    "FDS",
    "FG2U",
    "LBFGS",
    "MinimizeInfo",
    "OptaxMinimizer",
    "Reverse",
    "Truncated",
    "argmin",
    "shared_schedule",
    "unrolled_hypergradient",
    "AbstractFixedPointSolver",
    "Anderson",
    "BACKWARDS",
    "BackwardInfo",
    "Broyden",
    "FixedPointIteration",
    "Implicit",
    "ImplicitJVP",
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
