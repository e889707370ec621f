r"""Phantom gradients (Geng, Zhang, Bai, Wang & Lin, NeurIPS 2021).

With :math:`B = \lambda J + (1 - \lambda) I` at :math:`z^\star`:

* UPG, the unrolling-based phantom gradient (their eq. 16): from
  :math:`z_0 = \mathrm{stop\_gradient}(z^\star)` run :math:`k` damped steps
  :math:`z_{t+1} = \lambda f(\theta, z_t, x) + (1-\lambda) z_t` and backpropagate
  through them. Costs :math:`k` evaluations and :math:`k` VJPs in the backward pass.
* NPG, the Neumann-series phantom gradient (their eq. 17):
  :math:`u = \lambda \sum_{s=0}^{k-1} (B^\top)^s g`, then
  :math:`(\partial f/\partial\theta)^\top u`. Costs :math:`k` VJPs.

:math:`k = 1` gives :math:`\lambda` times the Jacobian-free gradient for every
:math:`\lambda`; at an exact fixed point UPG equals NPG; both tend to the exact
gradient as :math:`k` grows when :math:`\|B\| < 1`. Paper defaults: ``k=5``,
``damping=0.5`` (CIFAR), 0.6 (ImageNet), 0.8 (language).
"""

from __future__ import annotations

import dataclasses

import jax
from jax import lax

from implicit_jax.adjoint import custom_root
from implicit_jax.estimators.base import AbstractBackward


@dataclasses.dataclass(frozen=True)
class _PhantomConfig(AbstractBackward):
    k: int = 5
    damping: float = 0.5

    def __post_init__(self):
        if not (isinstance(self.k, int) and self.k >= 1):
            raise ValueError(f"{type(self).__name__}(k=...) must be an integer >= 1, got {self.k!r}.")
        if not 0.0 < self.damping <= 1.0:
            raise ValueError(f"{type(self).__name__}(damping=...) must lie in (0, 1], got {self.damping!r}.")

    def damped_step(self, fn, z):
        return self.damping * fn(z) + (1.0 - self.damping) * z


def phantom_unroll_rule(config: PhantomUnroll, ctx, g):
    """Eq. 16: backprop through ``k`` damped steps from the stopped fixed point."""

    def unrolled(params, x):
        fn = ctx.problem.flat_fn(params, x)
        return lax.fori_loop(0, config.k, lambda _, z: config.damped_step(fn, z), ctx.z)

    _, vjp = jax.vjp(unrolled, ctx.params, ctx.x)
    return vjp(g), ctx.info_without_solve(None, None, g, steps=config.k)


def phantom_neumann_rule(config: PhantomNeumann, ctx, g):
    r"""Eq. 17: :math:`u = \lambda \sum_{s<k} (B^\top)^s g`, then one VJP."""
    jvp_t, pull = ctx.linearize()

    def term(_, carry):
        v, total = carry
        v = config.damped_step(jvp_t, v)
        return v, total + v

    _, total = lax.fori_loop(1, config.k, term, (g, g))
    u = config.damping * total
    return pull(u), ctx.info_without_solve(jvp_t, u, g, steps=config.k)


phantom_unroll_fixed_point = custom_root(phantom_unroll_rule, "phantom_unroll")
phantom_neumann_fixed_point = custom_root(phantom_neumann_rule, "phantom_neumann")


@dataclasses.dataclass(frozen=True)
class PhantomUnroll(_PhantomConfig):
    """UPG (eq. 16): backprop through ``k`` damped steps started at the (stopped) fixed point."""

    name = "phantom_unroll"

    def solve(self, problem, solver, criterion, inputs, z0, tap):
        return phantom_unroll_fixed_point(self, problem, solver, criterion, inputs, z0, tap)


@dataclasses.dataclass(frozen=True)
class PhantomNeumann(_PhantomConfig):
    """NPG (eq. 17): :math:`u = \\lambda \\sum_{s<k} (\\lambda J^\\top + (1-\\lambda) I)^s g`."""

    name = "phantom_neumann"

    def solve(self, problem, solver, criterion, inputs, z0, tap):
        return phantom_neumann_fixed_point(self, problem, solver, criterion, inputs, z0, tap)
