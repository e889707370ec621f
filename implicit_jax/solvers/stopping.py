"""When a solve stops and what it reports, shared by the fixed-point, linear and minimisation solvers.

Every solver measures an absolute residual :math:`r` (:math:`\\|f(z) - z\\|` for a fixed
point, :math:`\\|b - Mx\\|` for a linear system, :math:`\\|\\nabla g(w)\\|` for a minimiser)
and a reference norm :math:`s` (:math:`\\|f(z)\\|`, :math:`\\|b\\|`, :math:`\\|\\nabla g(w_0)\\|`),
and stops a sample when :math:`r \\le` :meth:`~implicit_jax.solvers.StopCriterion.threshold` :math:`(s)`:

=========  =================================================  =============================================
mode       test                                               convention of
=========  =================================================  =============================================
``abs``    :math:`r \\le \\text{tol}`                           jaxopt (``tol`` on the residual's l2 norm)
``rel``    :math:`r \\le \\text{tol}\\, s`                        torchdeq (``rel`` residual, the DEQ default)
``mixed``  :math:`r \\le \\text{atol} + \\text{tol}\\, s`          optimistix (``atol + rtol·|y|``, l2 norms here)
=========  =================================================  =============================================

``rel`` can never be met at a fixed point at zero (the reference norm vanishes with the
residual); ``mixed`` with ``atol > 0`` can.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp

StopMode = Literal["abs", "rel", "mixed"]
#: the stopping tests ``stop_mode=...`` accepts (see the table above).
STOP_MODES = ("abs", "rel", "mixed")


class SolverInfo(NamedTuple):
    """Diagnostics of a fixed-point solve.

    Attributes:
      steps: iterations taken (one solver step each).
      num_fn_evals: evaluations of the map (each iteration costs at least one, plus one
        at the initial point, plus line-search trials).
      abs_residual: :math:`\\|f(z) - z\\|` at the returned iterate, per sample when batched.
      rel_residual: :math:`\\|f(z) - z\\| / \\|f(z)\\|`, per sample when batched.
      converged: whether the test of ``stop_mode`` holds; never true for a non-finite residual.
      num_fallbacks: steps in which the solver could not take its own step and took a
        plain fixed-point step instead (Anderson's least squares or Broyden's update was
        numerically degenerate), per sample when batched; always 0 for other solvers.
    """

    steps: jax.Array
    num_fn_evals: jax.Array
    abs_residual: jax.Array
    rel_residual: jax.Array
    converged: jax.Array
    num_fallbacks: jax.Array | int = 0


@dataclasses.dataclass(frozen=True)
class StopCriterion:
    """When to stop: per sample, ``residual <= threshold(reference)`` (see the module docstring).

    Attributes:
      tol: tolerance; absolute for ``stop_mode="abs"``, relative (``rtol``) otherwise.
      max_steps: iteration cap.
      stop_mode: ``"rel"``, ``"abs"`` or ``"mixed"``.
      throw: raise :class:`implicit_jax.NonConvergenceError` when a solve ends unconverged.
      atol: the absolute part of the ``"mixed"`` test (ignored by the other modes).
      divergence_ratio: stop a sample (unconverged, keeping its best iterate) once its absolute
        residual exceeds this multiple of the smallest one it has reached; ``None`` never does.
        The adjoint solves of :class:`~implicit_jax.estimators.Implicit` set it, so that an iteration
        diverging on a Jacobian of spectral radius above one hands over to the GMRES
        fallback after a few steps instead of ``max_steps``.
    """

    tol: float = 1e-5
    max_steps: int = 50
    stop_mode: StopMode = "rel"
    throw: bool = False
    atol: float = 0.0
    divergence_ratio: float | None = None

    def __post_init__(self):
        if not (isinstance(self.tol, (int, float)) and self.tol >= 0):
            raise ValueError(f"tol must be a non-negative number, got {self.tol!r}.")
        if not (isinstance(self.atol, (int, float)) and self.atol >= 0):
            raise ValueError(f"atol must be a non-negative number, got {self.atol!r}.")
        if not (isinstance(self.max_steps, int) and self.max_steps >= 1):
            raise ValueError(f"max_steps must be an integer >= 1, got {self.max_steps!r}.")
        if self.stop_mode not in STOP_MODES:
            raise ValueError(f"stop_mode must be one of {STOP_MODES}, got {self.stop_mode!r}.")
        if self.divergence_ratio is not None and not (
            isinstance(self.divergence_ratio, (int, float)) and self.divergence_ratio > 1
        ):
            raise ValueError(f"divergence_ratio must be a number > 1 or None, got {self.divergence_ratio!r}.")
        if self.atol and self.stop_mode != "mixed":
            raise ValueError(f"atol={self.atol!r} is used by stop_mode='mixed' only; got stop_mode={self.stop_mode!r}.")

    def threshold(self, reference: jax.Array) -> jax.Array:
        """The largest residual that passes, given the reference norm(s) ``reference``."""
        if self.stop_mode == "abs":
            return jnp.full_like(reference, self.tol)
        if self.stop_mode == "rel":
            return self.tol * reference
        return self.atol + self.tol * reference
