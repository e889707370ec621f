r"""Truncated Neumann series for ``argmin`` (Lorraine, Vicol & Duvenaud, AISTATS 2020, eq. 9).

:math:`u = \alpha \sum_{j=0}^{k-1} (I - \alpha H)^j v`, which tends to :math:`H^{-1} v` as
:math:`k \to \infty` when :math:`0 < \alpha < 2/L` (:math:`L` the largest Hessian
eigenvalue); ``k`` Hessian-vector products.
"""

from __future__ import annotations

import dataclasses

from jax import lax

from implicit_jax.adjoint import custom_root
from implicit_jax.bilevel.argmin_estimators.base import AbstractArgminBackward, check_int_option


def neumann_rule(config: ArgminNeumann, ctx, v):
    """Eq. 9, accumulated term by term."""

    def term(_, carry):
        power, total = carry  # power = (I - aH)^j v
        power = power - config.step_size * ctx.hvp(power)
        return power, total + power

    _, total = lax.fori_loop(0, config.k - 1, term, (v, v))
    u = config.step_size * total
    return ctx.pull(u), ctx.info_without_solve(u, v, steps=config.k)


neumann_argmin = custom_root(neumann_rule, "neumann")


@dataclasses.dataclass(frozen=True)
class ArgminNeumann(AbstractArgminBackward):
    """Truncated Neumann series :math:`u = \\alpha \\sum_{j=0}^{k-1} (I - \\alpha H)^j v` (Lorraine et al. 2020, eq. 9).

    Attributes:
      k: number of terms (``k`` HVPs).
      step_size: :math:`\\alpha`.
    """

    k: int = 20
    step_size: float = 0.1

    name = "neumann"

    def __post_init__(self):
        check_int_option("ArgminNeumann", "k", self.k)
        if not self.step_size > 0:
            raise ValueError(f"ArgminNeumann(step_size=...) must be > 0, got {self.step_size!r}.")

    def solve(self, problem, minimizer, criterion, inputs, w0, tap):
        return neumann_argmin(self, problem, minimizer, criterion, inputs, w0, tap)
