r"""Exact implicit differentiation.

Solves the adjoint equation :math:`u = J^\top u + g` with VJPs only (never forming
:math:`J`), then returns :math:`(\partial f/\partial\theta)^\top u` and
:math:`(\partial f/\partial x)^\top u` (implicit function theorem; Bai et al. 2019,
eq. 5; Blondel et al. 2022, eq. 4). The adjoint is a fixed-point problem in its own
right, so any forward solver can solve it, per sample, warm-started at
:math:`u_0 = g`; a linear solver (``GMRES(restart=20)``, or the name ``"gmres"``) solves
:math:`(I - J^\top) u = g`, restarted GMRES also per sample (:class:`implicit_jax.solvers.GMRES`),
which converges even where the fixed-point iteration on the adjoint does not (spectral
radius of :math:`J` above one). The default, ``solver="auto"``, forms :math:`I - J^\top` from
:math:`n` VJPs and solves it directly (:class:`implicit_jax.solvers.Dense`) when the state is small
(``AUTO_DIRECT_MAX_ENTRIES``), and iterates with Anderson and the GMRES fallback otherwise.
"""

from __future__ import annotations

import dataclasses
import warnings

import jax
import jax.numpy as jnp
from jax import lax

from implicit_jax.adjoint import BackwardInfo, custom_root, solver_backward_info
from implicit_jax.estimators.base import AbstractBackward
from implicit_jax.solvers import (
    GMRES,
    SOLVERS,
    AbstractFixedPointSolver,
    AbstractLinearSolver,
    Anderson,
    Dense,
    SolverInfo,
    StopCriterion,
    iterate,
    resolve_solver,
)

#: A sample's adjoint iteration stops, unconverged, once its residual is this many times the
#: smallest it reached: a diverging iteration (spectral radius of J above one) then reaches the
#: fallback after a few steps instead of ``max_steps``.
ADJOINT_DIVERGENCE_RATIO = 1e4

#: ``solver="auto"`` solves directly (:class:`~implicit_jax.solvers.Dense`) when the system's
#: matrices hold at most this many entries in all (``batch * n * n``: one sample of 32 units,
#: or 16 samples of 8), and iterates (Anderson, with the ``fallback``) above. Up to this size
#: forming the matrices takes no more products than an iterative solve takes steps, runs as
#: fast, is exact, and compiles to no loop at all.
AUTO_DIRECT_MAX_ENTRIES = 1024

#: names accepted by ``Implicit(solver=...)`` and ``ImplicitJVP(solver=...)``: ``"auto"``, the fixed-point solvers, GMRES and Dense.
ADJOINT_SOLVERS = ("auto", *sorted(SOLVERS), "gmres", "dense")


