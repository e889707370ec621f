r"""Hypergradient estimators for :func:`implicit_jax.argmin`.

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

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax

from implicit_jax import quasi_newton as qn
from implicit_jax.bilevel.argmin_base import AbstractArgminBackward, CustomVJPArgminBackward, cg_info, custom_argmin

_DEFAULT_CG_STEPS = 100


def _check_positive_int(owner: str, field: str, value, minimum: int = 1):
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= minimum):
        raise ValueError(f"{owner}({field}=...) must be an integer >= {minimum}, got {value!r}.")


@dataclasses.dataclass(frozen=True)
class ArgminImplicit(CustomVJPArgminBackward):
    """Exact implicit differentiation: conjugate gradient on :math:`H u = v` with Hessian-vector products.

    Attributes:
      tol: relative tolerance :math:`\\|Hu - v\\| \\le \\text{tol}\\,\\|v\\|` (default: the inner ``tol``).
      max_steps: CG iteration cap (HVPs).
    """

    tol: float | None = None
    max_steps: int = _DEFAULT_CG_STEPS

    name = "implicit"

    def __post_init__(self):
        _check_positive_int("ArgminImplicit", "max_steps", self.max_steps)
        if self.tol is not None and not self.tol >= 0:
            raise ValueError(f"ArgminImplicit(tol=...) must be >= 0, got {self.tol!r}.")


def implicit_rule(config: ArgminImplicit, ctx, v):
    tol = ctx.criterion.tol if config.tol is None else config.tol
    u, info = ctx.cg(v, jnp.zeros_like(v), tol, config.max_steps)
    return u, cg_info(info, v)


ArgminImplicit._custom_solve = custom_argmin(implicit_rule, "implicit")


@dataclasses.dataclass(frozen=True)
class ArgminShine(CustomVJPArgminBackward):
    """SHINE for bi-level problems: reuse the inner solver's L-BFGS inverse-Hessian estimate.

    :math:`u = B v` with :math:`B` from the two-loop recursion on the inner solver's final
    secant pairs (in ring-buffer order): no Hessian-vector product at all.

    Attributes:
      opa_every: outer-problem awareness (Ramzi et al. 2022, Sec. 3.2): every ``opa_every``
        inner steps add the secant pair along :math:`e \\propto B \\nabla_w F`; needs
        ``argmin(..., outer_loss=F)``. 0 disables it. The paper's HO code used 5, with a memory of 60.
      fallback: check the estimate with one HVP and, when
        :math:`\\|H u - v\\| > \\text{fallback\\_tol}\\,\\|v\\|`, replace it by a CG solve warm-started at it
        (never silently wrong; costs CG steps only when it triggers).
      fallback_tol: threshold of that check.
      refine: CG steps on :math:`H u = v` always run from the SHINE estimate (0: none).
      refine_tol: CG tolerance of the refine and fallback solves (default: the inner ``tol``).
      max_fallback_steps: CG cap of the fallback solve.
    """

    opa_every: int = 0
    fallback: bool = False
    fallback_tol: float = 0.1
    refine: int = 0
    refine_tol: float | None = None
    max_fallback_steps: int = _DEFAULT_CG_STEPS

    name = "shine"

    def __post_init__(self):
        _check_positive_int("ArgminShine", "opa_every", self.opa_every, 0)
        _check_positive_int("ArgminShine", "refine", self.refine, 0)
        _check_positive_int("ArgminShine", "max_fallback_steps", self.max_fallback_steps)
        if not self.fallback_tol > 0:
            raise ValueError(f"ArgminShine(fallback_tol=...) must be > 0, got {self.fallback_tol!r}.")

    def outer_awareness(self) -> int:
        return self.opa_every


def shine_rule(config: ArgminShine, ctx, v):
    u = qn.lbfgs_inverse_hvp(ctx.solver_state.memory, v)
    tol = ctx.criterion.tol if config.refine_tol is None else config.refine_tol
    if config.refine:
        u, info = ctx.cg(v, u, tol, config.refine)
        return _maybe_fall_back(config, ctx, v, u, tol, info.steps)
    return _maybe_fall_back(config, ctx, v, u, tol, 0)


def _maybe_fall_back(config, ctx, v, u, tol, steps):
    if not config.fallback:
        return u, ctx.residual_info(u, v, steps=steps)
    bad = jnp.linalg.norm(ctx.hvp(u) - v) > config.fallback_tol * jnp.linalg.norm(v)
    bad = bad | ~jnp.all(jnp.isfinite(u))
    u0 = jnp.where(jnp.all(jnp.isfinite(u)), u, jnp.zeros_like(u))
    solved = lax.cond(bad, lambda u0: ctx.cg(v, u0, tol, config.max_fallback_steps)[0], lambda u0: u0, u0)
    return solved, ctx.residual_info(solved, v, steps=steps, fallback_fraction=bad.astype(v.dtype))


ArgminShine._custom_solve = custom_argmin(shine_rule, "shine")


@dataclasses.dataclass(frozen=True)
class ArgminNeumann(CustomVJPArgminBackward):
    """Truncated Neumann series :math:`u = \\alpha \\sum_{j=0}^{k-1} (I - \\alpha H)^j v` (Lorraine et al. 2020, eq. 9).

    It converges to :math:`H^{-1} v` as :math:`k \\to \\infty` when :math:`0 < \\alpha < 2/L`
    (:math:`L` the largest Hessian eigenvalue). ``k`` HVPs.

    Attributes:
      k: number of terms.
      step_size: :math:`\\alpha`.
    """

    k: int = 20
    step_size: float = 0.1

    name = "neumann"

    def __post_init__(self):
        _check_positive_int("ArgminNeumann", "k", self.k)
        if not self.step_size > 0:
            raise ValueError(f"ArgminNeumann(step_size=...) must be > 0, got {self.step_size!r}.")


def neumann_rule(config: ArgminNeumann, ctx, v):
    def term(_, carry):
        power, total = carry  # power = (I - aH)^j v
        power = power - config.step_size * ctx.hvp(power)
        return power, total + power

    _, total = lax.fori_loop(0, config.k - 1, term, (v, v))
    u = config.step_size * total
    return u, ctx.residual_info(u, v, steps=config.k)


ArgminNeumann._custom_solve = custom_argmin(neumann_rule, "neumann")


@dataclasses.dataclass(frozen=True)
class ArgminJFB(CustomVJPArgminBackward):
    """Identity inverse :math:`u = v`: the hypergradient :math:`-(\\partial^2_{\\lambda w} g)^\\top v`, no HVP."""

    name = "jfb"


def jfb_rule(config: ArgminJFB, ctx, v):
    return v, ctx.residual_info(v, v)


ArgminJFB._custom_solve = custom_argmin(jfb_rule, "jfb")


@dataclasses.dataclass(frozen=True)
class ArgminUnroll(AbstractArgminBackward):
    r"""Backpropagate through every inner iteration (``max_steps`` masked steps in ``lax.scan``).

    The derivative of the computed iterate, with every line-search step size held constant
    (the cubic interpolation that picks it is differentiable only inside its bracket, and NaN
    where unused). Memory grows with ``max_steps``. It approaches the implicit hypergradient
    only after many inner steps: the linearised recursion
    :math:`\dot w_{k+1} = (I - \alpha_k H_k \nabla^2 g)\,\dot w_k - \alpha_k H_k \partial_\lambda \nabla g`
    (the term from :math:`H_k`'s own dependence on :math:`\lambda` multiplies :math:`\nabla g \to 0`)
    then settles at :math:`-\nabla^2 g^{-1} \partial_\lambda \nabla g`. A solve that ends in one or
    two steps (a warm start, or an exact line search on a quadratic whose gradient points at
    the minimiser) leaves a truncated derivative, zero in the extreme, where the step size
    carried the dependence. Found by a random ridge-regression sweep in stop 13; use
    ``"implicit"`` as the reference.
    """

    name = "unroll"

    def solve(self, problem, minimizer, criterion, theta, w0, outer, tap):
        if tap is not None:
            raise ValueError("backward_tap reports an adjoint solve; backward='unroll' has none. Drop backward_tap.")
        w, info, _ = problem.solve(minimizer, criterion, theta, w0, unrolled=True)
        return w, info


ARGMIN_BACKWARDS = {
    "implicit": ArgminImplicit,
    "shine": ArgminShine,
    "neumann": ArgminNeumann,
    "jfb": ArgminJFB,
    "unroll": ArgminUnroll,
}
