r"""Any Optax optimizer as an inner minimiser of :func:`implicit_jax.argmin`.

Runs ``optimizer`` on :math:`g(\cdot, \lambda)` (at most ``max_steps`` updates, stopping
early once the gradient tolerance is met). Every update receives optax's extra arguments
(``value``, ``grad`` and ``value_fn``, the ``GradientTransformationExtraArgs`` protocol), so
optimizers with a line search, such as ``optax.lbfgs()`` or a chain ending in
``optax.scale_by_zoom_linesearch``, work as well as ``optax.adam``; plain transformations
ignore them (``optax.with_extra_args_support``).

Along the way it records the curvature pairs :math:`(w_{k+1} - w_k, \nabla g_{k+1} - \nabla g_k)`
in its own L-BFGS memory, at the cost of a few vector operations, so that SHINE can reuse an
inverse-Hessian estimate whatever the optimizer (optax's L-BFGS state is not read: its layout
is private to optax). A line search's own evaluations of :math:`g` are counted in
``MinimizeInfo.num_grad_evals`` when the optimizer's state reports them
(``num_linesearch_steps``). ``backward="unroll"`` cannot differentiate through a line search,
whose ``lax.while_loop`` has no reverse-mode derivative.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax.numpy as jnp
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
            raise TypeError(
                f"OptaxMinimizer(optimizer=...) takes an optax.GradientTransformation such as optax.adam(1e-2), got {self.optimizer!r}."
            )
        if not (isinstance(self.memory, int) and self.memory >= 1):
            raise ValueError(f"OptaxMinimizer(memory=...) must be an integer >= 1, got {self.memory!r}.")

    @property
    def _transformation(self) -> optax.GradientTransformationExtraArgs:
        return optax.with_extra_args_support(self.optimizer)

    def init(self, w, value, grad):
        return OptaxState(self._transformation.init(w), qn.lbfgs_init(w.size, self.memory, w.dtype))

    def step(self, value_and_grad, w, value, grad, state, *, unrolled=False):
        def value_fn(v):
            return value_and_grad(v)[0]  # the unused gradient is dead code to XLA

        updates, opt_state = self._transformation.update(grad, state.opt_state, w, value=value, grad=grad, value_fn=value_fn)
        w_new = optax.apply_updates(w, updates)
        v_new, g_new = value_and_grad(w_new)
        line_search = optax.tree_utils.tree_get(opt_state, "num_linesearch_steps", 0)
        evals = 1 + jnp.asarray(line_search, jnp.int32)
        return w_new, v_new, g_new, OptaxState(opt_state, qn.lbfgs_update(state.memory, w_new - w, g_new - grad)), evals
