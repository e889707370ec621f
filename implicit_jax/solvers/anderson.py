r"""Anderson acceleration (type II), one least-squares problem per sample.

With the last ``m`` iterates :math:`x_i` and evaluations :math:`f_i = f(x_i)`,
residuals :math:`g_i = f_i - x_i`, the mixing weights solve

.. math:: \min_\alpha \Big\| \sum_i \alpha_i g_i \Big\|^2 + \rho \|\alpha\|^2
          \quad \text{s.t.} \quad \sum_i \alpha_i = 1,

i.e. :math:`\alpha \propto (G G^\top + \rho I)^{-1} \mathbf 1`, and the next iterate is

.. math:: x_{+} = \beta \sum_i \alpha_i f_i + (1 - \beta) \sum_i \alpha_i x_i .

(Anderson 1965; Walker & Ni 2011, Alg. AA.) The Tikhonov term :math:`\rho` is
``regularization`` times the smallest squared residual norm in memory, so it is
scale-free and never swamps the newest (smallest) residual. One
evaluation of ``f`` per step; ``O(m^2 n)`` extra work per sample.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from implicit_jax.solvers.base import AbstractFixedPointSolver


class AndersonState(NamedTuple):
    xs: jax.Array  # (batch, m, n) past iterates
    fs: jax.Array  # (batch, m, n) their evaluations
    count: jax.Array  # (batch,) number of pairs pushed so far


def _push(state: AndersonState, x: jax.Array, fx: jax.Array) -> AndersonState:
    memory = state.xs.shape[1]
    slot = jax.nn.one_hot(state.count % memory, memory, dtype=x.dtype)[:, :, None]
    return AndersonState(
        state.xs * (1 - slot) + slot * x[:, None, :],
        state.fs * (1 - slot) + slot * fx[:, None, :],
        state.count + 1,
    )


def mixing_weights(residuals: jax.Array, valid: jax.Array, regularization: float) -> jax.Array:
    """Weights :math:`\\alpha` (summing to one over valid slots) for one sample's ``(m, n)`` residuals."""
    gram = residuals @ residuals.T
    scale = jnp.min(jnp.where(valid, jnp.diag(gram), jnp.inf))
    both = valid[:, None] & valid[None, :]
    eye = jnp.eye(valid.shape[0], dtype=gram.dtype)
    system = jnp.where(both, gram, 0.0) + eye * jnp.where(valid, regularization * scale + jnp.finfo(gram.dtype).tiny, 1.0)
    w = jnp.linalg.solve(system, valid.astype(gram.dtype))
    return w / jnp.sum(w)


@dataclasses.dataclass(frozen=True)
class Anderson(AbstractFixedPointSolver):
    """Anderson acceleration.

    Attributes:
      memory: number of past iterates mixed (``m``).
      mixing: :math:`\\beta \\in (0, 1]`; 1 mixes evaluations only.
      regularization: relative Tikhonov weight :math:`\\rho` of the least squares.
    """

    memory: int = 5
    mixing: float = 1.0
    regularization: float = 1e-8

    def __post_init__(self):
        if not (isinstance(self.memory, int) and self.memory >= 1):
            raise ValueError(f"Anderson(memory=...) must be an integer >= 1, got {self.memory!r}.")
        if not 0.0 < self.mixing <= 1.0:
            raise ValueError(f"Anderson(mixing=...) must lie in (0, 1], got {self.mixing!r}.")
        if not self.regularization >= 0.0:
            raise ValueError(f"Anderson(regularization=...) must be >= 0, got {self.regularization!r}.")

    def init(self, z, fz):
        batch, n = z.shape
        empty = jnp.zeros((batch, self.memory, n), z.dtype)
        return _push(AndersonState(empty, empty, jnp.zeros((batch,), jnp.int32)), z, fz)

    def step(self, fn, z, fz, state):
        valid = jnp.arange(self.memory)[None, :] < state.count[:, None]
        alpha = jax.vmap(mixing_weights, in_axes=(0, 0, None))(state.fs - state.xs, valid, self.regularization)
        mixed_f = jnp.einsum("bm,bmn->bn", alpha, state.fs)
        z_new = mixed_f if self.mixing == 1.0 else self.mixing * mixed_f + (1 - self.mixing) * jnp.einsum("bm,bmn->bn", alpha, state.xs)
        fz_new = fn(z_new)
        return z_new, fz_new, _push(state, z_new, fz_new), 1
