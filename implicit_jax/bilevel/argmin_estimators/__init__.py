r"""Hypergradient estimators for :func:`implicit_jax.argmin`, one module each.

With :math:`H = \nabla^2_w g(w^\star, \lambda)`, :math:`v = \partial F / \partial w^\star` and
the hypergradient :math:`-(\partial^2_{\lambda w} g)^\top u`, the estimators differ in :math:`u`:

========================  ================================================================
``"implicit"``            :math:`u = H^{-1} v` by conjugate gradient with HVPs (exact up to tol)
``"shine"``               :math:`u = B v`, :math:`B` the inner L-BFGS inverse-Hessian estimate
                          (Ramzi et al., ICLR 2022, Sec. 3.1), optionally OPA, fallback, refine
``"neumann"``             :math:`u = \alpha \sum_{j<k} (I - \alpha H)^j v` (Lorraine et al., AISTATS 2020, eq. 9)
``"jfb"``                 :math:`u = v` (identity inverse; Fung et al. 2022's Jacobian-free analogue)
``"unroll"``              reverse-mode autodiff through the inner solver's iterations
========================  ================================================================
"""

from implicit_jax.bilevel.argmin_estimators.base import AbstractArgminBackward, ArgminContext, ArgminProblem
from implicit_jax.bilevel.argmin_estimators.implicit import ArgminImplicit
from implicit_jax.bilevel.argmin_estimators.jfb import ArgminJFB
from implicit_jax.bilevel.argmin_estimators.neumann import ArgminNeumann
from implicit_jax.bilevel.argmin_estimators.shine import ArgminShine
from implicit_jax.bilevel.argmin_estimators.unroll import ArgminUnroll

#: backward names accepted by ``argmin(backward=...)``, mapped to default configurations.
ARGMIN_BACKWARDS = {
    "implicit": ArgminImplicit,
    "shine": ArgminShine,
    "neumann": ArgminNeumann,
    "jfb": ArgminJFB,
    "unroll": ArgminUnroll,
}

__all__ = [
    "ARGMIN_BACKWARDS",
    "AbstractArgminBackward",
    "ArgminContext",
    "ArgminImplicit",
    "ArgminJFB",
    "ArgminNeumann",
    "ArgminProblem",
    "ArgminShine",
    "ArgminUnroll",
]
