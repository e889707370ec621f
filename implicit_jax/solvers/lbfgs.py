r"""L-BFGS for the inner problems of :func:`implicit_jax.argmin`.

Each step takes the quasi-Newton direction :math:`d = -H \nabla g(w)`, with :math:`H`
the two-loop-recursion inverse-Hessian estimate of the last ``memory`` curvature pairs
(Nocedal & Wright, *Numerical Optimization*, Alg. 7.4 and 7.5;
:func:`implicit_jax.quasi_newton.lbfgs_inverse_hvp`), and a backtracking line search on the
Armijo condition

.. math:: g(w + \alpha d) \le g(w) + c_1 \alpha\, d^\top \nabla g(w),

starting from :math:`\alpha = 1` (from :math:`\min(1, 1/\|\nabla g\|)` at the first step,
when :math:`H = I`) and multiplying by ``shrink`` on rejection. A pair is stored only
when :math:`s^\top y > 0`, so :math:`H` stays positive definite. The final memory is the
inverse-Hessian estimate that SHINE (Ramzi et al., ICLR 2022, Sec. 3) reuses in the
backward pass.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from implicit_jax import quasi_newton as qn
from implicit_jax.solvers.minimize import AbstractMinimizer


class LBFGSState(NamedTuple):
    memory: qn.LBFGSMemory


def backtracking(value_and_grad, w, value, grad, direction, slope, alpha0, *, c1, shrink, max_trials, unrolled):
    """Armijo backtracking along ``direction``; returns ``(w_new, value, grad, num_evals)``.

    If no trial is accepted the last (smallest) one is taken. ``unrolled`` runs a fixed
    number of masked trials in ``lax.scan`` (differentiable in reverse mode).
    """

    def trial(carry):
        alpha, _, _, _, evals = carry
        w_new = w + alpha * direction
        v_new, g_new = value_and_grad(w_new)
        ok = jnp.isfinite(v_new) & (v_new <= value + c1 * alpha * slope)
        return jnp.where(ok, alpha, alpha * shrink), (w_new, v_new, g_new), ok, alpha, evals + 1

    def pending(carry):
        _, _, ok, _, evals = carry
        return ~ok & (evals < max_trials)

    start = (alpha0, (w, value, grad), jnp.zeros((), bool), alpha0, jnp.zeros((), jnp.int32))
    if unrolled:
        carry, _ = lax.scan(lambda c, _: (lax.cond(pending(c), trial, lambda c: c, c), None), start, None, length=max_trials)
    else:
        carry = lax.while_loop(pending, trial, start)
    _, (w_new, v_new, g_new), _, _, evals = carry
    return w_new, v_new, g_new, evals


@dataclasses.dataclass(frozen=True)
class LBFGS(AbstractMinimizer):
    """Limited-memory BFGS with an Armijo backtracking line search.

    Attributes:
      memory: number of curvature pairs kept (ring buffer). The SHINE paper's HO code used
        30 (60 with OPA, whose extra pairs share the buffer).
      max_linesearch: line-search trials per step.
      c1: sufficient-decrease constant of the Armijo test.
      shrink: step multiplier after a rejected trial.
    """

    memory: int = 30
    max_linesearch: int = 20
    c1: float = 1e-4
    shrink: float = 0.5

    def __post_init__(self):
        if not (isinstance(self.memory, int) and self.memory >= 1):
            raise ValueError(f"LBFGS(memory=...) must be an integer >= 1, got {self.memory!r}.")
        if not (isinstance(self.max_linesearch, int) and self.max_linesearch >= 1):
            raise ValueError(f"LBFGS(max_linesearch=...) must be an integer >= 1, got {self.max_linesearch!r}.")
        if not 0 < self.c1 < 1:
            raise ValueError(f"LBFGS(c1=...) must lie in (0, 1), got {self.c1!r}.")
        if not 0 < self.shrink < 1:
            raise ValueError(f"LBFGS(shrink=...) must lie in (0, 1), got {self.shrink!r}.")

    def init(self, w, value, grad):
        return LBFGSState(qn.lbfgs_init(w.size, self.memory, w.dtype))

    def step(self, value_and_grad, w, value, grad, state, *, unrolled=False):
        memory = state.memory
        direction = -qn.lbfgs_inverse_hvp(memory, grad)
        slope = jnp.vdot(direction, grad)
        descent = slope < 0
        direction = jnp.where(descent, direction, -grad)  # H lost definiteness numerically: steepest descent
        slope = jnp.where(descent, slope, -jnp.vdot(grad, grad))
        first = memory.count == 0
        alpha0 = jnp.where(first, jnp.minimum(1.0, 1.0 / (jnp.linalg.norm(grad) + jnp.finfo(w.dtype).tiny)), 1.0).astype(w.dtype)
        w_new, v_new, g_new, evals = backtracking(
            value_and_grad, w, value, grad, direction, slope, alpha0,
            c1=self.c1, shrink=self.shrink, max_trials=self.max_linesearch, unrolled=unrolled,
        )
        return w_new, v_new, g_new, LBFGSState(qn.lbfgs_update(memory, w_new - w, g_new - grad)), evals
