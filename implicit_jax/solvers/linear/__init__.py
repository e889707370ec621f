"""Linear solvers given only a matrix-vector product: CG (symmetric positive definite), per-row GMRES, and LU for small systems."""

from implicit_jax.solvers.linear.base import AbstractLinearSolver
from implicit_jax.solvers.linear.cg import CG, CGInfo, conjugate_gradient
from implicit_jax.solvers.linear.gmres import GMRES, gmres
from implicit_jax.solvers.linear.lu import LU, dense_matrices, lu_solve

__all__ = ["CG", "GMRES", "LU", "AbstractLinearSolver", "CGInfo", "conjugate_gradient", "dense_matrices", "gmres", "lu_solve"]
