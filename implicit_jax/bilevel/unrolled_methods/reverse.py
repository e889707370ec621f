r"""Reverse mode through every unrolled step (Maclaurin, Duvenaud & Adams, ICML 2015).

The exact gradient of the unrolled objective; reverse mode stores each step's residuals,
so memory grows with the number of steps :math:`T`.
"""

from __future__ import annotations

import dataclasses

import jax

from implicit_jax.bilevel.unrolled_methods.base import AbstractUnrolledMethod


@dataclasses.dataclass(frozen=True)
class Reverse(AbstractUnrolledMethod):
    """Reverse mode through every step: exact; stores each step's residuals (memory grows with ``num_steps``)."""

    name = "reverse"

    def value_and_grad(self, problem, h_flat, state0, key):
        return jax.value_and_grad(problem.objective)(h_flat, state0)
