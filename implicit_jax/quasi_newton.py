r"""Low-rank quasi-Newton inverse estimates as plain data plus pure functions.

Nothing here forms an ``n x n`` matrix: every estimate is a set of factors and
every product costs ``O(memory * n)``. Functions act on one system (vectors of
shape ``(n,)``); solvers ``jax.vmap`` them over samples.

Broyden (root finding, used by :func:`implicit_jax.solvers.Broyden` and SHINE)
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

from implicit_jax._flat import accumulation_dtype, safe_divide


class LowRankInverse(NamedTuple):
    """:math:`H = -I + \\sum_i u_i v_i^\\top` with ``u, v`` of shape ``(memory, n)``.

    ``count`` is the number of updates held, in slots ``0 .. count-1``; the next one goes
    to slot ``count``, and an update arriving when all ``memory`` slots are used restarts
    the estimate from :math:`-I` first (``count = 0``). Slots at or past ``count`` are
    ignored by every product, so a restart never has to touch the buffers.
    """

    u: jax.Array
    v: jax.Array
    count: jax.Array  # type: ignore[assignment]  # a field named like tuple.count


def broyden_init(n: int, memory: int, dtype=jnp.float32) -> LowRankInverse:
    """The estimate :math:`H = -I` (i.e. :math:`J \\approx 0`), with room for ``memory`` updates."""
    zeros = jnp.zeros((memory, n), dtype)
    return LowRankInverse(zeros, zeros, jnp.zeros((), jnp.int32))


def _live(inverse: LowRankInverse) -> jax.Array:
    return jnp.arange(inverse.u.shape[0]) < inverse.count


def _vdot(a: jax.Array, b: jax.Array) -> jax.Array:
    """:math:`a^\\top b` accumulated in at least float32 (see :func:`implicit_jax._flat.accumulation_dtype`)."""
    acc = accumulation_dtype(jnp.result_type(a, b))
    return jnp.vdot(a.astype(acc), b.astype(acc))


def _low_rank_product(left: jax.Array, right: jax.Array, live: jax.Array, x: jax.Array) -> jax.Array:
    """:math:`-x + L^\\top (R x)` over the live rows, both products accumulated in at least float32."""
    acc = accumulation_dtype(x.dtype)
    coefficients = jnp.where(live, jnp.matmul(right, x, preferred_element_type=acc), 0.0)
    return (-x.astype(acc) + jnp.matmul(coefficients, left.astype(acc))).astype(x.dtype)


def matvec(inverse: LowRankInverse, x: jax.Array) -> jax.Array:
    """:math:`H x = -x + U^\\top (V x)`."""
    return _low_rank_product(inverse.u, inverse.v, _live(inverse), x)


def rmatvec(inverse: LowRankInverse, x: jax.Array) -> jax.Array:
    """:math:`H^\\top x = -x + V^\\top (U x)`, the transpose product SHINE needs."""
    return _low_rank_product(inverse.v, inverse.u, _live(inverse), x)


def transpose(inverse: LowRankInverse) -> LowRankInverse:
    """:math:`H^\\top` as an estimate of the same form (swap the factors).

    If :math:`H \\approx (J - I)^{-1}` then :math:`H^\\top \\approx (J^\\top - I)^{-1}`, the
    inverse Jacobian of the adjoint residual :math:`u \\mapsto J^\\top u + g - u`.
    """
    return LowRankInverse(inverse.v, inverse.u, inverse.count)


def _make_room(inverse: LowRankInverse) -> LowRankInverse:
    """Restart from :math:`-I` when every slot is used, so the next update is computed against it."""
    return inverse._replace(count=jnp.where(inverse.count >= inverse.u.shape[0], 0, inverse.count))


def _push(inverse: LowRankInverse, u_new: jax.Array, v_new: jax.Array, accept: jax.Array) -> LowRankInverse:
    """Write one pair into slot ``count`` (a scatter of two rows; nothing else is copied)."""
    slot = jnp.where(accept, inverse.count, inverse.u.shape[0])  # out of bounds: dropped
    return LowRankInverse(
        inverse.u.at[slot].set(u_new.astype(inverse.u.dtype), mode="drop"),
        inverse.v.at[slot].set(v_new.astype(inverse.v.dtype), mode="drop"),
        inverse.count + accept.astype(jnp.int32),
    )


def _h_times_y(inverse: LowRankInverse, room: LowRankInverse, y: jax.Array, hy: jax.Array | None) -> jax.Array:
    if hy is None:
        return matvec(room, y)
    return jnp.where(room.count == inverse.count, hy, -y)  # after a restart H = -I


def good_broyden_update(
    inverse: LowRankInverse, s: jax.Array, y: jax.Array, active=True, hy: jax.Array | None = None
) -> LowRankInverse:
    """Broyden's first ("good") method on the inverse.

    ``hy``, if given, is :math:`H y` for the current estimate (solvers have it for free,
    which saves one low-rank product). The update is skipped (the estimate is returned
    unchanged) when :math:`|v^\\top y| \\approx 0`, when it is not finite, or when ``active``
    is false.
    """
    room = _make_room(inverse)
    v_new = rmatvec(room, s)
    u_new, ok = safe_divide(s - _h_times_y(inverse, room, y, hy), _vdot(v_new, y))
    return _accept(inverse, room, u_new, v_new, ok & active)


def bad_broyden_update(
    inverse: LowRankInverse, s: jax.Array, y: jax.Array, active=True, hy: jax.Array | None = None
) -> LowRankInverse:
    """Broyden's second ("bad") method on the inverse; arguments and skipping as :func:`good_broyden_update`."""
    room = _make_room(inverse)
    u_new, ok = safe_divide(s - _h_times_y(inverse, room, y, hy), _vdot(y, y))
    return _accept(inverse, room, u_new, y, ok & active)


