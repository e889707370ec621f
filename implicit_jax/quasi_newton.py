r"""Low-rank quasi-Newton inverse estimates as plain data plus pure functions.

Nothing here forms an ``n x n`` matrix: every estimate is a set of factors and
every product costs ``O(memory * n)``. Functions act on one system (vectors of
shape ``(n,)``); solvers ``jax.vmap`` them over samples.

Broyden (root finding, used by :func:`implicit_jax.solvers.broyden` and SHINE)
    Approximates :math:`H \approx (\partial r / \partial z)^{-1}` for the residual
    :math:`r(z) = f(z) - z`, so :math:`H \approx (J - I)^{-1}`. It is stored as

    .. math:: H = -I + \sum_{i} u_i v_i^\top

    with at most ``memory`` pairs; when the memory is full the estimate restarts from
    :math:`-I` (each term was built on top of the previous ones, so dropping the oldest
    term alone, as a ring buffer would, leaves an inconsistent estimate that was seen to
    diverge on a tanh layer with :math:`\|W\| = 0.99` where restarting converged). For a step :math:`s = \Delta z` and residual
    change :math:`y = \Delta r`:

    * "good" Broyden (Sherman-Morrison form of Broyden's first method):
      :math:`v = H^\top s`, :math:`u = (s - H y) / (v^\top y)`;
    * "bad" Broyden (Broyden's second method): :math:`v = y`,
      :math:`u = (s - H y) / (y^\top y)`.

    Both satisfy the secant condition :math:`H_{+} y = s`. SHINE (Ramzi et al., ICLR 2022,
    Sec. 3) reuses the final :math:`H` in the backward pass via :func:`rmatvec`.

L-BFGS (minimisation, used by the bi-level ``argmin``)
    Two-loop recursion (Nocedal & Wright, *Numerical Optimization*, Alg. 7.4) on the
    last ``memory`` pairs :math:`(s_i, y_i)`, stored in a ring buffer whose oldest pair
    sits at index ``count mod memory`` once the buffer is full.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from implicit_jax._flat import safe_divide


class LowRankInverse(NamedTuple):
    """:math:`H = -I + \\sum_i u_i v_i^\\top` with ``u, v`` of shape ``(memory, n)``.

    ``count`` is the number of updates held; the next one goes to slot ``count``, and an
    update arriving when all ``memory`` slots are used restarts the estimate from
    :math:`-I` first. Empty slots hold zeros, so they add nothing to any product.
    """

    u: jax.Array
    v: jax.Array
    count: jax.Array


def broyden_init(n: int, memory: int, dtype=jnp.float32) -> LowRankInverse:
    """The estimate :math:`H = -I` (i.e. :math:`J \\approx 0`), with room for ``memory`` updates."""
    zeros = jnp.zeros((memory, n), dtype)
    return LowRankInverse(zeros, zeros, jnp.zeros((), jnp.int32))


def matvec(inverse: LowRankInverse, x: jax.Array) -> jax.Array:
    """:math:`H x = -x + U^\\top (V x)`."""
    return -x + inverse.u.T @ (inverse.v @ x)


def rmatvec(inverse: LowRankInverse, x: jax.Array) -> jax.Array:
    """:math:`H^\\top x = -x + V^\\top (U x)`, the transpose product SHINE needs."""
    return -x + inverse.v.T @ (inverse.u @ x)


def transpose(inverse: LowRankInverse) -> LowRankInverse:
    """:math:`H^\\top` as an estimate of the same form (swap the factors).

    If :math:`H \\approx (J - I)^{-1}` then :math:`H^\\top \\approx (J^\\top - I)^{-1}`, the
    inverse Jacobian of the adjoint residual :math:`u \\mapsto J^\\top u + g - u`.
    """
    return LowRankInverse(inverse.v, inverse.u, inverse.count)


def _make_room(inverse: LowRankInverse) -> LowRankInverse:
    """Restart from :math:`-I` when every slot is used, so the next update is computed against it."""
    full = inverse.count >= inverse.u.shape[0]
    return LowRankInverse(
        jnp.where(full, 0.0, inverse.u).astype(inverse.u.dtype),
        jnp.where(full, 0.0, inverse.v).astype(inverse.v.dtype),
        jnp.where(full, 0, inverse.count),
    )


def _push(inverse: LowRankInverse, u_new: jax.Array, v_new: jax.Array, accept: jax.Array) -> LowRankInverse:
    memory = inverse.u.shape[0]
    slot = jax.nn.one_hot(inverse.count, memory, dtype=inverse.u.dtype)[:, None] * accept
    return LowRankInverse(
        inverse.u * (1 - slot) + slot * u_new,
        inverse.v * (1 - slot) + slot * v_new,
        inverse.count + accept.astype(jnp.int32),
    )


def good_broyden_update(inverse: LowRankInverse, s: jax.Array, y: jax.Array) -> LowRankInverse:
    """Broyden's first ("good") method on the inverse; skipped when :math:`|v^\\top y| \\approx 0`."""
    inverse = _make_room(inverse)
    v_new = rmatvec(inverse, s)
    u_new, ok = safe_divide(s - matvec(inverse, y), jnp.vdot(v_new, y))
    return _push(inverse, u_new, v_new, ok & jnp.all(jnp.isfinite(u_new)))


