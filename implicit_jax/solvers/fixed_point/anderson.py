r"""Anderson acceleration (type II), one least-squares problem per sample.

With the last ``m`` iterates :math:`x_i` and evaluations :math:`f_i = f(x_i)`,
residuals :math:`g_i = f_i - x_i`, the mixing weights solve

.. math:: \min_\alpha \Big\| \sum_i \alpha_i g_i \Big\|^2 + \rho \sum_i \|g_i\|^2 \alpha_i^2
          \quad \text{s.t.} \quad \sum_i \alpha_i = 1,

i.e. :math:`\alpha \propto (G G^\top + \rho D)^{-1} \mathbf 1` with :math:`D = \mathrm{diag}(G G^\top)`,
and the next iterate is

.. math:: x_{+} = \beta \sum_i \alpha_i f_i + (1 - \beta) \sum_i \alpha_i x_i .

(Anderson 1965; Walker & Ni 2011, Alg. AA.) The Tikhonov term weighs each residual by its
own squared norm, so it is scale-free column by column: the diagonally scaled system
:math:`D^{-1/2}(G G^\top + \rho D) D^{-1/2}` has unit diagonal plus :math:`\rho` and smallest
eigenvalue at least :math:`\rho`, whatever the residuals' magnitudes. With
:math:`\rho \ge 10\, m\, \varepsilon` (:math:`\varepsilon` the dtype's machine epsilon) that
system stays numerically positive definite when the residuals become linearly
dependent (``memory`` at least the dimension, residuals in a low-dimensional subspace, any
one-dimensional problem), so the step degrades gracefully to a regularised least squares
instead of breaking down. In one dimension with two points it is the secant method
(up to :math:`O(\rho)`). Where the solve still fails (non-finite residuals), the sample
takes a plain fixed-point step, its history restarts from the newest pair, and the step
is counted in ``SolverInfo.num_fallbacks``. One evaluation of ``f`` per step;
``O(m^2 n)`` extra work per sample.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from implicit_jax._flat import accumulation_dtype
from implicit_jax.solvers.fixed_point.base import AbstractFixedPointSolver


class AndersonState(NamedTuple):
    fs: jax.Array  # (batch, m, n) past evaluations f(x_i)
    gs: jax.Array  # (batch, m, n) their residuals g_i = f(x_i) - x_i
    gram: jax.Array  # (batch, m, m) G G^T, kept up to date one row per step
    count: jax.Array  # type: ignore[assignment]  # (batch,) pairs pushed since the last restart (shadows tuple.count)
    fallbacks: jax.Array  # (batch,) steps whose least squares failed (plain step, history restarted)


def _push(state: AndersonState, x: jax.Array, fx: jax.Array, active: jax.Array) -> AndersonState:
    """Write ``(f(x), f(x) - x)`` into each active row's ring slot ``count mod m`` and update the Gram row.

    A scatter plus one ``(m, n)`` product per sample. The Gram row is read from the
    *updated* residual buffer (whose new slot holds ``g`` itself, giving the diagonal
    ``g . g``): a product of the old buffer would force XLA to copy the whole history
    every step so that the in-place write cannot overtake the read.
    """
    batch, memory = state.fs.shape[:2]
    g = fx - x
    slot = state.count % memory
    rows = jnp.arange(batch)
    target = jnp.where(active, slot, memory)  # out of bounds: dropped
    gs = state.gs.at[rows, target].set(g, mode="drop")
    cross = jnp.einsum("bmn,bn->bm", gs, g, preferred_element_type=state.gram.dtype)
    # the small Gram matrix's row and column by a mask: one elementwise kernel instead of two scatters
    written = (jnp.arange(memory)[None, :] == target[:, None])[:, :, None]  # (batch, m, 1)
    gram = jnp.where(written, cross[:, None, :], jnp.where(jnp.swapaxes(written, 1, 2), cross[:, :, None], state.gram))
    return AndersonState(
        state.fs.at[rows, target].set(fx, mode="drop"), gs, gram, state.count + active.astype(jnp.int32), state.fallbacks
    )


#: Smallest memory whose least squares goes to batched LAPACK instead of the Gauss-Jordan loop.
LAPACK_SOLVE_MIN_SIZE = 11


def solve_spd(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    r"""Solve :math:`a x = b` for small symmetric positive definite ``a`` of shape ``(..., m, m)``.

    Returns ``(x, ok)``. ``ok`` (shape ``a.shape[:-2]``) is false where ``a`` is not
    numerically positive definite (a pivot not above the dtype's smallest normal number, or
    not finite) or ``x`` is not finite. There ``x`` is finite but meaningless, computed with
    the failed pivots replaced by 1 (the double-``where`` pattern). A caller that swaps in a
    fallback with ``jnp.where(ok, x, fallback)`` therefore gets finite *gradients* too: a NaN
    in the branch not taken would make the select's cotangent
    :math:`0 \cdot \mathrm{NaN} = \mathrm{NaN}`, and unrolled Anderson would return NaN
    gradients on any problem whose residuals become parallel (every one-dimensional
    problem). :func:`mixing_weights` adds the smallest normal number to the diagonal, so a
    history of exactly zero residuals (a sample at its fixed point) fails here and takes the
    plain step, which is exact there; dividing by that pivot would overflow the gradient of
    an unrolled solve.

    Gauss-Jordan elimination on the augmented matrix :math:`[a \mid b]` without pivoting,
    which is stable for a symmetric positive definite ``a``: its pivots are the diagonal
    of the :math:`L D L^\top` factorisation, all positive exactly when ``a`` is positive
    definite (Higham, *Accuracy and Stability of Numerical Algorithms*, Sec. 10.1 and 14.4).
    Step :math:`k` scales row :math:`k` by its pivot and removes column :math:`k` from every
    other row, one elementwise update of the whole ``(..., m, m + 1)`` array over all leading
    axes. On CPU the ``m`` steps run in a ``lax.fori_loop``, so the compiled program is the
    same few kernels at every ``m`` (on other platforms, chosen at lowering by
    ``lax.platform_dependent``, the loop is unrolled); XLA's CPU backend compiles each kernel
    separately, at a few milliseconds apiece, and a Cholesky solve unrolled over the matrix entries would be one
    kernel per entry (a whole Anderson solve at ``m = 5``: 0.47 s to compile that way, 0.35 s
    this way). The loop costs run time in the solve itself (3.7 against 1 µs at batch 64,
    ``m = 5``), a few percent of an Anderson step at the benchmark sizes, where the forward
    solve measures the same either way.

    From ``m =`` ``LAPACK_SOLVE_MIN_SIZE``: ``jnp.linalg.solve`` (batched LU), which runs
    faster there (340 against 535 µs at ``m = 30``, batch 64); a first, non-differentiated
    solve finds the failed systems, which the second solve replaces by the identity.
    """
    size = a.shape[-1]
    if size >= LAPACK_SOLVE_MIN_SIZE:
        probe = jnp.linalg.solve(lax.stop_gradient(a), lax.stop_gradient(b)[..., None])[..., 0]
        ok = jnp.all(jnp.isfinite(probe), axis=-1)
        safe = jnp.where(ok[..., None, None], a, jnp.eye(size, dtype=a.dtype))
        return jnp.linalg.solve(safe, b[..., None])[..., 0], ok
    # CPU: a rolled loop (kernels compile one by one there); elsewhere unrolled, as a loop
    # iteration on an accelerator costs a launch and a round trip to the host for its condition.
    return lax.platform_dependent(
        a, b, cpu=functools.partial(_gauss_jordan, unroll=1), default=functools.partial(_gauss_jordan, unroll=True)
    )


def _gauss_jordan(a: jax.Array, b: jax.Array, unroll: int | bool) -> tuple[jax.Array, jax.Array]:
    """:func:`solve_spd`'s elimination, its ``m`` steps in a ``lax.fori_loop`` with this ``unroll``."""
    size = a.shape[-1]
    rows = jnp.arange(size)[:, None]
    augmented = jnp.concatenate([a, b[..., None]], axis=-1)

    def eliminate(k, carry):
        augmented, ok = carry
        row = lax.dynamic_index_in_dim(augmented, k, axis=-2, keepdims=False)  # (..., m + 1)
        pivot = lax.dynamic_index_in_dim(row, k, axis=-1, keepdims=False)
        positive = pivot > jnp.finfo(pivot.dtype).tiny  # false for NaN too, and for a zero residual's floor
        row = row / jnp.where(positive, pivot, 1.0)[..., None]
        column = lax.dynamic_index_in_dim(augmented, k, axis=-1, keepdims=False)  # (..., m)
        eliminated = augmented - column[..., :, None] * row[..., None, :]
        return jnp.where(rows == k, row[..., None, :], eliminated), ok & positive

    augmented, ok = lax.fori_loop(0, size, eliminate, (augmented, jnp.ones(a.shape[:-2], bool)), unroll=unroll)
    x = augmented[..., size]
    return x, ok & jnp.all(jnp.isfinite(x), axis=-1)


