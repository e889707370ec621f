r"""Jacobian-free backpropagation (Fung et al., AAAI 2022, eq. 11).

Replaces :math:`(I - J^\top)^{-1}` by the identity: :math:`u = g`, so the gradient is
:math:`(\partial f/\partial\theta)^\top g`, one VJP. A descent direction when
:math:`\|J\| < 1` is small enough (their Thm. 3.1); it is also the one-step phantom
gradient of Geng et al. (2021) with :math:`\lambda = 1`.
"""

from __future__ import annotations

import dataclasses

from implicit_jax.adjoint import custom_root
from implicit_jax.estimators.base import AbstractBackward


def jfb_rule(config: JFB, ctx, g):
    """Eq. 11: :math:`u = g`, one VJP."""
    jvp_t, pull = ctx.linearize()
    return pull(g), ctx.info_without_solve(jvp_t, g, g)


jfb_fixed_point = custom_root(jfb_rule, "jfb")


@dataclasses.dataclass(frozen=True)
class JFB(AbstractBackward):
    """Jacobian-free backprop: :math:`u = g`."""

    name = "jfb"

    def solve(self, problem, solver, criterion, inputs, z0, tap):
        return jfb_fixed_point(self, problem, solver, criterion, inputs, z0, tap)
