r"""Exact implicit differentiation.

Solves the adjoint equation :math:`u = J^\top u + g` with VJPs only (never forming
:math:`J`), then returns :math:`(\partial f/\partial\theta)^\top u` and
:math:`(\partial f/\partial x)^\top u` (implicit function theorem; Bai et al. 2019,
eq. 5; Blondel et al. 2022, eq. 4). The adjoint is a fixed-point problem in its own
right, so any forward solver can solve it, per sample, warm-started at
:math:`u_0 = g`; ``"gmres"`` runs ``jax.scipy.sparse.linalg.gmres`` on
:math:`(I - J^\top) u = g` over the whole batch instead.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from implicit_jax.estimators.base import BackwardInfo, CustomVJPBackward, custom_fixed_point, solver_backward_info
from implicit_jax.solvers import SOLVERS, AbstractFixedPointSolver, StopCriterion, iterate, resolve_solver

ADJOINT_SOLVERS = tuple(sorted(SOLVERS)) + ("gmres",)


@dataclasses.dataclass(frozen=True)
class Implicit(CustomVJPBackward):
    """Exact implicit differentiation.

    Attributes:
      solver: adjoint solver, one of ``ADJOINT_SOLVERS`` or a configured solver object.
      tol: adjoint tolerance (default: the forward ``tol``), on the adjoint residual
        :math:`\\|u - J^\\top u - g\\|` in the forward's ``stop_mode``.
      max_steps: adjoint iteration cap (default: the forward ``max_steps``).
      gmres_restart: Krylov dimension between GMRES restarts.
    """

    solver: str | AbstractFixedPointSolver = "anderson"
    tol: float | None = None
    max_steps: int | None = None
    gmres_restart: int = 20

    name = "implicit"

    def __post_init__(self):
        if isinstance(self.solver, str) and self.solver not in ADJOINT_SOLVERS:
            raise ValueError(f"unknown Implicit(solver={self.solver!r}); valid names are {list(ADJOINT_SOLVERS)}, or a configured solver object.")
        if not isinstance(self.solver, (str, AbstractFixedPointSolver)):
            raise TypeError(f"Implicit(solver=...) takes a name in {list(ADJOINT_SOLVERS)} or a solver object, got {self.solver!r}.")
        if self.tol is not None and not self.tol >= 0:
            raise ValueError(f"Implicit(tol=...) must be >= 0, got {self.tol!r}.")
        if self.max_steps is not None and not (isinstance(self.max_steps, int) and self.max_steps >= 1):
            raise ValueError(f"Implicit(max_steps=...) must be an integer >= 1, got {self.max_steps!r}.")

    def adjoint_criterion(self, forward: StopCriterion) -> StopCriterion:
        return StopCriterion(
            tol=forward.tol if self.tol is None else self.tol,
            max_steps=forward.max_steps if self.max_steps is None else self.max_steps,
            stop_mode=forward.stop_mode,
        )


def _gmres(config: Implicit, jvp_t, g: jax.Array, criterion: StopCriterion):
    restart = min(config.gmres_restart, g.size)
    u, _ = jax.scipy.sparse.linalg.gmres(
        lambda u: u - jvp_t(u), g, x0=g, tol=criterion.tol, atol=0.0,
        restart=restart, maxiter=max(1, math.ceil(criterion.max_steps / restart)), solve_method="batched",
    )
    return u


def implicit_rule(config: Implicit, ctx, g):
    jvp_t, pull = ctx.linearize()
    criterion = config.adjoint_criterion(ctx.criterion)
    if config.solver == "gmres":
        u = _gmres(config, jvp_t, g, criterion)
        abs_res, rel_res = ctx.adjoint_residual(jvp_t, u, g)
        metric = abs_res if criterion.stop_mode == "abs" else rel_res
        info = BackwardInfo(jnp.full((), -1.0, g.dtype), abs_res, rel_res, (metric <= criterion.tol).astype(g.dtype), jnp.zeros((), g.dtype))
        return pull(u), info
    u, solver_info, _ = iterate(resolve_solver(config.solver), lambda u: jvp_t(u) + g, g, criterion)
    return pull(u), solver_backward_info(solver_info, g.dtype)


implicit_fixed_point = custom_fixed_point(implicit_rule, "implicit")
Implicit._custom_solve = implicit_fixed_point