def effective_regularization(regularization: float, memory: int, dtype) -> float:
    r""":math:`\rho = \max(\text{regularization},\ 10\, m\, \varepsilon)`: the floor keeps the scaled Gram system positive definite in ``dtype``."""
    return max(float(regularization), 10.0 * memory * float(jnp.finfo(dtype).eps))


def _diagonal(a: jax.Array) -> jax.Array:
    """The diagonals of ``(..., m, m)`` matrices as a masked sum, which fuses into its consumer (``jnp.diagonal`` is a gather kernel of its own)."""
    return jnp.sum(jnp.where(jnp.eye(a.shape[-1], dtype=bool), a, 0), axis=-1)


def mixing_weights(gram: jax.Array, valid: jax.Array, regularization: float) -> tuple[jax.Array, jax.Array]:
    r"""Weights :math:`\alpha` (summing to one over valid slots) from Gram matrices ``(..., m, m)`` of residuals.

    Solves :math:`(G G^\top + \rho D)\, w = \mathbf 1`, :math:`\alpha = w / \mathbf 1^\top w`, with
    :math:`\rho` from :func:`effective_regularization`. ``valid`` (``(..., m)``) marks the
    filled slots; the others get weight 0. Returns ``(alpha, ok)``; where ``ok`` is false the
    least squares was numerically degenerate and ``alpha`` is finite but meaningless (see
    :func:`solve_spd`).
    """
    diagonal = _diagonal(gram)
    rho = effective_regularization(regularization, valid.shape[-1], gram.dtype)
    both = valid[..., :, None] & valid[..., None, :]
    eye = jnp.eye(valid.shape[-1], dtype=gram.dtype)
    ridge = jnp.where(valid, rho * diagonal + jnp.finfo(gram.dtype).tiny, 1.0)
    system = jnp.where(both, gram, 0.0) + eye * ridge[..., None, :]
    w, ok = solve_spd(system, valid.astype(gram.dtype))
    total = jnp.sum(w, axis=-1, keepdims=True)
    ok = ok & (total[..., 0] != 0)
    alpha = w / jnp.where(ok[..., None], total, 1.0)
    return alpha, ok & jnp.all(jnp.isfinite(alpha), axis=-1)


