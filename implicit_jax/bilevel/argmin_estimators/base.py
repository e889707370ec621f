r"""What every ``argmin`` hypergradient estimator shares: the problem, its adjoint context and the interface.

For :math:`w^\star(\lambda) = \arg\min_w g(w, \lambda)` with :math:`g` smooth and strongly
convex in :math:`w` near :math:`w^\star`, the implicit function theorem on the root
:math:`\nabla_w g(w^\star, \lambda) = 0` gives, for an outer cotangent :math:`v = \partial F/\partial w^\star`,

.. math:: \bar\lambda = -\left(\partial^2_{\lambda w} g\right)^\top u, \qquad u = \left(\nabla^2_w g\right)^{-1} v

(e.g. Pedregosa 2016, eq. 3; Lorraine et al. 2020, eq. 4). Each estimator is a different
way of producing :math:`u` (CG, the L-BFGS estimate, a Neumann series, the identity) and
gets its ``jax.custom_vjp`` from the shared :func:`implicit_jax.adjoint.custom_root`, with
:class:`ArgminProblem` as the problem and :class:`ArgminContext` (Hessian-vector products,
the mixed second-derivative pull-back) as what the rule sees.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from implicit_jax.adjoint import AdjointContext, BackwardInfo, unsolved_info
from implicit_jax.solvers.linear.cg import CG
from implicit_jax.solvers.minimizers.base import AbstractMinimizer, MinimizeInfo, OuterAwareness, minimize
from implicit_jax.solvers.stopping import SolverInfo, StopCriterion

PyTree = Any


class ArgminProblem(NamedTuple):
    """Static description: ``objective(w_flat, theta) -> scalar`` and, for OPA, the outer loss.

    Its differentiable inputs are the pair ``(theta, outer_consts)``: ``theta`` gets the
    hypergradient; ``outer_consts`` (what ``outer(w, outer_consts)`` closes over, used only
    to steer the inner solver) gets a zero cotangent.

    Attributes:
      objective: the inner objective on the flat inner variables.
      outer: ``None``, or ``(outer_fn, every)`` for outer-problem awareness: ``outer_fn(w, outer_consts)``
        is the outer loss and ``every`` the period in inner steps.
    """

    objective: Callable[[jax.Array, PyTree], jax.Array]
    outer: tuple[Callable[[jax.Array, PyTree], jax.Array], int] | None = None

    def value_and_grad(self, theta: PyTree) -> Callable[[jax.Array], tuple[jax.Array, jax.Array]]:
        return jax.value_and_grad(lambda w: self.objective(w, theta))

    def solve(self, minimizer, criterion, inputs, w0, *, unrolled: bool = False):
        theta, outer_consts = inputs
        opa = None
        if self.outer is not None:
            outer_fn, every = self.outer
            opa = OuterAwareness(jax.grad(lambda w: outer_fn(w, outer_consts)), every)
        return minimize(minimizer, self.value_and_grad(theta), w0, criterion, opa=opa, unrolled=unrolled)

    def backward_context(self, minimizer, criterion, inputs, w, state, want_info) -> ArgminContext:
        return ArgminContext(self, minimizer, criterion, inputs, w, state, want_info)


class ArgminContext(AdjointContext):
    """The adjoint context of an inner minimum: ``inputs = (theta, outer_consts)``, ``y = w*`` (flat)."""

    __slots__ = ()

    @property
    def theta(self) -> PyTree:
        return self.inputs[0]

    @property
    def w(self) -> jax.Array:
        return self.y

    def hvp(self, u: jax.Array) -> jax.Array:
        """:math:`\\nabla^2_w g(w^\\star, \\lambda)\\, u` (forward-over-reverse)."""
        grad = jax.grad(self.problem.objective)
        return jax.jvp(lambda w: grad(w, self.theta), (self.w,), (u,))[1]

    def pull(self, u: jax.Array) -> tuple[PyTree, PyTree]:
        """The input cotangents for the adjoint ``u``: :math:`-(\\partial^2_{\\lambda w} g)^\\top u` for ``theta``, zeros for ``outer_consts``."""
        _, vjp = jax.vjp(lambda theta: jax.grad(self.problem.objective)(self.w, theta), self.theta)
        d_theta = jax.tree_util.tree_map(jnp.negative, vjp(u)[0])
        return d_theta, jax.tree_util.tree_map(jnp.zeros_like, self.inputs[1])

    def cg(self, v: jax.Array, u0: jax.Array, tol: float, max_steps: int) -> tuple[jax.Array, SolverInfo]:
        """:math:`\\nabla^2 g\\, u = v` by CG from ``u0`` to :math:`\\|\\nabla^2 g\\, u - v\\| \\le \\text{tol}\\,\\|v\\|`."""
        return CG().solve(self.hvp, v, u0, StopCriterion(tol=tol, max_steps=max_steps, stop_mode="rel"))

    def info_without_solve(self, u: jax.Array, v: jax.Array, *, steps=0, fallback_fraction=0.0) -> BackwardInfo:
        """Info for rules without a solve: :math:`\\|\\nabla^2 g\\, u - v\\|` (one HVP) only if a tap asked."""
        residual = None
        if self.want_info:
            abs_res = jnp.linalg.norm(self.hvp(u) - v)
            residual = (abs_res, abs_res / jnp.linalg.norm(v))
        return unsolved_info(residual, v.dtype, steps=steps, fallback_fraction=fallback_fraction)


def check_int_option(owner: str, field: str, value, minimum: int = 1) -> None:
    """ValueError naming ``owner(field=...)`` unless ``value`` is an integer ``>= minimum``."""
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= minimum):
        raise ValueError(f"{owner}({field}=...) must be an integer >= {minimum}, got {value!r}.")


class AbstractArgminBackward(abc.ABC):
    """A hypergradient estimator for :func:`implicit_jax.argmin`: frozen, hashable configuration."""

    #: name used in error messages and in ``argmin(backward=<name>)``.
    name: str = ""

    def outer_awareness(self) -> int:
        """OPA period in inner steps (0: this estimator does not use the outer loss)."""
        return 0

    @abc.abstractmethod
    def solve(
        self,
        problem: ArgminProblem,
        minimizer: AbstractMinimizer,
        criterion: StopCriterion,
        inputs: tuple[PyTree, PyTree],
        w0: jax.Array,
        tap: BackwardInfo | None,
    ) -> tuple[jax.Array, MinimizeInfo]:
        """``(w*, info)`` from the flat start ``w0``; ``inputs = (theta, outer_consts)``."""
