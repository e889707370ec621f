r"""Line search on the weak Wolfe conditions, with Hager and Zhang's approximate-Wolfe test.

Along a descent direction :math:`d` from :math:`w`, write
:math:`\phi(\alpha) = g(w + \alpha d)`, so :math:`\phi'(0) = d^\top \nabla g(w) < 0`. A step
is accepted when it satisfies the weak Wolfe conditions (Nocedal & Wright, *Numerical
Optimization*, eq. 3.6)

.. math:: \phi(\alpha) \le \phi(0) + c_1 \alpha \phi'(0), \qquad \phi'(\alpha) \ge c_2 \phi'(0),

or the approximate Wolfe conditions of Hager & Zhang (SIAM J. Optim. 2005, eq. 4.1 with the
"approximate" decrease test of Sec. 4)

.. math:: \phi(\alpha) \le \phi(0) + \epsilon |\phi(0)|, \qquad
          c_2 \phi'(0) \le \phi'(\alpha) \le (2 c_1 - 1) \phi'(0).

The second pair matters in float32: near a minimiser the decrease the Armijo test asks for
falls below the rounding error of :math:`\phi`, and a value-only (backtracking) search
rejects good steps for ever. The slopes, computed from gradients, stay accurate there. The
curvature condition also guarantees :math:`s^\top y > 0`, so every accepted step gives
L-BFGS a valid pair.

The search is the bracketing scheme of Lewis & Overton (Math. Program. 2013, Sec. 4.1) with
safeguarded cubic interpolation (Nocedal & Wright, eq. 3.59) in place of bisection: a
trial failing the decrease test becomes the upper end of the bracket, one failing only the
curvature test the lower end; until an upper end exists the step doubles. Every trial costs
one value-and-gradient call. If no trial is accepted within ``max_trials`` the lowest
finite value seen (possibly the origin) is returned, so a failed search never moves uphill
or onto a NaN.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax


class Trial(NamedTuple):
    """One point on the search line: step, value, slope :math:`\\phi'(\\alpha)`, iterate and gradient."""

    alpha: jax.Array
    value: jax.Array
    slope: jax.Array
    w: jax.Array
    grad: jax.Array


class _Search(NamedTuple):
    lo: Trial  # satisfies the decrease test, fails the curvature test (alpha = 0 at the start)
    hi: Trial  # fails the decrease test; alpha = inf until one is found
    best: Trial  # lowest finite value so far
    accepted: Trial
    alpha: jax.Array  # next step to try
    found: jax.Array
    evals: jax.Array


def cubic_minimizer(lo: Trial, hi: Trial) -> jax.Array:
    """Minimiser of the cubic through both ends' values and slopes (Nocedal & Wright, eq. 3.59).

    Safeguarded: a non-finite result or one outside the middle 80% of the bracket is
    replaced by the bracket's midpoint.
    """
    a, b = lo.alpha, hi.alpha
    d1 = lo.slope + hi.slope - 3 * (lo.value - hi.value) / (a - b)
    d2 = jnp.sign(b - a) * jnp.sqrt(jnp.maximum(d1**2 - lo.slope * hi.slope, 0.0))
    step = b - (b - a) * (hi.slope + d2 - d1) / (hi.slope - lo.slope + 2 * d2)
    left, right = jnp.minimum(a, b), jnp.maximum(a, b)
    margin = 0.1 * (right - left)
    inside = jnp.isfinite(step) & (step >= left + margin) & (step <= right - margin)
    return jnp.where(inside, step, 0.5 * (a + b))


def wolfe_line_search(
    value_and_grad: Callable[[jax.Array], tuple[jax.Array, jax.Array]],
    w: jax.Array,
    value: jax.Array,
    grad: jax.Array,
    direction: jax.Array,
    slope: jax.Array,
    alpha0: jax.Array,
    *,
    c1: float,
    c2: float,
    approx_eps: float,
    max_trials: int,
    unrolled: bool = False,
) -> tuple[Trial, jax.Array, jax.Array]:
    """Search along ``direction`` (with ``slope`` = d^T grad < 0); returns ``(trial, accepted, num_evals)``.

    ``unrolled`` runs ``max_trials`` masked trials in ``lax.scan`` (differentiable in reverse
    mode) instead of a ``lax.while_loop``.
    """
    dtype = w.dtype
    origin = Trial(jnp.zeros((), dtype), value, slope, w, grad)
    unbounded = origin._replace(alpha=jnp.asarray(jnp.inf, dtype))
    decrease_floor = value + approx_eps * jnp.abs(value)

    def trial(search: _Search) -> _Search:
        alpha = search.alpha
        w_new = w + alpha * direction
        v_new, g_new = value_and_grad(w_new)
        t = Trial(alpha, v_new, jnp.vdot(direction, g_new), w_new, g_new)
        finite = jnp.isfinite(v_new) & jnp.isfinite(t.slope)
        armijo = v_new <= value + c1 * alpha * slope
        approximate = (v_new <= decrease_floor) & (t.slope <= (2 * c1 - 1) * slope)
        decrease = finite & (armijo | approximate)
        curvature = t.slope >= c2 * slope
        accept = decrease & curvature
        choose = lambda flag, new, old: jax.tree.map(lambda n, o: jnp.where(flag, n, o), new, old)
        lo = choose(decrease & ~curvature, t, search.lo)
        hi = choose(~decrease, t, search.hi)
        best = choose(finite & (v_new < search.best.value), t, search.best)
        bracketed = jnp.isfinite(hi.alpha)
        next_alpha = jnp.where(bracketed, cubic_minimizer(lo, hi), 2 * alpha)
        # a non-finite upper end has no usable value or slope: bisect towards it
        next_alpha = jnp.where(bracketed & ~jnp.isfinite(hi.value + hi.slope), 0.5 * (lo.alpha + hi.alpha), next_alpha)
        # step sizes are treated as constants when the unrolled solver is differentiated (the
        # cubic's derivative is meaningless at the bracket's edges and NaN where it is unused)
        next_alpha = lax.stop_gradient(next_alpha)
        return _Search(lo, hi, best, choose(accept, t, search.accepted), next_alpha, accept, search.evals + 1)

    def pending(search: _Search) -> jax.Array:
        return ~search.found & (search.evals < max_trials)

    start = _Search(origin, unbounded, origin, origin, jnp.asarray(alpha0, dtype), jnp.zeros((), bool), jnp.zeros((), jnp.int32))
    if unrolled:
        search, _ = lax.scan(lambda s, _: (lax.cond(pending(s), trial, lambda s: s, s), None), start, None, length=max_trials)
    else:
        search = lax.while_loop(pending, trial, start)
    result = jax.tree.map(lambda a, b: jnp.where(search.found, a, b), search.accepted, search.best)
    return result, search.found, search.evals
