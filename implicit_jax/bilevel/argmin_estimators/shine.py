r"""SHINE for ``argmin``: reuse the inner solver's L-BFGS inverse-Hessian estimate (Ramzi et al., ICLR 2022, Sec. 3.1).

:math:`u = B v` with :math:`B` from the two-loop recursion on the inner solver's final
secant pairs (in ring-buffer order): no Hessian-vector product at all. Outer-problem
awareness (their Sec. 3.2) adds, every few inner steps, the secant pair along
:math:`e \propto B \nabla_w F` so that :math:`B` is accurate in the direction the
hypergradient needs; ``fallback`` checks the estimate with one HVP and repairs it by CG.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from jax import lax

from implicit_jax import quasi_newton as qn
from implicit_jax.adjoint import custom_root
from implicit_jax.bilevel.argmin_estimators.base import AbstractArgminBackward, check_int_option
from implicit_jax.bilevel.argmin_estimators.implicit import DEFAULT_CG_STEPS


def shine_rule(config: ArgminShine, ctx, v):
    """:math:`u = B v`, then ``refine`` CG steps and the ``fallback`` check if asked."""
    u = qn.lbfgs_inverse_hvp(ctx.solver_state.memory, v)
    tol = ctx.criterion.tol if config.refine_tol is None else config.refine_tol
    steps = 0
    if config.refine:
        u, info = ctx.cg(v, u, tol, config.refine)
        steps = info.steps
    if not config.fallback:
        return ctx.pull(u), ctx.info_without_solve(u, v, steps=steps)
    bad = jnp.linalg.norm(ctx.hvp(u) - v) > config.fallback_tol * jnp.linalg.norm(v)
    bad = bad | ~jnp.all(jnp.isfinite(u))
    u0 = jnp.where(jnp.all(jnp.isfinite(u)), u, jnp.zeros_like(u))
    u = lax.cond(bad, lambda u0: ctx.cg(v, u0, tol, config.max_fallback_steps)[0], lambda u0: u0, u0)
    return ctx.pull(u), ctx.info_without_solve(u, v, steps=steps, fallback_fraction=bad.astype(v.dtype))


shine_argmin = custom_root(shine_rule, "shine", keeps_solver_state=True)


@dataclasses.dataclass(frozen=True)
class ArgminShine(AbstractArgminBackward):
    """SHINE for bi-level problems: :math:`u = B v` with the inner L-BFGS inverse-Hessian estimate :math:`B`.

    Attributes:
      opa_every: outer-problem awareness (Ramzi et al. 2022, Sec. 3.2): every ``opa_every``
        inner steps add the secant pair along :math:`e \\propto B \\nabla_w F`; needs
        ``argmin(..., outer_loss=F)``. 0 disables it. The paper's HO code used 5, with a memory of 60.
      fallback: check the estimate with one HVP and, when
        :math:`\\|H u - v\\| > \\text{fallback\\_tol}\\,\\|v\\|`, replace it by a CG solve warm-started at it
        (never silently wrong; costs CG steps only when it triggers).
      fallback_tol: threshold of that check.
      refine: CG steps on :math:`H u = v` always run from the SHINE estimate (0: none).
      refine_tol: CG tolerance of the refine and fallback solves (default: the inner ``tol``).
      max_fallback_steps: CG cap of the fallback solve.
    """

    opa_every: int = 0
    fallback: bool = False
    fallback_tol: float = 0.1
    refine: int = 0
    refine_tol: float | None = None
    max_fallback_steps: int = DEFAULT_CG_STEPS

    name = "shine"

    def __post_init__(self):
        check_int_option("ArgminShine", "opa_every", self.opa_every, 0)
        check_int_option("ArgminShine", "refine", self.refine, 0)
        check_int_option("ArgminShine", "max_fallback_steps", self.max_fallback_steps)
        if not self.fallback_tol > 0:
            raise ValueError(f"ArgminShine(fallback_tol=...) must be > 0, got {self.fallback_tol!r}.")

    def outer_awareness(self) -> int:
        return self.opa_every

    def solve(self, problem, minimizer, criterion, inputs, w0, tap):
        return shine_argmin(self, problem, minimizer, criterion, inputs, w0, tap)
