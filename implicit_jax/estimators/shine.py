r"""SHINE: SHaring the INverse Estimate (Ramzi, Mannel, Bai, Starck, Ciuciu & Moreau, ICLR 2022).

The forward Broyden solve leaves :math:`H \approx (J - I)^{-1}` (low rank, one
estimate per sample). Since the exact adjoint is
:math:`u = (I - J^\top)^{-1} g = -H_\text{exact}^\top g`, SHINE uses (their eq. 4 / Alg. 1)

.. math:: u^\top = -g^\top H

at the cost of two low-rank products, no VJP, then one VJP for
:math:`(\partial f/\partial\theta)^\top u`. It is a cheap, biased direction, not the
exact gradient. Options:

* ``fallback``: per sample, if :math:`\|u\| > \text{ratio}\cdot\|g\|` use :math:`u = g`
  (the Jacobian-free direction); ratio 1.8 is the official code's rule.
* ``refine``: ``n`` more Broyden steps on the adjoint residual
  :math:`u \mapsto J^\top u + g - u`, warm-started at the SHINE estimate and at the
  transposed forward factors :math:`H^\top \approx (J^\top - I)^{-1}`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from implicit_jax import _flat
from implicit_jax import quasi_newton as qn
from implicit_jax.adjoint import custom_root, solver_backward_info
from implicit_jax.estimators.base import AbstractBackward
from implicit_jax.solvers import Broyden, StopCriterion, iterate


def shine_rule(config: "Shine", ctx, g):
    """Eq. 4: :math:`u = -H^\\top g` from the forward Broyden factors, then the fallback and refine options."""
    inverse = ctx.solver_state.inverse
    u = -jax.vmap(qn.rmatvec)(inverse, g)
    fell_back = jnp.zeros(g.shape[:1], bool)
    if config.fallback:
        fell_back = _flat.row_norm(u) > config.fallback_ratio * _flat.row_norm(g)
        u = jnp.where(fell_back[:, None], g, u)
    fallback_fraction = jnp.mean(fell_back.astype(g.dtype))
    jvp_t, pull = ctx.linearize()
    if config.refine == 0:
        return pull(u), ctx.info_without_solve(jvp_t, u, g, fallback_fraction=fallback_fraction)
    criterion = StopCriterion(
        tol=ctx.criterion.tol if config.refine_tol is None else config.refine_tol,
        max_steps=config.refine,
        stop_mode=ctx.criterion.stop_mode,
        atol=ctx.criterion.atol,
    )
    adjoint_solver = dataclasses.replace(ctx.solver, line_search=False)
    warm = Broyden.warm_start(jax.vmap(qn.transpose)(inverse), ctx.solver_state.steps)
    u, info, _ = iterate(adjoint_solver, lambda v: jvp_t(v) + g, u, criterion, init=warm)
    return pull(u), solver_backward_info(info, g.dtype, fallback_fraction)


shine_fixed_point = custom_root(shine_rule, "shine", keeps_solver_state=True)


@dataclasses.dataclass(frozen=True)
class Shine(AbstractBackward):
    """SHINE backward; needs ``solver="broyden"`` (or a ``Broyden`` object) in the forward.

    Attributes:
      fallback: replace :math:`u` by :math:`g` per sample where :math:`\\|u\\| > \\text{fallback\\_ratio}\\,\\|g\\|`.
      fallback_ratio: the threshold of that rule.
      refine: number of Broyden steps on the adjoint system after the SHINE estimate (0: none).
      refine_tol: stop refining once the adjoint residual is below it (default: the forward ``tol``).
    """

    fallback: bool = False
    fallback_ratio: float = 1.8
    refine: int = 0
    refine_tol: float | None = None

    name = "shine"

    def __post_init__(self):
        if not self.fallback_ratio > 0:
            raise ValueError(f"Shine(fallback_ratio=...) must be > 0, got {self.fallback_ratio!r}.")
        if not (isinstance(self.refine, int) and self.refine >= 0):
            raise ValueError(f"Shine(refine=...) must be an integer >= 0, got {self.refine!r}.")

    def check_solver(self, solver):
        if not isinstance(solver, Broyden):
            raise ValueError(
                f"backward='shine' reuses the forward quasi-Newton inverse, so it needs solver='broyden' "
                f"(or a Broyden(...) object); got solver {type(solver).__name__}. "
                "Other backwards ('implicit', 'jfb', 'phantom_unroll', 'phantom_neumann', 'unroll') work with any solver."
            )

    def solve(self, problem, solver, criterion, inputs, z0, tap):
        return shine_fixed_point(self, problem, solver, criterion, inputs, z0, tap)