def multisecant_rmatvec(state: AndersonState, v: jax.Array, mixing: float, regularization: float) -> jax.Array:
    r""":math:`H^\top v` for Anderson's multisecant inverse-Jacobian estimate :math:`H \approx (J - I)^{-1}`, per sample.

    Type-II Anderson is a multisecant quasi-Newton method (Fang & Saad 2009; Walker & Ni
    2011). Take differences to the newest pair :math:`k` of the history (since its last
    restart), :math:`\Delta G_j = g_k - g_j` and :math:`\Delta X_j = x_k - x_j` with
    :math:`x_j = f_j - g_j`. Writing the weights as :math:`\alpha_j = \gamma_j` (:math:`j \ne k`),
    :math:`\alpha_k = 1 - \sum_j \gamma_j`, this solver's regularised least squares
    (module docstring) has the normal matrix

    .. math:: M = \Delta G^\top \Delta G + \rho\,(\mathrm{diag}(\|g_j\|^2) + \|g_k\|^2\,\mathbf 1 \mathbf 1^\top),

    and its step is :math:`x_+ = x_k - H g_k` (up to an :math:`O(\rho)` term) with

    .. math:: H = -\beta I + (\Delta X + \beta \Delta G)\, M^{-1} \Delta G^\top,

    which satisfies the secant equations :math:`H \Delta G = \Delta X` as :math:`\rho \to 0`
    (:math:`\beta` = ``mixing``). Hence
    :math:`H^\top v = -\beta v + \Delta G\, M^{-1} (\Delta X + \beta \Delta G)^\top v`: two
    ``(m, n)`` products with the stored history, one ``m x m`` solve from the maintained Gram
    matrix (in at least float32), no ``n x n`` matrix. With one pair (no differences) or a
    numerically singular :math:`M`, :math:`H = -\beta I`.
    """
    batch, memory = state.gs.shape[:2]
    acc = state.gram.dtype
    newest = (state.count - 1) % memory
    slots = jnp.arange(memory)
    differences = (slots[None, :] < jnp.minimum(state.count, memory)[:, None]) & (slots[None, :] != newest[:, None])
    rows = jnp.arange(batch)
    gram = state.gram
    g_kk = gram[rows, newest, newest]
    g_k = gram[rows, newest]  # (batch, m): g_k . g_j
    # Delta G_i . Delta G_j = G_kk - G_ki - G_kj + G_ij
    dgdg = g_kk[:, None, None] - g_k[:, :, None] - g_k[:, None, :] + gram
    rho = effective_regularization(regularization, memory, acc)
    diagonal = _diagonal(gram)
    normal = dgdg + rho * (jnp.eye(memory, dtype=acc) * diagonal[:, None, :] + g_kk[:, None, None])
    both = differences[:, :, None] & differences[:, None, :]
    system = (
        jnp.where(both, normal, 0.0) + jnp.eye(memory, dtype=acc) * jnp.where(differences, jnp.finfo(acc).tiny, 1.0)[:, None, :]
    )
    # c_j = (Delta X_j + beta Delta G_j) . v = (f_k - f_j) . v - (1 - beta) (g_k - g_j) . v
    fv = jnp.einsum("bmn,bn->bm", state.fs, v, preferred_element_type=acc)
    gv = jnp.einsum("bmn,bn->bm", state.gs, v, preferred_element_type=acc)
    c = (fv[rows, newest][:, None] - fv) - (1.0 - mixing) * (gv[rows, newest][:, None] - gv)
    w, ok = solve_spd(system, jnp.where(differences, c, 0.0))
    w = jnp.where(differences & ok[:, None], w, 0.0)
    # Delta G w = (sum_j w_j) g_k - sum_j w_j g_j
    weights = w - jax.nn.one_hot(newest, memory, dtype=acc) * jnp.sum(w, axis=-1, keepdims=True)
    delta_g_w = -jnp.einsum("bm,bmn->bn", weights, state.gs, preferred_element_type=acc)
    return (-mixing * v.astype(acc) + delta_g_w).astype(v.dtype)


