r"""The identity inverse for ``argmin``: :math:`u = v`, the analogue of Jacobian-free backprop (Fung et al., AAAI 2022).

The hypergradient is :math:`-(\partial^2_{\lambda w} g)^\top v`: one mixed second-derivative
VJP, no Hessian-vector product. Exact only when :math:`\nabla^2_w g = I`.
"""

from __future__ import annotations

import dataclasses

from implicit_jax.adjoint import custom_root
from implicit_jax.bilevel.argmin_estimators.base import AbstractArgminBackward


def jfb_rule(config: ArgminJFB, ctx, v):
    """:math:`u = v`."""
    return ctx.pull(v), ctx.info_without_solve(v, v)


jfb_argmin = custom_root(jfb_rule, "jfb")


@dataclasses.dataclass(frozen=True)
class ArgminJFB(AbstractArgminBackward):
    """Identity inverse :math:`u = v`: the hypergradient :math:`-(\\partial^2_{\\lambda w} g)^\\top v`, no HVP."""

    name = "jfb"

    def solve(self, problem, minimizer, criterion, inputs, w0, tap):
        return jfb_argmin(self, problem, minimizer, criterion, inputs, w0, tap)
