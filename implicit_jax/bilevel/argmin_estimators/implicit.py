r"""Exact implicit differentiation for ``argmin``: conjugate gradient on :math:`\nabla^2_w g\, u = v`.

Hessian-vector products only (forward-over-reverse), never the Hessian; then the
hypergradient :math:`-(\partial^2_{\lambda w} g)^\top u` (Pedregosa 2016, eq. 3; Blondel et al.
2022, eq. 4). Exact up to the CG tolerance, at one HVP per CG step.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from implicit_jax.adjoint import custom_root, solver_backward_info
from implicit_jax.bilevel.argmin_estimators.base import AbstractArgminBackward, check_int_option

DEFAULT_CG_STEPS = 100


def implicit_rule(config: ArgminImplicit, ctx, v):
    """:math:`u = H^{-1} v` by CG from zero."""
    tol = ctx.criterion.tol if config.tol is None else config.tol
    u, info = ctx.cg(v, jnp.zeros_like(v), tol, config.max_steps)
    return ctx.pull(u), solver_backward_info(info, v.dtype)


implicit_argmin = custom_root(implicit_rule, "implicit")


@dataclasses.dataclass(frozen=True)
class ArgminImplicit(AbstractArgminBackward):
    """Exact implicit differentiation: conjugate gradient on :math:`H u = v` with Hessian-vector products.

    Attributes:
      tol: relative tolerance :math:`\\|Hu - v\\| \\le \\text{tol}\\,\\|v\\|` (default: the inner ``tol``).
      max_steps: CG iteration cap (one HVP each).
    """

    tol: float | None = None
    max_steps: int = DEFAULT_CG_STEPS

    name = "implicit"

    def __post_init__(self):
        check_int_option("ArgminImplicit", "max_steps", self.max_steps)
        if self.tol is not None and not self.tol >= 0:
            raise ValueError(f"ArgminImplicit(tol=...) must be >= 0, got {self.tol!r}.")

    def solve(self, problem, minimizer, criterion, inputs, w0, tap):
        return implicit_argmin(self, problem, minimizer, criterion, inputs, w0, tap)