@dataclasses.dataclass(frozen=True)
class Anderson(AbstractFixedPointSolver):
    """Anderson acceleration.

    Attributes:
      memory: number of past iterates mixed (``m``).
      mixing: :math:`\\beta \\in (0, 1]`; 1 mixes evaluations only.
      regularization: relative Tikhonov weight :math:`\\rho` of the least squares, raised to
        ``10 * memory * eps`` of the dtype where it is below that (see the module docstring).
    """

    memory: int = 5
    mixing: float = 1.0
    regularization: float = 1e-8

    def __post_init__(self):
        if not (isinstance(self.memory, int) and self.memory >= 1):
            raise ValueError(f"Anderson(memory=...) must be an integer >= 1, got {self.memory!r}.")
        if not 0.0 < self.mixing <= 1.0:
            raise ValueError(f"Anderson(mixing=...) must lie in (0, 1], got {self.mixing!r}.")
        if not self.regularization >= 0.0:
            raise ValueError(f"Anderson(regularization=...) must be >= 0, got {self.regularization!r}.")

    def init(self, z, fz):
        batch, n = z.shape
        empty = jnp.zeros((batch, self.memory, n), z.dtype)
        gram = jnp.zeros((batch, self.memory, self.memory), accumulation_dtype(z.dtype))  # small dense algebra in >= float32
        zeros = jnp.zeros((batch,), jnp.int32)
        return _push(AndersonState(empty, empty, gram, zeros, zeros), z, fz, jnp.ones((batch,), bool))

    def num_fallbacks(self, state, batch):
        return state.fallbacks

    shares_inverse = True

    def inverse_transpose_product(self, state, v):
        """:math:`H^\\top v` with the multisecant estimate of the history (``multisecant_rmatvec``)."""
        return multisecant_rmatvec(state, v, self.mixing, self.regularization)

    def step(self, fn, z, fz, state, active):
        valid = jnp.arange(self.memory)[None, :] < state.count[:, None]
        alpha, ok = mixing_weights(state.gram, valid, self.regularization)
        # A failed least squares (non-finite residuals in memory): that sample takes a plain
        # fixed-point step instead, with finite gradients when unrolled, and restarts its history.
        newest = jax.nn.one_hot((state.count - 1) % self.memory, self.memory, dtype=alpha.dtype)
        alpha = jnp.where(ok[:, None], alpha, newest)
        mixed_f = jnp.einsum("bm,bmn->bn", alpha, state.fs, preferred_element_type=alpha.dtype)
        # x_i = f_i - g_i, so beta * sum a f + (1 - beta) * sum a x = sum a f - (1 - beta) * sum a g
        z_new = (
            mixed_f
            if self.mixing == 1.0
            else mixed_f - (1 - self.mixing) * jnp.einsum("bm,bmn->bn", alpha, state.gs, preferred_element_type=alpha.dtype)
        )
        z_new = z_new.astype(z.dtype)
        fz_new = fn(z_new)
        failed = active & ~ok
        restarted = state._replace(count=jnp.where(failed, 0, state.count), fallbacks=state.fallbacks + failed.astype(jnp.int32))
        return z_new, fz_new, _push(restarted, z_new, fz_new, active), 1
