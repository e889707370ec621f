r"""Backpropagation through the inner solver's iterations (reverse-mode unrolling, Maclaurin et al. 2015).

No ``custom_vjp``: the inner solve runs ``max_steps`` masked steps in ``lax.scan`` and JAX
differentiates through them, so memory grows with ``max_steps``.
"""

from __future__ import annotations

import dataclasses

from implicit_jax.bilevel.argmin_estimators.base import AbstractArgminBackward


@dataclasses.dataclass(frozen=True)
class ArgminUnroll(AbstractArgminBackward):
    r"""Backpropagate through every inner iteration (``max_steps`` masked steps in ``lax.scan``).

    The derivative of the computed iterate, with every line-search step size held constant
    (the cubic interpolation that picks it is differentiable only inside its bracket, and NaN
    where unused). It approaches the implicit hypergradient only after many inner steps: the
    linearised recursion
    :math:`\dot w_{k+1} = (I - \alpha_k H_k \nabla^2 g)\,\dot w_k - \alpha_k H_k \partial_\lambda \nabla g`
    (the term from :math:`H_k`'s own dependence on :math:`\lambda` multiplies :math:`\nabla g \to 0`)
    then settles at :math:`-\nabla^2 g^{-1} \partial_\lambda \nabla g`. A solve that ends in one or
    two steps (a warm start, or an exact line search on a quadratic whose gradient points at
    the minimiser) leaves a truncated derivative, zero in the extreme, where the step size
    carried the dependence; use ``"implicit"`` as the reference.
    """

    name = "unroll"

    def solve(self, problem, minimizer, criterion, inputs, w0, tap):
        if tap is not None:
            raise ValueError("backward_tap reports an adjoint solve; backward='unroll' has none. Drop backward_tap.")
        w, info, _ = problem.solve(minimizer, criterion, inputs, w0, unrolled=True)
        return w, info
