r"""The DEQ layer: a Flax ``nnx`` module that returns the equilibrium of its cell.

``DEQ(cell)(x)`` solves :math:`z^\star = f_\theta(z^\star, x)` for a cell
``cell(z, x) -> z`` (an ``nnx.Module`` with no mutable state: no BatchNorm, no dropout; a
cell that updates its variables when called is rejected at trace time)
with :func:`implicit_jax.fixed_point`, batched per sample, and returns ``(z_star, info)``
where ``info`` is the forward :class:`~implicit_jax.SolverInfo` (per-sample steps,
residuals, converged flags). The gradient of :math:`z^\star` is the one the ``backward``
estimator names. Options that MDEQ-style training needs:

* ``unrolled_steps=N`` in the call runs the cell as an ``N``-layer weight-tied network
  instead, differentiated by plain backprop (MDEQ's unrolled warm-up, Bai et al. 2020);
* :meth:`DEQ.jacobian_penalty` is the Jacobian regulariser of Bai et al. 2021 at the
  equilibrium;
* ``backward_tap`` forwards :func:`implicit_jax.backward_tap` to read the backward
  pass's diagnostics.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from implicit_jax.estimators import AbstractBackward, BackwardInfo, resolve_backward
from implicit_jax.fixed_point import fixed_point
from implicit_jax.nn.regularizers import jacobian_frobenius_penalty
from implicit_jax.solvers import AbstractFixedPointSolver, SolverInfo, StopCriterion, resolve_solver
from implicit_jax.solvers.stopping import StopMode


class DEQ(nnx.Module):
    """Equilibrium of ``cell(z, x)``, solved and differentiated by ``implicit_jax``.

    Args:
      cell: ``cell(z, x) -> z``, same shape and dtype in and out; ``z`` and ``x`` carry a
        leading batch axis.
      solver: forward solver name or object (see :func:`implicit_jax.fixed_point`).
      backward: backward estimator name or object.
      tol, max_steps, stop_mode, atol: the forward stopping rule, per sample (see
        :func:`implicit_jax.fixed_point`).
      throw: raise :class:`~implicit_jax.NonConvergenceError` on non-convergence.
    """

    def __init__(
        self,
        cell: nnx.Module,
        *,
        solver: str | AbstractFixedPointSolver = "anderson",
        backward: str | AbstractBackward = "implicit",
        tol: float = 1e-3,
        max_steps: int = 30,
        stop_mode: StopMode = "rel",
        atol: float = 0.0,
        throw: bool = False,
    ):
        self.cell = cell
        self.solver = resolve_solver(solver)
        self.backward = resolve_backward(backward)
        self.backward.check_solver(self.solver)
        StopCriterion(tol=tol, max_steps=max_steps, stop_mode=stop_mode, atol=atol)  # validates now, not at trace time
        self.tol, self.max_steps, self.stop_mode, self.atol, self.throw = tol, max_steps, stop_mode, atol, throw

    def _pure_cell(self):
        graphdef, state = nnx.split(self.cell)
        return _cell_map(graphdef), state

    def __call__(
        self,
        x: jax.Array,
        *,
        z0: jax.Array | None = None,
        unrolled_steps: int | None = None,
        backward_tap: BackwardInfo | None = None,
    ) -> tuple[jax.Array, SolverInfo]:
        """Return ``(z_star, info)``; ``z0`` defaults to zeros shaped like ``x``."""
        f, state = self._pure_cell()
        z0 = jnp.zeros_like(x) if z0 is None else z0
        if unrolled_steps is not None:
            return unrolled(lambda z: f(state, z, x), z0, unrolled_steps)
        return fixed_point(
            f,
            state,
            x,
            z0=z0,
            solver=self.solver,
            backward=self.backward,
            tol=self.tol,
            max_steps=self.max_steps,
            stop_mode=self.stop_mode,
            atol=self.atol,
            batched=True,
            throw=self.throw,
            return_info=True,
            backward_tap=backward_tap,
        )

    def jacobian_penalty(self, z: jax.Array, x: jax.Array, key: jax.Array, num_probes: int = 1) -> jax.Array:
        """:math:`\\|\\partial f/\\partial z\\|_F^2/d` at ``z`` (Hutchinson), differentiable in the cell's parameters."""
        return jacobian_frobenius_penalty(lambda zz: self.cell(zz, x), z, key, num_probes)


def _variable_name(path) -> str:
    keys = [getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in path]
    return ".".join(str(k) for k in keys if k != "value")


@functools.lru_cache(maxsize=64)
def _cell_map(graphdef: nnx.GraphDef):
    """``f(state, z, x)``: the cell of this graph with ``state``, one function per graph.

    The same graph gets the same function, so an eager ``fixed_point`` reuses the program it
    compiled for it.
    """

    def f(s, z, x):
        s = jax.tree_util.tree_map(lambda leaf: leaf, s)  # fresh variables at this trace level
        before = jax.tree_util.tree_flatten_with_path(s)[0]
        cell = nnx.merge(graphdef, s)
        out = cell(z, x)
        _raise_if_state_changed(before, jax.tree_util.tree_leaves(nnx.state(cell)))
        return out

    return f


def _raise_if_state_changed(before, after) -> None:
    """Raise at trace time if calling the cell replaced any of its variables (``before``: leaves with paths)."""
    changed = [_variable_name(path) for (path, old), new in zip(before, after) if old is not new]
    if changed:
        raise ValueError(
            f"The DEQ cell changed its own state when called ({', '.join(changed)}). The solver calls the "
            "cell many times per forward pass and keeps none of those updates, so they would be lost "
            "silently: BatchNorm's running statistics would never move, and dropout would draw the same "
            "mask on every training step. Use a stateless cell: nnx.LayerNorm or nnx.GroupNorm instead of "
            "BatchNorm (as MDEQ does), BatchNorm(use_running_average=True) or Dropout(deterministic=True); "
            "for variational dropout (one mask for all iterations) draw the mask outside the DEQ and pass "
            "it in with x."
        )


def unrolled(fn: Any, z0: jax.Array, num_steps: int) -> tuple[jax.Array, SolverInfo]:
    """``num_steps`` applications of ``fn`` from ``z0`` (a weight-tied network), with the last step's residual."""
    if not (isinstance(num_steps, int) and num_steps >= 1):
        raise ValueError(f"unrolled_steps must be an integer >= 1, got {num_steps!r}.")

    def body(z, _):
        fz = fn(z)
        return fz, (fz - z).reshape(z.shape[0], -1)

    z, diffs = jax.lax.scan(body, z0, None, length=num_steps)
    abs_residual = jnp.linalg.norm(diffs[-1], axis=-1)
    rel_residual = abs_residual / jnp.maximum(jnp.linalg.norm(z.reshape(z.shape[0], -1), axis=-1), 1e-30)
    steps = jnp.asarray(num_steps, jnp.int32)
    info = SolverInfo(
        steps=steps,
        num_fn_evals=steps,
        abs_residual=abs_residual,
        rel_residual=rel_residual,
        converged=jnp.zeros(z.shape[0], bool),
        num_fallbacks=jnp.zeros(z.shape[0], jnp.int32),
    )
    return z, info