@dataclasses.dataclass(frozen=True)
class LinearSolveOptions:
    r"""How the linear system :math:`u = A u + b` of implicit differentiation is solved.

    Shared by :class:`Implicit` (:math:`A = J^\top`, the adjoint) and
    :class:`~implicit_jax.estimators.implicit_jvp.ImplicitJVP` (:math:`A = J` for tangents,
    :math:`J^\top` for cotangents).

    Attributes:
      solver: ``"auto"`` (the default): :class:`~implicit_jax.solvers.Dense` on the formed
        matrices when they hold at most ``AUTO_DIRECT_MAX_ENTRIES`` entries in all (small
        states), else ``Anderson()`` with the ``fallback``. Or a fixed-point solver iterating
        :math:`u \mapsto A u + b` (``Anderson()``...), a linear solver for
        :math:`(I - A) u = b` (``GMRES(restart=20)``, ``Dense()``), or one of the names
        ``ADJOINT_SOLVERS``; names other than ``"auto"`` are resolved to default-configured objects.
      tol: tolerance (default: the forward ``tol``), on the residual
        :math:`\|u - A u - b\|` in the forward's ``stop_mode``.
      max_steps: iteration cap (default: the forward ``max_steps``).
      gmres_restart: deprecated; pass ``solver=GMRES(restart=...)``.
      fallback: a linear solver (default ``GMRES()``) re-solving :math:`(I - A) u = b` for the
        samples where a fixed-point ``solver`` ended unconverged: the iteration
        :math:`u \mapsto A u + b` diverges when :math:`A` has spectral radius at least one,
        and would otherwise hand back an exploding gradient. ``BackwardInfo.fallback_fraction``
        reports the share of samples rescued. ``None``: no fallback (the failure is still
        reported, and raised with ``throw=True``). A fixed-point ``solver`` stops a sample whose
        residual grows ``ADJOINT_DIVERGENCE_RATIO`` times its lowest, so a diverging
        sample is handed over after a few steps.
    """

    solver: str | AbstractFixedPointSolver | AbstractLinearSolver = "auto"
    tol: float | None = None
    max_steps: int | None = None
    gmres_restart: int | None = None
    fallback: AbstractLinearSolver | None = GMRES()  # noqa: RUF009 (a frozen dataclass: one shared default is safe)

    def __post_init__(self):
        kind = type(self).__name__
        solver = self.solver
        if isinstance(solver, str):
            if solver not in ADJOINT_SOLVERS:
                raise ValueError(
                    f"unknown {kind}(solver={solver!r}); valid names are {list(ADJOINT_SOLVERS)}, or a configured solver object such as GMRES(restart=20)."
                )
            named: dict[str, str | AbstractLinearSolver] = {"auto": "auto", "gmres": GMRES(), "dense": Dense()}
            solver = named[solver] if solver in named else resolve_solver(solver)
        if not (solver == "auto" or isinstance(solver, (AbstractFixedPointSolver, AbstractLinearSolver))):
            raise TypeError(
                f"{kind}(solver=...) takes a name in {list(ADJOINT_SOLVERS)}, a fixed-point solver or a linear solver object, got {solver!r}."
            )
        if self.gmres_restart is not None:
            warnings.warn(
                f"{kind}(gmres_restart=...) is deprecated; pass solver=GMRES(restart={self.gmres_restart!r}).",
                DeprecationWarning,
                stacklevel=3,
            )
            if not isinstance(solver, GMRES):
                raise ValueError(f"{kind}(gmres_restart=...) applies to the GMRES solver only, got solver={self.solver!r}.")
            solver = GMRES(restart=self.gmres_restart)
            object.__setattr__(self, "gmres_restart", None)
        object.__setattr__(self, "solver", solver)
        if self.fallback is not None and not isinstance(self.fallback, AbstractLinearSolver):
            raise TypeError(
                f"{kind}(fallback=...) takes a linear solver object such as GMRES(restart=20), or None; got {self.fallback!r}."
            )
        if self.tol is not None and not self.tol >= 0:
            raise ValueError(f"{kind}(tol=...) must be >= 0, got {self.tol!r}.")
        if self.max_steps is not None and not (isinstance(self.max_steps, int) and self.max_steps >= 1):
            raise ValueError(f"{kind}(max_steps=...) must be an integer >= 1, got {self.max_steps!r}.")

    def solver_for(self, batch: int, n: int) -> AbstractFixedPointSolver | AbstractLinearSolver:
        """The solver of a ``(batch, n)`` system: ``solver``, or what ``"auto"`` picks for that size."""
        if not isinstance(self.solver, str):
            return self.solver
        return Dense() if batch * n * n <= AUTO_DIRECT_MAX_ENTRIES else Anderson()

    def adjoint_criterion(self, forward: StopCriterion) -> StopCriterion:
        return StopCriterion(
            tol=forward.tol if self.tol is None else self.tol,
            max_steps=forward.max_steps if self.max_steps is None else self.max_steps,
            stop_mode=forward.stop_mode,
            atol=forward.atol,
            divergence_ratio=ADJOINT_DIVERGENCE_RATIO,
        )


