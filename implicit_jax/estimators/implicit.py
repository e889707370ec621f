r"""Exact implicit differentiation.

Solves the adjoint equation :math:`u = J^\top u + g` with VJPs only (never forming
:math:`J`), then returns :math:`(\partial f/\partial\theta)^\top u` and
:math:`(\partial f/\partial x)^\top u` (implicit function theorem; Bai et al. 2019,
eq. 5; Blondel et al. 2022, eq. 4). The adjoint is a fixed-point problem in its own
right, so any forward solver can solve it, per sample, warm-started at
:math:`u_0 = g`; ``"gmres"`` runs restarted GMRES on :math:`(I - J^\top) u = g`, also per
sample (:func:`implicit_jax.solvers.gmres`), which converges even where the fixed-point
iteration on the adjoint does not (spectral radius of :math:`J` above one).
"""

from __future__ import annotations

import dataclasses

import jax

from implicit_jax.estimators.base import BackwardInfo, CustomVJPBackward, custom_fixed_point, solver_backward_info
from implicit_jax.solvers import SOLVERS, AbstractFixedPointSolver, StopCriterion, gmres, iterate, resolve_solver

ADJOINT_SOLVERS = tuple(sorted(SOLVERS)) + ("gmres",)


@dataclasses.dataclass(frozen=True)
class LinearSolveOptions:
    r"""How the linear system :math:`u = A u + b` of implicit differentiation is solved.

    Shared by :class:`Implicit` (:math:`A = J^\top`, the adjoint) and
    :class:`~implicit_jax.estimators.implicit_jvp.ImplicitJVP` (:math:`A = J` for tangents,
    :math:`J^\top` for cotangents).

    Attributes:
      solver: linear-system solver, one of ``ADJOINT_SOLVERS`` or a configured solver object.
      tol: tolerance (default: the forward ``tol``), on the residual
        :math:`\|u - A u - b\|` in the forward's ``stop_mode``.
      max_steps: iteration cap (default: the forward ``max_steps``).
      gmres_restart: Krylov dimension between GMRES restarts.
    """

    solver: str | AbstractFixedPointSolver = "anderson"
    tol: float | None = None
    max_steps: int | None = None
    gmres_restart: int = 20

    def __post_init__(self):
        kind = type(self).__name__
        if isinstance(self.solver, str) and self.solver not in ADJOINT_SOLVERS:
            raise ValueError(f"unknown {kind}(solver={self.solver!r}); valid names are {list(ADJOINT_SOLVERS)}, or a configured solver object.")
        if not isinstance(self.solver, (str, AbstractFixedPointSolver)):
            raise TypeError(f"{kind}(solver=...) takes a name in {list(ADJOINT_SOLVERS)} or a solver object, got {self.solver!r}.")
        if self.tol is not None and not self.tol >= 0:
            raise ValueError(f"{kind}(tol=...) must be >= 0, got {self.tol!r}.")
        if self.max_steps is not None and not (isinstance(self.max_steps, int) and self.max_steps >= 1):
            raise ValueError(f"{kind}(max_steps=...) must be an integer >= 1, got {self.max_steps!r}.")
        if not (isinstance(self.gmres_restart, int) and self.gmres_restart >= 1):
            raise ValueError(f"{kind}(gmres_restart=...) must be an integer >= 1, got {self.gmres_restart!r}.")

    def adjoint_criterion(self, forward: StopCriterion) -> StopCriterion:
        return StopCriterion(
            tol=forward.tol if self.tol is None else self.tol,
            max_steps=forward.max_steps if self.max_steps is None else self.max_steps,
            stop_mode=forward.stop_mode,
        )


@dataclasses.dataclass(frozen=True)
class Implicit(LinearSolveOptions, CustomVJPBackward):
    r"""Exact implicit differentiation (reverse mode, ``jax.custom_vjp``).

    The adjoint :math:`u = J^\top u + g` is solved as :class:`LinearSolveOptions` says.
    """

    name = "implicit"


def solve_linear_fixed_point(config: LinearSolveOptions, apply_a, b: jax.Array, criterion: StopCriterion) -> tuple[jax.Array, BackwardInfo]:
    r"""Solve :math:`u = A u + b` (``apply_a`` applies the linear map :math:`A`), per sample, warm-started at :math:`u_0 = b`.

    A fixed-point solver iterates the map itself; ``"gmres"`` solves :math:`(I - A) u = b`
    with one Krylov space per sample (its relative residual is over :math:`\|b\|`).
    """
    if config.solver == "gmres":
        u, solver_info = gmres(lambda v: v - apply_a(v), b, b, criterion, restart=config.gmres_restart)
    else:
        u, solver_info, _ = iterate(resolve_solver(config.solver), lambda u: apply_a(u) + b, b, criterion)
    return u, solver_backward_info(solver_info, b.dtype)


def implicit_rule(config: Implicit, ctx, g):
    jvp_t, pull = ctx.linearize()
    u, info = solve_linear_fixed_point(config, jvp_t, g, config.adjoint_criterion(ctx.criterion))
    return pull(u), info


implicit_fixed_point = custom_fixed_point(implicit_rule, "implicit")
Implicit._custom_solve = implicit_fixed_point
