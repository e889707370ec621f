"""Linear solvers given only a matrix-vector product: CG (symmetric positive definite), per-row GMRES, and a dense direct solve for small systems."""

from implicit_jax.solvers.linear.base import AbstractLinearSolver
from implicit_jax.solvers.linear.cg import CG, CGInfo, conjugate_gradient
from implicit_jax.solvers.linear.dense import Dense, dense_matrices, dense_solve
from implicit_jax.solvers.linear.gmres import GMRES, gmres

__all__ = [
    "CG",
    "GMRES",
    "AbstractLinearSolver",
    "CGInfo",
    "Dense",
    "conjugate_gradient",
    "dense_matrices",
    "dense_solve",
    "gmres",
]
