"""When a solve stops and what it reports, shared by the fixed-point and linear solvers."""

from __future__ import annotations

import dataclasses
from typing import Literal, NamedTuple

import jax

StopMode = Literal["abs", "rel"]
STOP_MODES = ("abs", "rel")


class SolverInfo(NamedTuple):
    """Diagnostics of a fixed-point solve.

    Attributes:
      steps: iterations taken (one solver step each).
      num_fn_evals: evaluations of the map (each iteration costs at least one, plus one
        at the initial point, plus line-search trials).
      abs_residual: :math:`\\|f(z) - z\\|` at the returned iterate, per sample when batched.
      rel_residual: :math:`\\|f(z) - z\\| / \\|f(z)\\|`, per sample when batched.
      converged: whether the residual named by ``stop_mode`` is ``<= tol``; never true
        for a non-finite residual.
    """

    steps: jax.Array
    num_fn_evals: jax.Array
    abs_residual: jax.Array
    rel_residual: jax.Array
    converged: jax.Array


@dataclasses.dataclass(frozen=True)
class StopCriterion:
    """When to stop: per sample, ``residual <= tol`` where the residual is ``stop_mode``'s.

    Attributes:
      tol: tolerance on the residual.
      max_steps: iteration cap.
      stop_mode: ``"rel"`` (:math:`\\|f(z) - z\\| / \\|f(z)\\|`) or ``"abs"`` (:math:`\\|f(z) - z\\|`).
      throw: raise :class:`implicit_jax.NonConvergenceError` when a solve ends unconverged.
    """

    tol: float = 1e-5
    max_steps: int = 50
    stop_mode: StopMode = "rel"
    throw: bool = False

    def __post_init__(self):
        if not (isinstance(self.tol, (int, float)) and self.tol >= 0):
            raise ValueError(f"tol must be a non-negative number, got {self.tol!r}.")
        if not (isinstance(self.max_steps, int) and self.max_steps >= 1):
            raise ValueError(f"max_steps must be an integer >= 1, got {self.max_steps!r}.")
        if self.stop_mode not in STOP_MODES:
            raise ValueError(f"stop_mode must be one of {STOP_MODES}, got {self.stop_mode!r}.")
