r"""Truncated backpropagation: reverse mode through the last ``k`` steps (Shaban, Cheng, Hatch & Boots, AISTATS 2019).

The first :math:`T - k` steps run without differentiation, so the estimate ignores how the
hyperparameters shaped the state before the window (biased); memory grows with ``k``.
"""

from __future__ import annotations

import dataclasses

import jax

from implicit_jax.bilevel.unrolled_methods.base import AbstractUnrolledMethod


@dataclasses.dataclass(frozen=True)
class Truncated(AbstractUnrolledMethod):
    """Reverse mode through the last ``k`` steps only (truncated backpropagation, Shaban et al. 2019).

    The first ``num_steps - k`` steps run without differentiation; the estimate is biased
    (it ignores how the hyperparameters shaped the state before the window), memory grows with ``k``.
    """

    k: int = 10

    name = "truncated"

    def __post_init__(self):
        if not (isinstance(self.k, int) and not isinstance(self.k, bool) and self.k >= 1):
            raise ValueError(f"Truncated(k=...) must be an integer >= 1, got {self.k!r}.")

    def check(self, num_steps, num_hparams):
        if self.k > num_steps:
            raise ValueError(
                f"Truncated(k={self.k}) differentiates through the last k steps, but num_steps is {num_steps}; use k <= num_steps (k = num_steps is 'reverse')."
            )

    def value_and_grad(self, problem, h_flat, state0, key):
        start = problem.num_steps - self.k
        frozen = jax.lax.stop_gradient(problem.unravel(h_flat))
        middle = jax.lax.stop_gradient(problem.run(frozen, state0, 0, start))

        def window(h):
            hparams = problem.unravel(h)
            return problem.outer_loss(problem.run(hparams, middle, start, self.k), hparams)

        return jax.value_and_grad(window)(h_flat)
