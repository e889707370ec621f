r"""Exact implicit differentiation defined by its JVP: forward mode, reverse mode and higher orders.

Differentiating :math:`z^\star = f(\theta, z^\star, x)` gives the tangent equation
(implicit function theorem; Blondel et al., NeurIPS 2022, eq. 2)

.. math:: \dot z = J \dot z + \frac{\partial f}{\partial \theta}\dot\theta + \frac{\partial f}{\partial x}\dot x,
          \qquad J = \partial f / \partial z \text{ at } z^\star .

This module gives the solve a ``jax.custom_jvp`` whose rule builds the right-hand side with
one JVP of :math:`f` and solves :math:`(I - J)\dot z = r` inside ``lax.custom_linear_solve``,
with the transposed system :math:`(I - J^\top) u = g` as its ``transpose_solve``. JAX derives
everything else from that single rule:

* forward mode (``jax.jvp``, ``jax.jacfwd``): one tangent solve per direction;
* reverse mode (``jax.grad``, ``jax.vjp``): JAX transposes the linear rule, which runs the
  adjoint solve :math:`u = J^\top u + g` and then one VJP of :math:`f`, the same work as
  :class:`~implicit_jax.estimators.implicit.Implicit`;
* higher orders (``jax.hessian``, Hessian-vector products, ``jacfwd(grad)``): the rule is
  itself differentiable, since ``custom_linear_solve`` differentiates through the matrix it
  closes over.

Both systems are solved as :class:`~implicit_jax.estimators.implicit.LinearSolveOptions`
says (a fixed-point solver per sample, or GMRES). ``Implicit`` is the leaner choice when
only gradients are needed: its ``custom_vjp`` stores only :math:`(\theta, x, z^\star)` and
can report the adjoint solve through ``backward_tap``.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from implicit_jax import _flat
from implicit_jax.errors import raise_if_backward_failed
from implicit_jax.estimators.base import AbstractBackward
from implicit_jax.estimators.implicit import LinearSolveOptions, solve_linear_fixed_point


def _zero_tangent(leaf):
    leaf = jnp.asarray(leaf)
    if jnp.issubdtype(leaf.dtype, jnp.inexact):
        return jnp.zeros_like(leaf)
    return np.zeros(leaf.shape, jax.dtypes.float0)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2, 3))
def implicit_jvp_fixed_point(config, problem, solver, criterion, inputs, z0):
    """Fixed-point solve whose ``jax.custom_jvp`` is the exact tangent solve (returns ``(z, info)``)."""
    z, info, _ = problem.solve(solver, criterion, inputs, z0)
    return z, info


@implicit_jvp_fixed_point.defjvp
def _implicit_jvp_rule(config, problem, solver, criterion, primals, tangents):
    inputs, z0 = primals
    (d_params, d_x), _ = tangents  # z* does not depend on the starting point
    params, x = inputs
    z, info = implicit_jvp_fixed_point(config, problem, solver, criterion, inputs, z0)
    layout = problem.layout

    def flat_f(p, zz, xx):
        return _flat.flatten(layout, problem.fn(p, _flat.unflatten(layout, zz), xx))

    _, rhs = jax.jvp(lambda p, xx: flat_f(p, z, xx), (params, x), (d_params, d_x))
    _, apply_j = jax.linearize(lambda zz: flat_f(params, zz, x), z)
    linear_criterion = config.adjoint_criterion(criterion)

    def solve(operator, b):
        # custom_linear_solve hands over v -> (I - A) v (A = J, or J^T when transposed);
        # the solvers iterate u = A u + b
        u, solve_info = solve_linear_fixed_point(config, lambda v: v - operator(v), b, linear_criterion)
        if criterion.throw:
            raise_if_backward_failed(solve_info, config.name)
        return u

    d_z = lax.custom_linear_solve(lambda v: v - apply_j(v), rhs, solve=solve, transpose_solve=solve)
    return (z, info), (d_z, jax.tree.map(_zero_tangent, info))


@dataclasses.dataclass(frozen=True)
class ImplicitJVP(LinearSolveOptions, AbstractBackward):
    """Exact implicit differentiation through a ``jax.custom_jvp``: ``jvp``, ``jacfwd``, ``grad`` and Hessians.

    Attributes as :class:`~implicit_jax.estimators.implicit.LinearSolveOptions` (``solver``,
    ``tol``, ``max_steps``, ``fallback``); they apply to the tangent solve and to its
    transpose, the adjoint solve. ``fixed_point(throw=True)`` raises when either does not
    converge. ``backward_tap`` is not supported (use :class:`Implicit` for it).
    """

    name = "implicit_jvp"

    def solve(self, problem, solver, criterion, inputs, z0, tap):
        if tap is not None:
            raise ValueError(
                "backward='implicit_jvp' does not report through backward_tap (its adjoint solve is "
                "derived by JAX's transposition); use backward='implicit' to read a BackwardInfo."
            )
        return implicit_jvp_fixed_point(self, problem, solver, criterion, inputs, z0)
