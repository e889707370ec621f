"""Small reference problems with known answers, for tests, demos and benchmarks.

* :func:`linear_problem`: :math:`z = W z + U x + b`, whose fixed point and gradients
  have closed forms (:func:`linear_closed_form`);
* :func:`tanh_layer`: the DEQ layer :math:`z = \\tanh(z W^\\top + x U^\\top)` with
  :math:`\\|W\\|_2` set exactly, and :func:`dense_implicit_grad`, its exact gradient
  by dense Jacobians (small sizes only);
* :func:`tree_cosine`: the cosine between two gradient pytrees.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def contraction(key, d: int, norm: float, dtype=jnp.float64, orthogonal: bool = False) -> jax.Array:
    """A random ``d x d`` matrix with spectral norm ``norm``.

    Gaussian by default (its other singular values spread down to 0, so iterations
    converge fast); with ``orthogonal=True`` every singular value equals ``norm``, the
    slowest-converging contraction of that norm.
    """
    w = jax.random.normal(key, (d, d), dtype)
    if orthogonal:
        return (norm * jnp.linalg.qr(w)[0]).astype(dtype)
    return (norm * w / jnp.linalg.norm(w, 2)).astype(dtype)


def linear_problem(d: int = 6, seed: int = 0, norm: float = 0.7, dtype=jnp.float64):
    """``z = W z + U x + b`` with ``||W|| = norm`` and a loss ``sum(c * z)``; returns ``f, params, x, c``."""
    k = jax.random.split(jax.random.PRNGKey(seed), 5)
    params = {
        "W": contraction(k[0], d, norm, dtype),
        "U": jax.random.normal(k[1], (d, d), dtype),
        "b": jax.random.normal(k[2], (d,), dtype),
    }
    x = jax.random.normal(k[3], (d,), dtype)
    c = jax.random.normal(k[4], (d,), dtype)

    def f(p, z, x):
        return p["W"] @ z + p["U"] @ x + p["b"]

    return f, params, x, c


def linear_closed_form(params, x, c, u):
    """Gradients of ``sum(c * z*)`` for the linear problem given an adjoint ``u``; also returns ``z*``."""
    d = x.shape[0]
    z = jnp.linalg.solve(jnp.eye(d) - params["W"], params["U"] @ x + params["b"])
    grads = {"W": jnp.outer(u, z), "U": jnp.outer(u, x), "b": u}
    return z, grads, params["U"].T @ u


def tanh_layer(
    d: int = 32,
    batch: int = 4,
    seed: int = 0,
    norm: float = 0.9,
    x_scale: float = 0.3,
    dtype=jnp.float64,
    orthogonal: bool = False,
):
    """Batched ``z = tanh(z W^T + x U^T)``, ``||W|| = norm``; returns ``f, params, x, c`` (loss ``sum(c * z)``)."""
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    params = {
        "W": contraction(k[0], d, norm, dtype, orthogonal),
        "U": (jax.random.normal(k[1], (d, d), dtype) / np.sqrt(d)).astype(dtype),
    }
    x = x_scale * jax.random.normal(k[2], (batch, d), dtype)
    c = jax.random.normal(k[3], (batch, d), dtype)

    def f(p, z, x):
        return jnp.tanh(z @ p["W"].T + x @ p["U"].T)

    return f, params, x, c


def dense_implicit_grad(f, params, x, z_star, c):
    """Exact gradient of ``sum(c * z*)`` by dense Jacobians: ``c^T (I - J)^{-1} df/dtheta``."""
    n = z_star.size
    jac_z = jax.jacobian(lambda z: f(params, z.reshape(z_star.shape), x).ravel())(z_star.ravel())
    u = jnp.linalg.solve((jnp.eye(n) - jac_z).T, c.ravel()).reshape(z_star.shape)
    _, vjp = jax.vjp(lambda p, xx: f(p, z_star, xx), params, x)
    return vjp(u)


def tree_ravel(tree) -> jax.Array:
    return jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree_util.tree_leaves(tree)])


def tree_cosine(a, b) -> float:
    """Cosine of the angle between two pytrees of arrays, as flat vectors."""
    a, b = tree_ravel(a), tree_ravel(b)
    return float(a @ b / (jnp.linalg.norm(a) * jnp.linalg.norm(b)))