def bad_broyden_update(inverse: LowRankInverse, s: jax.Array, y: jax.Array) -> LowRankInverse:
    """Broyden's second ("bad") method on the inverse; skipped when :math:`y \\approx 0`."""
    inverse = _make_room(inverse)
    u_new, ok = safe_divide(s - matvec(inverse, y), jnp.vdot(y, y))
    return _push(inverse, u_new, y, ok & jnp.all(jnp.isfinite(u_new)))


BROYDEN_UPDATES = {"good": good_broyden_update, "bad": bad_broyden_update}


class LBFGSMemory(NamedTuple):
    """The last ``memory`` curvature pairs :math:`(s_i, y_i)` with :math:`\\rho_i = 1 / s_i^\\top y_i`."""

    s: jax.Array
    y: jax.Array
    rho: jax.Array
    count: jax.Array


def lbfgs_init(n: int, memory: int, dtype=jnp.float32) -> LBFGSMemory:
    zeros = jnp.zeros((memory, n), dtype)
    return LBFGSMemory(zeros, zeros, jnp.zeros((memory,), dtype), jnp.zeros((), jnp.int32))


def lbfgs_update(state: LBFGSMemory, s: jax.Array, y: jax.Array) -> LBFGSMemory:
    """Store a pair when the curvature condition :math:`s^\\top y > 0` holds (else keep the memory)."""
    memory = state.s.shape[0]
    curvature = jnp.vdot(s, y)
    rho, ok = safe_divide(jnp.ones_like(curvature), curvature)
    accept = ok & (curvature > 0)
    slot = jax.nn.one_hot(state.count % memory, memory, dtype=state.s.dtype) * accept
    return LBFGSMemory(
        state.s * (1 - slot[:, None]) + slot[:, None] * s,
        state.y * (1 - slot[:, None]) + slot[:, None] * y,
        state.rho * (1 - slot) + slot * rho,
        state.count + accept.astype(jnp.int32),
    )


def lbfgs_inverse_hvp(state: LBFGSMemory, g: jax.Array) -> jax.Array:
    """Two-loop recursion: :math:`H g` with :math:`H` the L-BFGS inverse-Hessian estimate.

    The initial matrix is :math:`\\gamma I` with :math:`\\gamma = s^\\top y / y^\\top y` of the
    newest pair (identity when the memory is empty). Pairs are visited newest to oldest
    in the first loop and oldest to newest in the second, following the ring order.
    """
    memory = state.s.shape[0]
    stored = jnp.minimum(state.count, memory)

    def newest_first(i):  # i-th newest pair's slot
        return (state.count - 1 - i) % memory

    def first_loop(i, carry):
        q, alphas = carry
        idx = newest_first(i)
        live = i < stored
        alpha = jnp.where(live, state.rho[idx] * jnp.vdot(state.s[idx], q), 0.0)
        return q - alpha * state.y[idx], alphas.at[idx].set(alpha)

    q, alphas = lax.fori_loop(0, memory, first_loop, (g, jnp.zeros((memory,), g.dtype)))
    newest = newest_first(0)
    gamma, ok = safe_divide(jnp.vdot(state.s[newest], state.y[newest]), jnp.vdot(state.y[newest], state.y[newest]))
    r = jnp.where(ok & (stored > 0), gamma, 1.0) * q

    def second_loop(j, r):
        i = memory - 1 - j  # oldest live pair first
        idx = newest_first(i)
        live = i < stored
        beta = state.rho[idx] * jnp.vdot(state.y[idx], r)
        return r + jnp.where(live, alphas[idx] - beta, 0.0) * state.s[idx]

    return lax.fori_loop(0, memory, second_loop, r)
