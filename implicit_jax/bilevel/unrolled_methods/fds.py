r"""FDS: forward-mode hypergradients with hyperparameters shared over contiguous steps.

Micaelli & Storkey, "Gradient-based Hyperparameter Optimization Over Long Horizons"
(NeurIPS 2021). Forward-mode differentiation propagates the tangents of the training
state with respect to every hyperparameter alongside training. For SGD with momentum,
:math:`v_{t+1} = \mu v_t + \nabla\ell(w_t) + \lambda w_t`, :math:`w_{t+1} = w_t - \eta v_{t+1}`, the tangents
:math:`Z_t = \partial w_t / \partial\alpha` and :math:`C_t = \partial v_t / \partial\alpha` follow

.. math:: C_{t+1} = \mu C_t + (\nabla^2\ell(w_t) + \lambda I) Z_t + \partial_\alpha\mu\, v_t + \partial_\alpha\lambda\, w_t,
          \qquad Z_{t+1} = Z_t - \eta C_{t+1} - \partial_\alpha\eta\, v_{t+1},

i.e. one Hessian-vector product per hyperparameter per step, and the hypergradient is
:math:`\nabla_{w} \mathcal{L}(w_T)^\top Z_T + \partial_\alpha \mathcal{L}`. Here JAX's ``jvp`` through the
user's ``step`` produces exactly these recursions for any step, one tangent per basis
direction of the flat hyperparameter vector. Memory is :math:`O(|s|\cdot N)`, independent
of the number of steps :math:`T`; the result is the exact gradient of the unrolled
objective (no truncation, no noise).

*Sharing* keeps :math:`N` small on long horizons: a schedule of :math:`K` values for
:math:`T` steps in which step :math:`t` uses value :math:`\lfloor K t / T \rfloor`
(:func:`shared_schedule`); the gradient is then the one with respect to the :math:`K`
shared values, the sum of the per-step gradients over each block.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from implicit_jax.bilevel.unrolled_methods.base import AbstractUnrolledMethod, directional_derivatives


def shared_index(t: jax.Array, num_values: int, num_steps: int) -> jax.Array:
    """Which of ``num_values`` shared values step ``t`` of ``num_steps`` uses: :math:`\\lfloor K t / T \\rfloor`."""
    return jnp.minimum((num_values * jnp.asarray(t, jnp.int32)) // num_steps, num_values - 1)


def shared_schedule(values, t: jax.Array, num_steps: int):
    """The value of a shared schedule at step ``t``.

    ``values`` is an array (or a pytree of arrays) whose leading axis holds the :math:`K`
    values; contiguous blocks of about :math:`T/K` steps share one value::

        lr = shared_schedule(hparams["log_lr"], t, num_steps)  # shape (K,) -> scalar
    """

    def pick(leaf):
        leaf = jnp.asarray(leaf)
        return leaf[shared_index(t, leaf.shape[0], num_steps)]

    return jax.tree_util.tree_map(pick, values)


@dataclasses.dataclass(frozen=True)
class FDS(AbstractUnrolledMethod):
    """Forward-mode hypergradient, exact for the unrolled objective, memory independent of ``num_steps``.

    Attributes:
      chunk_size: how many hyperparameters' tangents travel together (``None``: all
        :math:`N` at once, memory :math:`O(|s| N)`; smaller trades time for memory).
    """

    chunk_size: int | None = None

    name = "fds"

    def __post_init__(self):
        if self.chunk_size is not None and not (isinstance(self.chunk_size, int) and self.chunk_size >= 1):
            raise ValueError(f"FDS(chunk_size=...) must be None or an integer >= 1, got {self.chunk_size!r}.")

    def value_and_grad(self, problem, h_flat, state0, key):
        basis = jnp.eye(h_flat.size, dtype=h_flat.dtype)
        value, slopes = directional_derivatives(problem, h_flat, state0, basis, self.chunk_size)
        return value, slopes