def _accept(inverse, room, u_new, v_new, ok):
    accept = ok & jnp.all(jnp.isfinite(u_new))
    pushed = _push(room, u_new, v_new, accept)
    return pushed._replace(count=jnp.where(accept, pushed.count, inverse.count))


def refresh_product(old: LowRankInverse, new: LowRankInverse, x: jax.Array, old_hx: jax.Array) -> jax.Array:
    """:math:`H_\\text{new} x` from :math:`H_\\text{old} x` after one update, reading only the newest pair.

    ``new`` must be ``old`` after one call of an update function (accepted, restarted or skipped).
    """
    accepted = new.count != old.count
    restarted = accepted & (old.count >= old.u.shape[0])
    newest = jnp.maximum(new.count - 1, 0)
    base = jnp.where(restarted, -x, old_hx)
    return jnp.where(accepted, base + (new.u[newest] * _vdot(new.v[newest], x)).astype(x.dtype), old_hx)


BROYDEN_UPDATES = {"good": good_broyden_update, "bad": bad_broyden_update}


class LBFGSMemory(NamedTuple):
    """The last ``memory`` curvature pairs :math:`(s_i, y_i)` with :math:`\\rho_i = 1 / s_i^\\top y_i`."""

    s: jax.Array
    y: jax.Array
    rho: jax.Array
    count: jax.Array  # type: ignore[assignment]  # a field named like tuple.count


def lbfgs_init(n: int, memory: int, dtype=jnp.float32) -> LBFGSMemory:
    zeros = jnp.zeros((memory, n), dtype)
    return LBFGSMemory(zeros, zeros, jnp.zeros((memory,), accumulation_dtype(dtype)), jnp.zeros((), jnp.int32))


def lbfgs_update(state: LBFGSMemory, s: jax.Array, y: jax.Array) -> LBFGSMemory:
    """Store a pair when the curvature condition :math:`s^\\top y > 0` holds (else keep the memory)."""
    memory = state.s.shape[0]
    curvature = _vdot(s, y)
    rho, ok = safe_divide(jnp.ones_like(curvature), curvature)
    accept = ok & (curvature > 0)
    slot = jax.nn.one_hot(state.count % memory, memory, dtype=state.s.dtype) * accept
    return LBFGSMemory(
        state.s * (1 - slot[:, None]) + slot[:, None] * s,
        state.y * (1 - slot[:, None]) + slot[:, None] * y,
        state.rho * (1 - slot.astype(state.rho.dtype)) + slot.astype(state.rho.dtype) * rho.astype(state.rho.dtype),
        state.count + accept.astype(jnp.int32),
    )


def lbfgs_inverse_hvp(state: LBFGSMemory, g: jax.Array) -> jax.Array:
    """Two-loop recursion: :math:`H g` with :math:`H` the L-BFGS inverse-Hessian estimate.

    The initial matrix is :math:`\\gamma I` with :math:`\\gamma = s^\\top y / y^\\top y` of the
    newest pair (identity when the memory is empty). Pairs are visited newest to oldest
    in the first loop and oldest to newest in the second, following the ring order.
    The recursion runs in at least float32 (bfloat16 pairs are widened), the result in ``g``'s dtype.
    """
    acc = accumulation_dtype(g.dtype)
    out_dtype, g = g.dtype, g.astype(acc)
    state = state._replace(s=state.s.astype(acc), y=state.y.astype(acc), rho=state.rho.astype(acc))
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

    return lax.fori_loop(0, memory, second_loop, r).astype(out_dtype)
