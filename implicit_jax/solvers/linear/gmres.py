r"""Restarted GMRES with one Krylov space per sample.

Solves :math:`M x = b` for a ``(batch, n)`` right-hand side whose rows are independent
systems, given only the batched product ``matvec`` (row ``i`` of ``matvec(v)`` may depend
on row ``i`` of ``v`` alone, as a per-sample VJP does). GMRES (Saad & Schultz 1986;
Saad, *Iterative Methods for Sparse Linear Systems*, Alg. 6.9) picks, in the Krylov
space :math:`x_0 + \mathcal K_j(M, r_0)`, the point of least residual norm:

.. math:: x_j = x_0 + V_j y_j, \qquad y_j = \arg\min_y \big\| \beta e_1 - \bar H_j y \big\|,
          \quad \beta = \|r_0\|,

where the Arnoldi process (modified Gram-Schmidt) builds the orthonormal basis
:math:`V_j` and the :math:`(j + 1) \times j` Hessenberg matrix :math:`\bar H_j` with
:math:`M V_j = V_{j+1} \bar H_j`. Givens rotations keep :math:`\bar H_j` triangular as it
grows (Saad, Sec. 6.5.3), so the residual norm :math:`|g_{j+1}|` is known at every step
without forming :math:`x_j`. After ``restart`` steps the cycle restarts from :math:`x_j`.

Every row has its own basis, rotations, residual and stopping rule: a row stops as
soon as its residual meets the tolerance (its solution is then frozen), a row that
turns non-finite stops without touching the others, and the reported iteration count
is that of the slowest row. Unlike a fixed-point iteration on :math:`x = (I - M) x + b`,
GMRES converges whenever :math:`M` is nonsingular (in at most ``n`` steps without
restarts), e.g. for the adjoint of a DEQ whose Jacobian has spectral radius above one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from implicit_jax._flat import accumulation_dtype, row_norm
from implicit_jax.solvers.linear.base import AbstractLinearSolver
from implicit_jax.solvers.stopping import SolverInfo, StopCriterion


class _Cycle(NamedTuple):
    basis: jax.Array  # (restart + 1, batch, n) Arnoldi vectors; slot-major so one vector is contiguous
    triangle: jax.Array  # (batch, restart, restart) the rotated Hessenberg matrix R
    cosines: jax.Array  # (restart, batch) Givens rotations applied so far
    sines: jax.Array
    rhs: jax.Array  # (restart + 1, batch) the rotated beta * e_1; |rhs[j]| is the residual after j steps
    used: jax.Array  # (batch,) Arnoldi steps taken by each row in this cycle
    active: jax.Array  # (batch,) rows still iterating
    step: jax.Array  # () steps taken by the cycle (the slowest row)


class _Restarts(NamedTuple):
    x: jax.Array  # (batch, n) current solution
    r: jax.Array  # (batch, n) its true residual b - M x
    norm: jax.Array  # (batch,) ||r||
    steps: jax.Array  # () Arnoldi steps so far (the slowest row)
    products: jax.Array  # () products with M so far


def _arnoldi_column(matvec, basis: jax.Array, j: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``M v_j`` orthogonalised against ``v_0 .. v_j`` (modified Gram-Schmidt): ``(w, h, ||w||)``, ``h`` of shape ``(restart + 1, batch)``."""
    w = matvec(basis[j])

    def project(i, carry):
        w, h = carry
        coefficient = jnp.sum(basis[i] * w, axis=-1)
        return w - coefficient[:, None] * basis[i], h.at[i].set(coefficient)

    w, h = lax.fori_loop(0, j + 1, project, (w, jnp.zeros(basis.shape[:2], w.dtype)))
    return w, h, row_norm(w)


def _rotate(h: jax.Array, cosines: jax.Array, sines: jax.Array, j: jax.Array) -> jax.Array:
    """Apply the rotations of steps ``0 .. j-1`` to the new Hessenberg column ``h``."""

    def apply(i, h):
        a, b = h[i], h[i + 1]
        return h.at[i].set(cosines[i] * a + sines[i] * b).at[i + 1].set(cosines[i] * b - sines[i] * a)

    return lax.fori_loop(0, j, apply, h)


