r"""What every fixed-point estimator shares: the problem, its adjoint context and the interface.

Notation: :math:`z^\star = f(\theta, z^\star, x)`, :math:`J = \partial f / \partial z` at
:math:`z^\star`, :math:`g` the incoming cotangent. Exact implicit differentiation gives

.. math:: \bar\theta = (\partial f / \partial \theta)^\top u, \quad u = (I - J^\top)^{-1} g,

and each estimator is a different way of producing :math:`u` (or, for the phantom
unrolled gradient, of producing :math:`\bar\theta` directly). The fixed point is the root of
:math:`f(\theta, z, x) - z`, so the estimators defined by a cotangent rule get their
``jax.custom_vjp`` from the shared :func:`implicit_jax.adjoint.custom_root`, with
:class:`FixedPointProblem` as the problem and :class:`FixedPointContext` as what the rule sees.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from implicit_jax import _flat
from implicit_jax._deprecated import moved_names
from implicit_jax.adjoint import AdjointContext, BackwardInfo, linear_residual, unsolved_info
from implicit_jax.solvers.fixed_point.base import AbstractFixedPointSolver, iterate
from implicit_jax.solvers.stopping import SolverInfo, StopCriterion

PyTree = Any


class FixedPointProblem(NamedTuple):
    """Static description of the problem: ``fn(params, z, x)`` on pytrees and the state layout.

    Its differentiable inputs are the pair ``(params, x)``.
    """

    fn: Callable[[PyTree, PyTree, PyTree], PyTree]
    layout: _flat.StateLayout

    def flat_fn(self, params: PyTree, x: PyTree) -> Callable[[jax.Array], jax.Array]:
        return _flat.flat_map(self.layout, lambda z: self.fn(params, z, x))

    def solve(self, solver, criterion, inputs, z0, *, unrolled: bool = False):
        params, x = inputs
        return iterate(solver, self.flat_fn(params, x), z0, criterion, unrolled=unrolled)

    def backward_context(self, solver, criterion, inputs, z, state, want_info) -> FixedPointContext:
        return FixedPointContext(self, solver, criterion, inputs, z, state, want_info)


class FixedPointContext(AdjointContext):
    """The adjoint context of a fixed point: ``inputs = (params, x)``, ``y = z*`` (flat)."""

    __slots__ = ()

    @property
    def params(self) -> PyTree:
        return self.inputs[0]

    @property
    def x(self) -> PyTree:
        return self.inputs[1]

    @property
    def z(self) -> jax.Array:
        return self.y

    def linearize(self):
        """``(jvp_t, pull)``: ``u -> J^T u`` and ``u -> (df/dparams^T u, df/dx^T u)``, sharing one linearisation."""
        layout = self.problem.layout

        def flat_f(params, z, x):
            return _flat.flatten(layout, self.problem.fn(params, _flat.unflatten(layout, z), x))

        _, vjp = jax.vjp(flat_f, self.params, self.z, self.x)

        def jvp_t(u):
            return vjp(u)[1]

        def pull(u):
            d_params, _, d_x = vjp(u)
            return d_params, d_x

        return jvp_t, pull

    def info_without_solve(self, jvp_t, u: jax.Array | None, g: jax.Array, *, steps=0, fallback_fraction=0.0) -> BackwardInfo:
        """Info for rules without an adjoint solve.

        The residual :math:`\\|u - J^\\top u - g\\|` of ``u`` costs one VJP, so it is computed
        only when a tap asked for it and the rule forms a ``u`` at all; it is NaN otherwise.
        """
        residual = linear_residual(jvp_t, u, g) if (self.want_info and u is not None) else None
        return unsolved_info(residual, g.dtype, steps=steps, fallback_fraction=fallback_fraction)


class AbstractBackward(abc.ABC):
    """A fixed-point backward estimator: a frozen, hashable configuration with a ``solve`` entry point."""

    #: name used in error messages and in ``fixed_point(backward=<name>)``.
    name: str = ""

    def check_solver(self, solver: AbstractFixedPointSolver) -> None:  # noqa: B027 (optional hook; default: any solver)
        """Raise if this estimator cannot run with ``solver`` (default: any solver works)."""

    def without_rescue(self) -> AbstractBackward | None:
        """This estimator without the rescue its backward runs where its first attempt fails, or ``None`` if it has none.

        An eager call runs that one first and the whole estimator only when its backward
        reports a failure (``BackwardInfo.converged`` below one), so that the rescue is
        compiled only when some gradient needs it.
        """
        return None

    @abc.abstractmethod
    def solve(
        self,
        problem: FixedPointProblem,
        solver: AbstractFixedPointSolver,
        criterion: StopCriterion,
        inputs: tuple[PyTree, PyTree],
        z0: jax.Array,
        tap: BackwardInfo | None,
    ) -> tuple[jax.Array, SolverInfo]:
        """``(z*, info)`` for the flat start ``z0``; ``inputs = (params, x)`` get this estimator's gradient."""


__getattr__ = moved_names(__name__, {name: "implicit_jax.adjoint" for name in ("backward_tap", "solver_backward_info")})
