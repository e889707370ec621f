r"""L-BFGS for the inner problems of :func:`implicit_jax.argmin`.

Each step takes the quasi-Newton direction :math:`d = -H \nabla g(w)`, with :math:`H`
the two-loop-recursion inverse-Hessian estimate of the last ``memory`` curvature pairs
(Nocedal & Wright, *Numerical Optimization*, Alg. 7.4 and 7.5;
:func:`implicit_jax.quasi_newton.lbfgs_inverse_hvp`), and a line search on the weak Wolfe
conditions, or Hager and Zhang's approximate Wolfe conditions where float32 rounding
hides the decrease (:func:`implicit_jax.solvers.minimizers.linesearch.wolfe_line_search`). The search
starts from :math:`\alpha = 1`, or from :math:`\min(1, 1/\|\nabla g\|)` at the first step,
when :math:`H = I`. Its curvature condition makes :math:`s^\top y > 0` for every accepted step;
a pair is stored only when that holds, so :math:`H` stays positive definite. The final memory is the
inverse-Hessian estimate that SHINE (Ramzi et al., ICLR 2022, Sec. 3) reuses in the
backward pass.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax.numpy as jnp

from implicit_jax import quasi_newton as qn
from implicit_jax.solvers.minimizers.base import AbstractMinimizer
from implicit_jax.solvers.minimizers.linesearch import wolfe_line_search


class LBFGSState(NamedTuple):
    memory: qn.LBFGSMemory


@dataclasses.dataclass(frozen=True)
class LBFGS(AbstractMinimizer):
    """Limited-memory BFGS with a (weak / approximate) Wolfe line search.

    Attributes:
      memory: number of curvature pairs kept (ring buffer). The SHINE paper's HO code used
        30 (60 with OPA, whose extra pairs share the buffer).
      max_linesearch: line-search trials (value-and-gradient calls) per step.
      c1: sufficient-decrease constant of the Wolfe conditions.
      c2: curvature constant of the Wolfe conditions, ``c1 < c2 < 1`` (0.9 is the usual
        choice for quasi-Newton methods).
      approx_eps: relative value slack of the approximate Wolfe test (Hager & Zhang's 1e-6).
    """

    memory: int = 30
    max_linesearch: int = 20
    c1: float = 1e-4
    c2: float = 0.9
    approx_eps: float = 1e-6

    def __post_init__(self):
        if not (isinstance(self.memory, int) and self.memory >= 1):
            raise ValueError(f"LBFGS(memory=...) must be an integer >= 1, got {self.memory!r}.")
        if not (isinstance(self.max_linesearch, int) and self.max_linesearch >= 1):
            raise ValueError(f"LBFGS(max_linesearch=...) must be an integer >= 1, got {self.max_linesearch!r}.")
        if not 0 < self.c1 < 1:
            raise ValueError(f"LBFGS(c1=...) must lie in (0, 1), got {self.c1!r}.")
        if not self.c1 < self.c2 < 1:
            raise ValueError(f"LBFGS(c2=...) must lie in (c1, 1) = ({self.c1!r}, 1), got {self.c2!r}.")
        if not self.approx_eps >= 0:
            raise ValueError(f"LBFGS(approx_eps=...) must be >= 0, got {self.approx_eps!r}.")

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
        trial, _, evals = wolfe_line_search(
            value_and_grad,
            w,
            value,
            grad,
            direction,
            slope,
            alpha0,
            c1=self.c1,
            c2=self.c2,
            approx_eps=self.approx_eps,
            max_trials=self.max_linesearch,
            unrolled=unrolled,
        )
        memory = qn.lbfgs_update(memory, trial.w - w, trial.grad - grad)
        return trial.w, trial.value, trial.grad, LBFGSState(memory), evals
