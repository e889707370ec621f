"""Helpers shared by the argmin-estimator tests: ridge regression (tests/bilevel/ridge.py) and its closed forms."""

import jax
import jax.numpy as jnp

import implicit_jax as ij
from tests.bilevel import ridge

LAM = jnp.asarray(-1.0, jnp.float64)
W0 = jnp.zeros(ridge.D, jnp.float64)


def hypergrad(backward, lam=LAM, **kwargs):
    kwargs.setdefault("tol", 1e-10)
    return jax.grad(lambda l: ridge.outer(ij.argmin(ridge.inner, l, W0, backward=backward, outer_loss=ridge.outer, **kwargs)))(
        lam
    )


def backward_info(backward, **kwargs):
    def loss(l, tap):
        return ridge.outer(ij.argmin(ridge.inner, l, W0, backward=backward, tol=1e-10, backward_tap=tap, **kwargs))

    return jax.grad(loss, argnums=1)(LAM, ij.backward_tap(jnp.float64))


def rel_error(estimate, lam=LAM):
    exact = ridge.exact_hypergradient(lam)
    return float(jnp.linalg.norm(estimate - exact) / jnp.linalg.norm(exact))
