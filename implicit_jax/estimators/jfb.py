r"""Jacobian-free backpropagation (Fung et al., AAAI 2022, eq. 11).

Replaces :math:`(I - J^\top)^{-1}` by the identity: :math:`u = g`, so the gradient is
:math:`(\partial f/\partial\theta)^\top g`, one VJP. A descent direction when
:math:`\|J\| < 1` is small enough (their Thm. 3.1); it is also the one-step phantom
gradient of Geng et al. (2021) with :math:`\lambda = 1`.
"""

from __future__ import annotations

import dataclasses

from implicit_jax.estimators.base import CustomVJPBackward, custom_fixed_point, no_adjoint_info


@dataclasses.dataclass(frozen=True)
class JFB(CustomVJPBackward):
    """Jacobian-free backprop: :math:`u = g`."""

    name = "jfb"


def jfb_rule(config: JFB, ctx, g):
    jvp_t, pull = ctx.linearize()
    return pull(g), no_adjoint_info(ctx, jvp_t, g, g)


jfb_fixed_point = custom_fixed_point(jfb_rule, "jfb")
JFB._custom_solve = jfb_fixed_point