def solve_linear_fixed_point(
    config: LinearSolveOptions, apply_a, b: jax.Array, criterion: StopCriterion
) -> tuple[jax.Array, BackwardInfo]:
    r"""Solve :math:`u = A u + b` (``apply_a`` applies the linear map :math:`A`), per sample, warm-started at :math:`u_0 = b`.

    A fixed-point solver iterates the map itself; a linear solver solves :math:`(I - A) u = b`
    (GMRES with one Krylov space per sample, or a factorisation of each sample's formed matrix; its relative
    residual is over :math:`\|b\|`). ``"auto"`` picks by the size of ``b`` (:meth:`LinearSolveOptions.solver_for`).
    Samples that a fixed-point solver leaves unconverged are re-solved by ``config.fallback``
    (:func:`rescue_unconverged`).
    """

    def residual_map(v):
        return v - apply_a(v)

    solver = config.solver_for(*b.shape)
    if isinstance(solver, AbstractLinearSolver):
        u, solver_info = solver.solve(residual_map, b, b, criterion)
        return u, solver_backward_info(solver_info, b.dtype)
    u, solver_info, _ = iterate(solver, lambda u: apply_a(u) + b, b, criterion)
    if config.fallback is None:
        return u, solver_backward_info(solver_info, b.dtype)
    return rescue_unconverged(config.fallback, residual_map, b, u, solver_info, criterion)


def rescue_unconverged(
    fallback: AbstractLinearSolver, matvec, b: jax.Array, u: jax.Array, info: SolverInfo, criterion: StopCriterion
) -> tuple[jax.Array, BackwardInfo]:
    """Re-solve ``matvec(u) = b`` with ``fallback`` for the rows where ``info.converged`` is false.

    Runs only when some row failed (``lax.cond``; under ``vmap`` both branches run, and the
    converged rows start at their solution, so they cost one product). A failed row starts
    again from ``b`` (its iterate may have exploded). The rescued rows' residuals are the
    fallback's; ``steps`` adds the fallback's to the fixed-point solver's.
    """
    failed = ~info.converged

    def rescue(u):
        v, rescued = fallback.solve(matvec, b, jnp.where(failed[:, None], b, u), criterion)
        pick = lambda new, old: jnp.where(failed, new, old)
        return (
            jnp.where(failed[:, None], v, u),
            info.steps + rescued.steps,
            pick(rescued.abs_residual, info.abs_residual),
            pick(rescued.rel_residual, info.rel_residual),
            pick(rescued.converged, info.converged),
        )

    def keep(u):
        return u, info.steps, info.abs_residual, info.rel_residual, info.converged

    u, steps, abs_res, rel_res, converged = lax.cond(jnp.any(failed), rescue, keep, u)
    merged = SolverInfo(steps, info.num_fn_evals, abs_res, rel_res, converged, info.num_fallbacks)
    return u, solver_backward_info(merged, b.dtype, fallback_fraction=jnp.mean(failed.astype(b.dtype)))


def implicit_rule(config: Implicit, ctx, g):
    r""":math:`u = (I - J^\top)^{-1} g` by the configured solver, then :math:`(\partial f/\partial(\theta, x))^\top u`."""
    jvp_t, pull = ctx.linearize()
    u, info = solve_linear_fixed_point(config, jvp_t, g, config.adjoint_criterion(ctx.criterion))
    return pull(u), info


implicit_fixed_point = custom_root(implicit_rule, "implicit")


@dataclasses.dataclass(frozen=True)
class Implicit(LinearSolveOptions, AbstractBackward):
    r"""Exact implicit differentiation (reverse mode, ``jax.custom_vjp``).

    The adjoint :math:`u = J^\top u + g` is solved as :class:`LinearSolveOptions` says.
    """

    name = "implicit"

    def solve(self, problem, solver, criterion, inputs, z0, tap):
        return implicit_fixed_point(self, problem, solver, criterion, inputs, z0, tap)

    def without_rescue(self) -> Implicit | None:
        """The fixed-point adjoint solve alone (``fallback=None``), when there is a fallback to defer."""
        if self.fallback is None or isinstance(self.solver, AbstractLinearSolver):
            return None
        return dataclasses.replace(self, fallback=None)