def gmres(
    matvec: Callable[[jax.Array], jax.Array],
    b: jax.Array,
    x0: jax.Array,
    criterion: StopCriterion,
    *,
    restart: int = 20,
) -> tuple[jax.Array, SolverInfo]:
    """Solve ``matvec(x) = b`` row by row from ``x0``, both of shape ``(batch, n)``.

    Args:
      matvec: the batched linear map ``M``.
      b: right-hand sides.
      x0: starting point.
      criterion: ``tol``, ``max_steps`` (Arnoldi steps in all, over the restarts) and
        ``stop_mode``: ``"abs"`` stops a row when :math:`\\|b - M x\\| \\le` ``tol``,
        ``"rel"`` when :math:`\\|b - M x\\| \\le` ``tol`` :math:`\\|b\\|`, ``"mixed"`` when
        :math:`\\|b - M x\\| \\le` ``atol + tol`` :math:`\\|b\\|`.
      restart: Krylov dimension of a cycle (capped at ``n``).

    Returns:
      ``(x, info)``: ``info.steps`` counts the Arnoldi steps of the slowest row,
      ``info.num_fn_evals`` every product with ``M`` (one per step plus one per cycle for
      the true residual), and the residuals are the true ones, :math:`\\|b - M x\\|` and
      that over :math:`\\|b\\|`, per row. ``x`` has the dtype of ``b``; a bfloat16 or float16
      system is solved in float32 (the products with ``M`` stay in the system's dtype).
    """
    state_dtype = b.dtype
    dtype = accumulation_dtype(state_dtype)
    if dtype != state_dtype:
        x, info = gmres(
            lambda v: matvec(v.astype(state_dtype)).astype(dtype), b.astype(dtype), x0.astype(dtype), criterion, restart=restart
        )
        return x.astype(state_dtype), info
    batch, n = b.shape
    size = min(restart, n)
    b_norm = row_norm(b)
    threshold = criterion.threshold(b_norm)

    def residual(x):
        r = b - matvec(x)
        return r, row_norm(r)

    def iterating(norm):
        return (norm > threshold) & jnp.isfinite(norm)

    def cycle(x, r, beta, active, budget):
        safe_beta = jnp.where(beta > 0, beta, 1.0)
        basis = jnp.zeros((size + 1, batch, n), dtype).at[0].set(r / safe_beta[:, None])
        rhs = jnp.zeros((size + 1, batch), dtype).at[0].set(beta)
        zeros = jnp.zeros((size, batch), dtype)
        start = _Cycle(
            basis,
            jnp.zeros((batch, size, size), dtype),
            zeros,
            zeros,
            rhs,
            jnp.zeros((batch,), jnp.int32),
            active,
            jnp.zeros((), jnp.int32),
        )

        def go(c: _Cycle):
            return (c.step < jnp.minimum(size, budget)) & jnp.any(c.active)

        def arnoldi_step(c: _Cycle) -> _Cycle:
            j = c.step
            w, h, h_next = _arnoldi_column(matvec, c.basis, j)
            h = _rotate(h, c.cosines, c.sines, j)
            diagonal = jnp.hypot(h[j], h_next)
            nonzero = diagonal > 0
            cosine = jnp.where(nonzero, h[j] / jnp.where(nonzero, diagonal, 1.0), 1.0)
            sine = jnp.where(nonzero, h_next / jnp.where(nonzero, diagonal, 1.0), 0.0)
            column = h[:size].at[j].set(diagonal)  # (size, batch): column j of R
            g_j = c.rhs[j]
            keep = c.active
            residual_estimate = jnp.abs(sine * g_j)
            next_vector = jnp.where((keep & (h_next > 0))[:, None], w / jnp.where(h_next > 0, h_next, 1.0)[:, None], 0.0)
            return _Cycle(
                basis=c.basis.at[j + 1].set(next_vector),
                triangle=c.triangle.at[:, :, j].set(jnp.where(keep[:, None], column.T, c.triangle[:, :, j])),
                cosines=c.cosines.at[j].set(jnp.where(keep, cosine, 1.0)),
                sines=c.sines.at[j].set(jnp.where(keep, sine, 0.0)),
                rhs=c.rhs.at[j].set(jnp.where(keep, cosine * g_j, g_j)).at[j + 1].set(jnp.where(keep, -sine * g_j, 0.0)),
                used=c.used + keep.astype(jnp.int32),
                active=keep & iterating(residual_estimate),
                step=j + 1,
            )

        c = lax.while_loop(go, arnoldi_step, start)
        # Least squares: R y = g on each row's first `used` columns; the other columns are
        # replaced by the identity with a zero right-hand side, so their y is 0.
        live = jnp.arange(size)[None, :] < c.used[:, None]  # (batch, size)
        triangle = jnp.where(live[:, None, :], c.triangle, jnp.eye(size, dtype=dtype))
        g = jnp.where(live, c.rhs[:size].T, 0.0)
        y = jax.vmap(lambda t, v: jax.scipy.linalg.solve_triangular(t, v, lower=False))(triangle, g)
        return x + jnp.einsum("bk,kbn->bn", y, c.basis[:size]), c.step

    def outer_go(o: _Restarts):
        return jnp.any(iterating(o.norm)) & (o.steps < criterion.max_steps)

    def outer_step(o: _Restarts) -> _Restarts:
        x, taken = cycle(o.x, o.r, o.norm, iterating(o.norm), criterion.max_steps - o.steps)
        r, norm = residual(x)
        # a row that stopped keeps its iterate: rounding in the new true residual must not revive it
        stopped = ~iterating(o.norm)
        return _Restarts(
            jnp.where(stopped[:, None], o.x, x), r, jnp.where(stopped, o.norm, norm), o.steps + taken, o.products + taken + 1
        )

    r0, norm0 = residual(x0)
    o = lax.while_loop(outer_go, outer_step, _Restarts(x0, r0, norm0, jnp.zeros((), jnp.int32), jnp.ones((), jnp.int32)))
    rel = o.norm / jnp.where(b_norm > 0, b_norm, 1.0)
    converged = (o.norm <= threshold) & jnp.isfinite(o.norm)
    return o.x, SolverInfo(o.steps, o.products, o.norm, rel, converged, jnp.zeros((batch,), jnp.int32))


@dataclasses.dataclass(frozen=True)
class GMRES(AbstractLinearSolver):
    """Restarted GMRES, one Krylov space per row (:func:`gmres`).

    Attributes:
      restart: Krylov dimension of a cycle (capped at ``n``).
    """

    restart: int = 20

    name = "gmres"

    def __post_init__(self):
        if not (isinstance(self.restart, int) and not isinstance(self.restart, bool) and self.restart >= 1):
            raise ValueError(f"GMRES(restart=...) must be an integer >= 1, got {self.restart!r}.")

    def solve(self, matvec, b, x0, criterion: StopCriterion) -> tuple[jax.Array, SolverInfo]:
        return gmres(matvec, b, x0, criterion, restart=self.restart)
