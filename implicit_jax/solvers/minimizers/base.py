r"""What every inner minimiser of :func:`implicit_jax.argmin` shares: interface, diagnostics, driver.

A minimiser is a small immutable configuration object with two methods acting on the
flat parameter vector ``w`` (shape ``(n,)``):

* ``init(w, value, grad) -> state``: its memory; the state is a ``NamedTuple`` with a
  ``memory`` field holding an :class:`implicit_jax.quasi_newton.LBFGSMemory` of the
  curvature pairs :math:`(s_k, y_k) = (w_{k+1} - w_k, \nabla g_{k+1} - \nabla g_k)` seen so
  far, which SHINE's backward pass reads;
* ``step(value_and_grad, w, value, grad, state) -> (w, value, grad, state, num_evals)``.

:func:`minimize` runs it until :math:`\|\nabla_w g\| \le \text{tol}` (``stop_mode="abs"``)
or :math:`\|\nabla_w g\| \le \text{tol}\,\|\nabla_w g(w_0)\|` (``"rel"``), or
:math:`\|\nabla_w g\| \le \text{atol} + \text{tol}\,\|\nabla_w g(w_0)\|` (``"mixed"``), or ``max_steps``.
It can also add outer-problem-aware secant pairs (OPA, Ramzi et al. 2022, Sec. 3.2):
every ``opa_every`` steps, with :math:`d = \nabla_w F(w)` the outer gradient and
:math:`H` the current inverse-Hessian estimate,

.. math:: e = \frac{\|s_\text{last}\|}{\|H d\|} H d, \qquad (s, y) = (e, \nabla g(w + e) - \nabla g(w)),

one extra gradient evaluation, so that :math:`H` is accurate along the direction the
hypergradient needs.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from implicit_jax import quasi_newton as qn
from implicit_jax.solvers.stopping import StopCriterion

ValueAndGrad = Callable[[jax.Array], tuple[jax.Array, jax.Array]]


class MinimizeInfo(NamedTuple):
    """Diagnostics of an inner minimisation.

    Attributes:
      steps: iterations taken.
      num_grad_evals: evaluations of :math:`(g, \\nabla_w g)` (line-search trials and OPA included).
      value: :math:`g(w)` at the returned point.
      grad_norm: :math:`\\|\\nabla_w g(w)\\|` at the returned point.
      converged: whether the gradient norm met the tolerance; never true when it is not finite.
    """

    steps: jax.Array
    num_grad_evals: jax.Array
    value: jax.Array
    grad_norm: jax.Array
    converged: jax.Array


class AbstractMinimizer(abc.ABC):
    """Interface of the inner minimisers. Subclasses are frozen (hashable) dataclasses."""

    #: size of the secant-pair memory kept in the state (read by SHINE).
    memory: int = 30

    @abc.abstractmethod
    def init(self, w: jax.Array, value: jax.Array, grad: jax.Array) -> Any: ...

    @abc.abstractmethod
    def step(self, value_and_grad: ValueAndGrad, w, value, grad, state, *, unrolled: bool = False): ...


class OuterAwareness(NamedTuple):
    """OPA configuration for :func:`minimize`: the outer gradient ``w -> dF/dw`` and the period."""

    outer_grad: Callable[[jax.Array], jax.Array]
    every: int


def opa_pair(memory: qn.LBFGSMemory, value_and_grad: ValueAndGrad, w, grad, outer_grad) -> qn.LBFGSMemory:
    """Add the OPA secant pair along :math:`e \\propto H \\nabla_w F(w)`, scaled to the last step's length."""
    direction = qn.lbfgs_inverse_hvp(memory, outer_grad(w))
    last = memory.s[(memory.count - 1) % memory.s.shape[0]]
    scale = jnp.linalg.norm(last) / (jnp.linalg.norm(direction) + jnp.finfo(w.dtype).tiny)
    e = scale * direction
    _, grad_e = value_and_grad(w + e)
    return qn.lbfgs_update(memory, e, grad_e - grad)


class _Carry(NamedTuple):
    w: jax.Array
    value: jax.Array
    grad: jax.Array
    state: Any
    steps: jax.Array
    num_grad_evals: jax.Array


def minimize(
    minimizer: AbstractMinimizer,
    value_and_grad: ValueAndGrad,
    w0: jax.Array,
    criterion: StopCriterion,
    *,
    opa: OuterAwareness | None = None,
    unrolled: bool = False,
) -> tuple[jax.Array, MinimizeInfo, Any]:
    """Minimise from the flat point ``w0``; returns ``(w, info, state)``.

    ``unrolled=True`` runs exactly ``max_steps`` masked iterations in ``lax.scan`` so that
    reverse-mode autodiff can differentiate through the solver (memory grows with
    ``max_steps``); the default ``lax.while_loop`` stops as soon as the tolerance is met.
    """
    if unrolled and opa is not None:
        raise ValueError("outer-problem awareness (OPA) only serves SHINE's backward; it cannot be combined with unrolling.")
    value0, grad0 = value_and_grad(w0)
    threshold = criterion.threshold(jnp.linalg.norm(grad0))

    def unfinished(c: _Carry) -> jax.Array:
        norm = jnp.linalg.norm(c.grad)
        return (norm > threshold) & jnp.isfinite(norm) & jnp.isfinite(c.value)

    def body(c: _Carry) -> _Carry:
        w, value, grad, state, evals = minimizer.step(value_and_grad, c.w, c.value, c.grad, c.state, unrolled=unrolled)
        steps = c.steps + 1
        if opa is not None:
            due = (steps % opa.every == 0) & (state.memory.count > 0)
            memory = lax.cond(due, lambda m: opa_pair(m, value_and_grad, w, grad, opa.outer_grad), lambda m: m, state.memory)
            state = state._replace(memory=memory)
            evals = evals + due.astype(jnp.int32)
        return _Carry(w, value, grad, state, steps, c.num_grad_evals + evals)

    carry = _Carry(w0, value0, grad0, minimizer.init(w0, value0, grad0), jnp.zeros((), jnp.int32), jnp.ones((), jnp.int32))
    if unrolled:

        def scan_body(c, _):
            go = unfinished(c) & (c.steps < criterion.max_steps)
            return lax.cond(go, body, lambda c: c, c), None

        carry, _ = lax.scan(scan_body, carry, None, length=criterion.max_steps)
    else:
        carry = lax.while_loop(lambda c: unfinished(c) & (c.steps < criterion.max_steps), body, carry)
    grad_norm = jnp.linalg.norm(carry.grad)
    converged = (grad_norm <= threshold) & jnp.isfinite(grad_norm) & jnp.isfinite(carry.value)
    info = MinimizeInfo(carry.steps, carry.num_grad_evals, carry.value, grad_norm, converged)
    return carry.w, info, carry.state
