"""Fixed-point solvers for :math:`z = f(z)` on flat ``(batch, n)`` iterates, and their driver."""

from implicit_jax.solvers.fixed_point.anderson import Anderson
from implicit_jax.solvers.fixed_point.base import AbstractFixedPointSolver, iterate
from implicit_jax.solvers.fixed_point.broyden import Broyden
from implicit_jax.solvers.fixed_point.iteration import FixedPointIteration

__all__ = ["AbstractFixedPointSolver", "Anderson", "Broyden", "FixedPointIteration", "iterate"]
