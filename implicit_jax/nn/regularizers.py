r"""Jacobian regularisation of a DEQ cell (Bai, Koltun & Kolter, ICML 2021).

The penalty is the Frobenius norm of the cell's Jacobian at the equilibrium, per sample
and divided by the state size, estimated with Hutchinson's trick (Bai et al. 2021, eq. 5):

.. math:: \frac{1}{d}\|J_f(z^\star)\|_F^2 = \frac{1}{d}\,\mathbb{E}_{\epsilon\sim\mathcal N(0,I)}\|\epsilon^\top J_f(z^\star)\|_2^2,

one vector-Jacobian product per probe. Added to the loss with a small weight
(``jac_reg_weight``), it keeps the cell's Lipschitz constant — and so the number of
solver steps — from growing during training. Gradients flow through the VJP to the
cell's parameters (a second-order term, as in the paper).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def jacobian_frobenius_penalty(
    fn: Callable[[jax.Array], jax.Array], z: jax.Array, key: jax.Array, num_probes: int = 1
) -> jax.Array:
    """Hutchinson estimate of :math:`\\|\\partial f/\\partial z\\|_F^2 / d`, averaged over the batch.

    Args:
      fn: the cell at fixed parameters and input, ``z -> f(z)``; the leading axis of ``z``
        indexes samples (the map must act on each sample independently).
      z: the equilibrium, shape ``(batch, ...)``.
      key: PRNG key for the Gaussian probes.
      num_probes: probes per sample (the estimate's variance falls as ``1/num_probes``).
    """
    if num_probes < 1:
        raise ValueError(f"num_probes must be >= 1, got {num_probes}.")
    _, pullback = jax.vjp(fn, z)
    probes = jax.random.normal(key, (num_probes,) + z.shape, z.dtype)
    products = jax.vmap(lambda e: pullback(e)[0])(probes)
    per_sample = jnp.sum(products.reshape(num_probes, z.shape[0], -1) ** 2, axis=-1)
    return jnp.mean(per_sample) / (z.size // z.shape[0])
