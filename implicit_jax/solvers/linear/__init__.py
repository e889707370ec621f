"""Linear solvers given only a matrix-vector product: CG (symmetric positive definite) and per-row GMRES."""

from implicit_jax.solvers.linear.base import AbstractLinearSolver
from implicit_jax.solvers.linear.cg import CG, CGInfo, conjugate_gradient
from implicit_jax.solvers.linear.gmres import GMRES, gmres

__all__ = ["CG", "GMRES", "AbstractLinearSolver", "CGInfo", "conjugate_gradient", "gmres"]
