r"""Limited-memory Broyden's method on the residual :math:`r(z) = f(z) - z`.

Keeps :math:`H \approx (\partial r/\partial z)^{-1} = (J - I)^{-1}` as low-rank factors
(:class:`implicit_jax.quasi_newton.LowRankInverse`, one estimate per sample) and steps

.. math:: z_{+} = z - \alpha H r(z),

with :math:`\alpha = 1`, or chosen per sample by backtracking (halving) until the
non-monotone test of Li & Fukushima (2000, eq. 2.5, without its :math:`\|\alpha d\|^2` term)

.. math:: \|r(z_+)\| \le (1 + \eta_k - c\,\alpha) \|r(z)\|, \qquad \eta_k = \eta_0 / (k + 1)^2

holds: Broyden's residual is not monotone even on linear problems, so a monotone test
would reject good steps; the summable allowance :math:`\eta_k` still stops runaways. After each step :math:`H` gets a
"good" or "bad" Broyden update so that :math:`H \Delta r = \Delta z`. This is the
solver of the DEQ papers (Bai et al. 2019) and the one whose :math:`H` SHINE
(Ramzi et al. 2022) hands to the backward pass: the final estimate is returned as
the solver state by :func:`implicit_jax.solvers.fixed_point.base.iterate`.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from implicit_jax import quasi_newton as qn
from implicit_jax._flat import row_norm
from implicit_jax.solvers.fixed_point.base import AbstractFixedPointSolver

_UPDATES = tuple(qn.BROYDEN_UPDATES)


class BroydenState(NamedTuple):
    inverse: qn.LowRankInverse  # leaves with a leading batch axis: one estimate per sample
    steps: jax.Array  # (batch,) steps taken, for the line search's allowance
    h_residual: jax.Array  # (batch, n) H r(z) at the current iterate (minus the next direction)


@dataclasses.dataclass(frozen=True)
class Broyden(AbstractFixedPointSolver):
    """Limited-memory Broyden.

    Attributes:
      memory: number of rank-one updates kept; when full, the estimate restarts from :math:`-I`.
      update: ``"good"`` (Broyden's first method, the DEQ default) or ``"bad"``.
      line_search: backtrack the step per sample (costs extra evaluations of ``f``).
      max_backtracks: halvings tried by the line search before the step is taken anyway.
      sufficient_decrease: ``c`` in the acceptance rule.
      nonmonotone: :math:`\\eta_0`, the residual growth the line search tolerates at the first step.
    """

    memory: int = 30
    update: Literal["good", "bad"] = "good"
    line_search: bool = False
    max_backtracks: int = 4
    sufficient_decrease: float = 1e-4
    nonmonotone: float = 1.0

    unroll_hint: str = dataclasses.field(
        default="use Broyden(line_search=False) or another solver.", init=False, repr=False, compare=False
    )

    def __post_init__(self):
        if not (isinstance(self.memory, int) and self.memory >= 1):
            raise ValueError(f"Broyden(memory=...) must be an integer >= 1, got {self.memory!r}.")
        if self.update not in _UPDATES:
            raise ValueError(f"Broyden(update=...) must be one of {_UPDATES}, got {self.update!r}.")
        if not (isinstance(self.max_backtracks, int) and self.max_backtracks >= 0):
            raise ValueError(f"Broyden(max_backtracks=...) must be an integer >= 0, got {self.max_backtracks!r}.")

    @property
    def supports_unrolling(self) -> bool:  # type: ignore[override]  # the backtracking loop is a lax.while_loop
        return not self.line_search

    shares_inverse = True

    def inverse_transpose_product(self, state, v):
        """:math:`H^\\top v` with the low-rank factors of the forward solve (:func:`implicit_jax.quasi_newton.rmatvec`)."""
        return jax.vmap(qn.rmatvec)(state.inverse, v)

    def adjoint_refinement(self, state):
        """Broyden without line search, warm-started at :math:`H^\\top \\approx (J^\\top - I)^{-1}` (the transposed factors)."""
        return dataclasses.replace(self, line_search=False), Broyden.warm_start(
            jax.vmap(qn.transpose)(state.inverse), state.steps
        )

    def init(self, z, fz):
        batch, n = z.shape
        inverse = jax.vmap(lambda _: qn.broyden_init(n, self.memory, z.dtype))(jnp.arange(batch))
        return BroydenState(inverse, jnp.zeros((batch,), jnp.int32), -(fz - z))

    @staticmethod
    def warm_start(inverse: qn.LowRankInverse, steps: jax.Array):
        """An ``init`` for :func:`iterate` that starts from a given (batched) inverse estimate."""
        return lambda z, fz: BroydenState(inverse, steps, jax.vmap(qn.matvec)(inverse, fz - z))

    def step(self, fn, z, fz, state, active):
        # Two low-rank products per step: H r_new with the old H (which also gives H y), and
        # H^T s inside the good update; the next direction then costs one pair (refresh_product).
        r = fz - z
        direction = -state.h_residual
        z_new = z + direction
        fz_new = fn(z_new)
        nfev = jnp.ones((), jnp.int32)
        if self.line_search:
            z_new, fz_new, nfev = self._backtrack(fn, z, r, direction, z_new, fz_new, state.steps)
        r_new = fz_new - z_new
        h_r_new = jax.vmap(qn.matvec)(state.inverse, r_new)
        update = qn.BROYDEN_UPDATES[self.update]
        inverse = jax.vmap(update)(state.inverse, z_new - z, r_new - r, active, h_r_new - state.h_residual)
        h_r_new = jax.vmap(qn.refresh_product)(state.inverse, inverse, r_new, h_r_new)
        h_residual = jnp.where(active[:, None], h_r_new, state.h_residual)
        return z_new, fz_new, BroydenState(inverse, state.steps + active.astype(jnp.int32), h_residual), nfev

    def _backtrack(self, fn, z, r, direction, z_try, fz_try, steps):
        norm0 = row_norm(r)
        allowance = self.nonmonotone / jnp.square(steps + 1.0).astype(z.dtype)

        def accepted(alpha, z_t, fz_t):
            return row_norm(fz_t - z_t) <= (1.0 + allowance - self.sufficient_decrease * alpha) * norm0

        def cond(carry):
            alpha, z_t, fz_t, tries = carry
            return (tries < self.max_backtracks) & ~jnp.all(accepted(alpha, z_t, fz_t))

        def body(carry):
            alpha, z_t, fz_t, tries = carry
            alpha = jnp.where(accepted(alpha, z_t, fz_t), alpha, 0.5 * alpha)
            z_t = z + alpha[:, None] * direction
            return alpha, z_t, fn(z_t), tries + 1

        alpha0 = jnp.ones(z.shape[:1], z.dtype)
        _, z_t, fz_t, tries = lax.while_loop(cond, body, (alpha0, z_try, fz_try, jnp.zeros((), jnp.int32)))
        return z_t, fz_t, 1 + tries
