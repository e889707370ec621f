r"""Conjugate gradient for symmetric positive-definite systems given only as products.

Solves :math:`A x = b` (Hestenes & Stiefel 1952; Nocedal & Wright Alg. 5.2) with
``matvec`` :math:`v \mapsto A v`, e.g. a Hessian-vector product. It stops when
:math:`\|b - A x\| \le \text{tol}\,\|b\|` or after ``max_steps`` products, and reports
non-convergence, a non-finite residual or a direction of non-positive curvature
(:math:`p^\top A p \le 0`, where :math:`A` is not positive definite) instead of hiding them.
:class:`CG` is the configured solver object (``Implicit(solver=...)`` style);
:func:`conjugate_gradient` the plain function.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from implicit_jax.solvers.linear.base import AbstractLinearSolver
from implicit_jax.solvers.stopping import SolverInfo, StopCriterion


class CGInfo(NamedTuple):
    """``steps`` (= products with A), ``residual`` :math:`\\|b - Ax\\|/\\|b\\|`, ``converged``."""

    steps: jax.Array
    residual: jax.Array
    converged: jax.Array


class _Carry(NamedTuple):
    x: jax.Array
    r: jax.Array
    p: jax.Array
    rr: jax.Array
    steps: jax.Array
    curvature_ok: jax.Array


def _cg(matvec, b: jax.Array, x0: jax.Array, threshold: jax.Array, max_steps: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """CG from ``x0`` until :math:`\\|b - Ax\\| \\le` ``threshold``: ``(x, products, ||b - Ax||)``."""
    r0 = b - matvec(x0)
    rr0 = jnp.vdot(r0, r0)

    def go(c: _Carry):
        norm = jnp.sqrt(c.rr)
        return (norm > threshold) & jnp.isfinite(norm) & c.curvature_ok & (c.steps < max_steps)

    def body(c: _Carry) -> _Carry:
        ap = matvec(c.p)
        curvature = jnp.vdot(c.p, ap)
        ok = curvature > 0
        alpha = jnp.where(ok, c.rr / jnp.where(ok, curvature, 1.0), 0.0)
        x = c.x + alpha * c.p
        r = c.r - alpha * ap
        rr = jnp.vdot(r, r)
        p = r + (rr / jnp.where(c.rr > 0, c.rr, 1.0)) * c.p
        return _Carry(x, r, p, rr, c.steps + 1, ok)

    c = lax.while_loop(go, body, _Carry(x0, r0, r0, rr0, jnp.zeros((), jnp.int32), jnp.ones((), bool)))
    return c.x, c.steps + 1, jnp.sqrt(c.rr)


def conjugate_gradient(
    matvec: Callable[[jax.Array], jax.Array], b: jax.Array, x0: jax.Array, *, tol: float, max_steps: int
) -> tuple[jax.Array, CGInfo]:
    """CG from ``x0`` to :math:`\\|b - Ax\\| \\le \\text{tol}\\,\\|b\\|`; one product to form the initial residual, then one per step."""
    b_norm = jnp.linalg.norm(b)
    threshold = tol * b_norm
    x, products, res_norm = _cg(matvec, b, x0, threshold, max_steps)
    residual = res_norm / jnp.where(b_norm > 0, b_norm, 1.0)
    converged = (res_norm <= threshold) & jnp.isfinite(residual)
    return x, CGInfo(products, residual, converged)


@dataclasses.dataclass(frozen=True)
class CG(AbstractLinearSolver):
    """Conjugate gradient on the whole of ``b`` as one symmetric positive-definite system.

    Stops at ``criterion.tol`` on :math:`\\|b - Ax\\|` (``stop_mode="abs"``) or on
    :math:`\\|b - Ax\\| / \\|b\\|` (``"rel"``), or on :math:`\\|b - Ax\\| \\le` ``atol + tol`` :math:`\\|b\\|`
    (``"mixed"``), or after ``criterion.max_steps`` products.
    """

    name = "cg"

    def solve(self, matvec, b, x0, criterion: StopCriterion) -> tuple[jax.Array, SolverInfo]:
        b_norm = jnp.linalg.norm(b)
        threshold = criterion.threshold(b_norm)
        x, products, res_norm = _cg(matvec, b, x0, threshold, criterion.max_steps)
        rel = res_norm / jnp.where(b_norm > 0, b_norm, 1.0)
        converged = (res_norm <= threshold) & jnp.isfinite(res_norm)
        return x, SolverInfo(products - 1, products, res_norm, rel, converged, jnp.zeros((), jnp.int32))
