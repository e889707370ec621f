r"""Damped fixed-point (Picard / Krasnosel'skii-Mann) iteration.

.. math:: z_{t+1} = \lambda f(z_t) + (1 - \lambda) z_t

Converges linearly for a contraction (``damping = 1``) and, for ``0 < damping < 1``,
for any non-expansive map with a fixed point. One evaluation of ``f`` per step.
"""

from __future__ import annotations

import dataclasses

from implicit_jax.solvers.fixed_point.base import AbstractFixedPointSolver


@dataclasses.dataclass(frozen=True)
class FixedPointIteration(AbstractFixedPointSolver):
    """Damped fixed-point iteration.

    Attributes:
      damping: :math:`\\lambda \\in (0, 1]`, the weight of the new evaluation.
    """

    damping: float = 1.0

    def __post_init__(self):
        if not 0.0 < self.damping <= 1.0:
            raise ValueError(f"FixedPointIteration(damping=...) must lie in (0, 1], got {self.damping!r}.")

    def init(self, z, fz):
        return ()

    def step(self, fn, z, fz, state, active):
        z_new = self.damping * fz + (1.0 - self.damping) * z if self.damping != 1.0 else fz
        return z_new, fn(z_new), state, 1
