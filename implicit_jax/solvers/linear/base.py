"""The interface of the linear solvers: :math:`M x = b` given only the product :math:`v \\mapsto M v`."""

from __future__ import annotations

import abc
from collections.abc import Callable

import jax

from implicit_jax.solvers.stopping import SolverInfo, StopCriterion


class AbstractLinearSolver(abc.ABC):
    """A configured linear solver (a frozen, hashable dataclass), as in lineax.

    ``solve(matvec, b, x0, criterion)`` returns ``(x, info)``: ``info.abs_residual`` is
    :math:`\\|b - M x\\|` and ``info.rel_residual`` the same over :math:`\\|b\\|`, per row for
    solvers that treat the rows of a ``(batch, n)`` right-hand side as separate systems.
    """

    #: name used in error messages.
    name: str = ""

    @abc.abstractmethod
    def solve(
        self, matvec: Callable[[jax.Array], jax.Array], b: jax.Array, x0: jax.Array, criterion: StopCriterion
    ) -> tuple[jax.Array, SolverInfo]: ...
