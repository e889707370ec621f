"""Minimisers for the inner problems of ``argmin``: L-BFGS with a Wolfe line search, or any Optax optimizer."""

from implicit_jax.solvers.minimizers.base import AbstractMinimizer, MinimizeInfo, OuterAwareness, minimize
from implicit_jax.solvers.minimizers.lbfgs import LBFGS
from implicit_jax.solvers.minimizers.optax_minimizer import OptaxMinimizer

__all__ = ["LBFGS", "AbstractMinimizer", "MinimizeInfo", "OptaxMinimizer", "OuterAwareness", "minimize"]
