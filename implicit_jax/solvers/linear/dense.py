r"""A direct solve for small systems: form each matrix from its products, then factorise it.

For a ``(batch, n)`` right-hand side whose rows are independent systems
:math:`M_i x_i = b_i`, given only the batched product ``matvec`` (row ``i`` of
``matvec(v)`` depends on row ``i`` of ``v`` alone), the matrices are formed column by
column, :math:`M e_k` for :math:`k = 1 \dots n` in one ``jax.vmap`` of the product, and
each system is solved through a Householder QR factorisation of the augmented matrix,
:math:`[M \mid b] = Q\,[R \mid Q^\top b]`, then :math:`x = R^{-1} (Q^\top b)` (Golub & Van Loan,
*Matrix Computations*, Sec. 5.2 and 5.3): backward stable like LU with partial pivoting, with
:math:`Q` never formed and no pivot permutation to apply (in XLA a loop), so the solve
compiles to a few kernels.
optimistix and lineax also form and factorise a square operator by default
(``AutoLinearSolver(well_posed=None)`` picks ``LU``).

Cost: ``n`` products (vectorised into one call instead of a loop of dependent ones), then
:math:`O(n^3)` per row and ``batch * n * n`` entries of memory; so it suits small states,
where it is also cheaper to compile than an iterative solver. It is exact up to rounding
and needs only :math:`M` nonsingular. The solution is checked: the reported residual is the
true :math:`\|b - M x\|` with the formed matrix, and a singular or non-finite system is
reported as not converged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from implicit_jax._flat import accumulation_dtype, row_norm
from implicit_jax.solvers.linear.base import AbstractLinearSolver
from implicit_jax.solvers.stopping import SolverInfo, StopCriterion


def dense_matrices(matvec: Callable[[jax.Array], jax.Array], batch: int, n: int, dtype) -> jax.Array:
    """The ``(batch, n, n)`` matrices :math:`M_i` of a row-wise batched linear ``matvec``, one vmapped product per column."""
    columns = jnp.broadcast_to(jnp.eye(n, dtype=dtype)[:, None, :], (n, batch, n))  # columns[k] = e_k in every row
    images = jax.vmap(matvec)(columns)  # images[k, i] = M_i e_k
    return jnp.moveaxis(images, 0, -1)


def dense_solve(
    matvec: Callable[[jax.Array], jax.Array], b: jax.Array, x0: jax.Array, criterion: StopCriterion
) -> tuple[jax.Array, SolverInfo]:
    """Solve ``matvec(x) = b`` row by row, ``b`` of shape ``(batch, n)``, by forming each row's matrix and factorising it (QR).

    ``x0`` is not used (a direct solve has no starting point); it is accepted so that this
    has the signature of the iterative solvers. ``criterion`` decides only ``converged``:
    :math:`\\|b - M x\\|` against its threshold, and finite. ``info.steps`` is 1 (one
    factorisation), ``info.num_fn_evals`` the ``n`` products. A bfloat16 or float16 system
    is factorised in float32 (the products with ``M`` stay in the system's dtype).
    """
    del x0
    batch, n = b.shape
    dtype = accumulation_dtype(b.dtype)
    matrices = dense_matrices(matvec, batch, n, b.dtype).astype(dtype)
    rhs = b.astype(dtype)
    # QR of [M | b] = Q [R | Q^T b]: the factor's last column is Q^T b, so Q is never formed
    r = jnp.linalg.qr(jnp.concatenate([matrices, rhs[..., None]], axis=-1), mode="r")
    x = lax.linalg.triangular_solve(r[..., :n], r[..., n:], left_side=True, lower=False)[..., 0]
    residual = row_norm(rhs - jnp.einsum("bij,bj->bi", matrices, x))
    b_norm = row_norm(rhs)
    converged = (residual <= criterion.threshold(b_norm)) & jnp.isfinite(residual)
    info = SolverInfo(
        jnp.ones((), jnp.int32),
        jnp.asarray(n, jnp.int32),
        residual,
        residual / jnp.where(b_norm > 0, b_norm, 1.0),
        converged,
        jnp.zeros((batch,), jnp.int32),
    )
    return x.astype(b.dtype), info


@dataclasses.dataclass(frozen=True)
class Dense(AbstractLinearSolver):
    """Direct solve of small systems: each row's matrix formed from ``n`` products, then QR (:func:`dense_solve`)."""

    name = "dense"

    def solve(self, matvec, b, x0, criterion: StopCriterion) -> tuple[jax.Array, SolverInfo]:
        return dense_solve(matvec, b, x0, criterion)
