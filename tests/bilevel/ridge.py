"""Ridge regression: the inner problem whose solution and hypergradient have closed forms."""

import jax
import jax.numpy as jnp
import numpy as np

N, D = 40, 6
_rng = np.random.default_rng(0)
X = jnp.asarray(_rng.normal(size=(N, D)))
Y = jnp.asarray(X @ _rng.normal(size=D) + 0.5 * _rng.normal(size=N))
X_VAL = jnp.asarray(_rng.normal(size=(N, D)))
Y_VAL = jnp.asarray(X_VAL @ _rng.normal(size=D))


def inner(w, log_lam):
    """g(w, lambda) = |Xw - y|^2 / 2n + sum_j exp(log_lam_j) w_j^2 / 2 (scalar or per-feature)."""
    return 0.5 * jnp.mean((X @ w - Y) ** 2) + 0.5 * jnp.sum(jnp.exp(log_lam) * w**2)


def outer(w):
    return 0.5 * jnp.mean((X_VAL @ w - Y_VAL) ** 2)


def hessian(log_lam):
    return X.T @ X / N + jnp.diag(jnp.broadcast_to(jnp.exp(log_lam), (D,)))


def solution(log_lam):
    return jnp.linalg.solve(hessian(log_lam), X.T @ Y / N)


def hypergradient_for(log_lam, u):
    """-(d^2 g / d lambda dw)^T u for the adjoint u."""
    w = solution(log_lam)
    per_feature = -jnp.exp(log_lam) * w * u
    return per_feature if jnp.ndim(log_lam) else jnp.sum(per_feature)


def exact_hypergradient(log_lam):
    return jax.grad(lambda lam: outer(solution(lam)))(log_lam)


def outer_cotangent(log_lam):
    return jax.grad(outer)(solution(log_lam))
