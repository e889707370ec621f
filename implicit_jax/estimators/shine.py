r"""SHINE: SHaring the INverse Estimate (Ramzi, Mannel, Bai, Starck, Ciuciu & Moreau, ICLR 2022).

The forward quasi-Newton solve leaves :math:`H \approx (J - I)^{-1}`, one estimate per
sample: Broyden's low-rank factors, or Anderson's multisecant estimate
:math:`H = -\beta I + (\Delta X + \beta \Delta G) M^{-1} \Delta G^\top` built from its history
(:func:`implicit_jax.solvers.fixed_point.anderson.multisecant_rmatvec`). Since the exact adjoint is
:math:`u = (I - J^\top)^{-1} g = -H_\text{exact}^\top g`, SHINE uses (their eq. 4 / Alg. 1)

.. math:: u^\top = -g^\top H

at the cost of two low-rank products, no VJP, then one VJP for
:math:`(\partial f/\partial\theta)^\top u`. It is a cheap, biased direction, not the
exact gradient. Options:

* ``fallback``: per sample, if :math:`\|u\| > \text{ratio}\cdot\|g\|` use :math:`u = g`
  (the Jacobian-free direction); ratio 1.8 is the official code's rule.
* ``refine``: ``n`` more steps of the forward solver on the adjoint residual
  :math:`u \mapsto J^\top u + g - u`, warm-started at the SHINE estimate (Broyden also at
  the transposed forward factors :math:`H^\top \approx (J^\top - I)^{-1}`; Anderson from a
  fresh history).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from implicit_jax import _flat
from implicit_jax.adjoint import custom_root, solver_backward_info
from implicit_jax.estimators.base import AbstractBackward
from implicit_jax.solvers import StopCriterion, iterate


def shine_rule(config: Shine, ctx, g):
    """Eq. 4: :math:`u = -H^\\top g` from the forward solver's estimate, then the fallback and refine options."""
    u = -ctx.solver.inverse_transpose_product(ctx.solver_state, g)
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
    adjoint_solver, warm = ctx.solver.adjoint_refinement(ctx.solver_state)
    u, info, _ = iterate(adjoint_solver, lambda v: jvp_t(v) + g, u, criterion, init=warm)
    return pull(u), solver_backward_info(info, g.dtype, fallback_fraction)


shine_fixed_point = custom_root(shine_rule, "shine", keeps_solver_state=True)


@dataclasses.dataclass(frozen=True)
class Shine(AbstractBackward):
    """SHINE backward; needs a forward solver that keeps an inverse estimate: ``"broyden"`` or ``"anderson"``.

    Attributes:
      fallback: replace :math:`u` by :math:`g` per sample where :math:`\\|u\\| > \\text{fallback\\_ratio}\\,\\|g\\|`.
      fallback_ratio: the threshold of that rule.
      refine: number of adjoint steps (of the forward solver) after the SHINE estimate (0: none).
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
        if not solver.shares_inverse:
            raise ValueError(
                f"backward='shine' reuses the forward quasi-Newton inverse, so it needs solver='broyden' or 'anderson' "
                f"(or a Broyden(...)/Anderson(...) object); got solver {type(solver).__name__}. "
                "Other backwards ('implicit', 'jfb', 'phantom_unroll', 'phantom_neumann', 'unroll') work with any solver."
            )

    def solve(self, problem, solver, criterion, inputs, z0, tap):
        return shine_fixed_point(self, problem, solver, criterion, inputs, z0, tap)
