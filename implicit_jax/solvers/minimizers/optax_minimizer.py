r"""Any Optax optimizer as an inner minimiser of :func:`implicit_jax.argmin`.

Runs ``optimizer`` on :math:`g(\cdot, \lambda)` (at most ``max_steps`` updates, stopping
early once the gradient tolerance is met). Along the way it records the curvature pairs
:math:`(w_{k+1} - w_k, \nabla g_{k+1} - \nabla g_k)` in an L-BFGS memory, at the cost of
a few vector operations, so that SHINE can reuse an inverse-Hessian estimate even when
the inner solver is not quasi-Newton.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import optax

from implicit_jax import quasi_newton as qn
from implicit_jax.solvers.minimizers.base import AbstractMinimizer


class OptaxState(NamedTuple):
    opt_state: Any
    memory: qn.LBFGSMemory


@dataclasses.dataclass(frozen=True)
class OptaxMinimizer(AbstractMinimizer):
    """Attributes:
      optimizer: an ``optax.GradientTransformation`` (e.g. ``optax.sgd(0.1, momentum=0.9)``).
      memory: secant pairs recorded for SHINE.
    """

    optimizer: optax.GradientTransformation
    memory: int = 30

    def __post_init__(self):
        if not isinstance(self.optimizer, optax.GradientTransformation):
            raise TypeError(f"OptaxMinimizer(optimizer=...) takes an optax.GradientTransformation such as optax.adam(1e-2), got {self.optimizer!r}.")
        if not (isinstance(self.memory, int) and self.memory >= 1):
            raise ValueError(f"OptaxMinimizer(memory=...) must be an integer >= 1, got {self.memory!r}.")

    def init(self, w, value, grad):
        return OptaxState(self.optimizer.init(w), qn.lbfgs_init(w.size, self.memory, w.dtype))

    def step(self, value_and_grad, w, value, grad, state, *, unrolled=False):
        updates, opt_state = self.optimizer.update(grad, state.opt_state, w)
        w_new = optax.apply_updates(w, updates)
        v_new, g_new = value_and_grad(w_new)
        return w_new, v_new, g_new, OptaxState(opt_state, qn.lbfgs_update(state.memory, w_new - w, g_new - grad)), 1
