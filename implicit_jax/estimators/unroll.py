r"""Backpropagation through every forward iteration (the reference, not an implicit estimator).

The forward solver runs ``max_steps`` masked iterations inside ``lax.scan`` (samples
that converged are frozen), and reverse-mode autodiff goes through all of them, so
memory grows linearly with ``max_steps``. This differentiates the *computed* iterate,
including its dependence on ``z0``; it approaches the implicit gradient as the solver
converges. No ``custom_vjp`` is involved: that is the point of the baseline.
"""

from __future__ import annotations

import dataclasses

from implicit_jax.estimators.base import AbstractBackward


@dataclasses.dataclass(frozen=True)
class Unroll(AbstractBackward):
    """Autodiff through the unrolled forward solver (a backward tap reads zeros)."""

    name = "unroll"

    def check_solver(self, solver):
        if not solver.supports_unrolling:
            raise ValueError(f"backward='unroll' cannot differentiate through {solver!r}: {solver.unroll_hint}")

    def solve(self, problem, solver, criterion, params, x, z0, tap):
        z, info, _ = problem.solve(solver, criterion, params, x, z0, unrolled=True)
        return z, info
