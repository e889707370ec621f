r"""What the hypergradient methods for unrolled training share.

The outer objective is :math:`F(\varphi) = \mathcal{L}(s_T(\varphi), \varphi)` with
:math:`s_{t+1} = \text{step}(s_t, \varphi, t)` for :math:`t = 0, \dots, T-1`. A method
returns :math:`F(\varphi)` and an estimate of :math:`\nabla F(\varphi)`. The hyperparameters
are handled as one flat vector of size :math:`N` (``ravel_pytree``) so that direction-based
methods (FDS's basis directions, (FG)²U's random ones) can ``vmap`` over them.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

PyTree = Any


class UnrolledProblem(NamedTuple):
    """``step(state, hparams, t) -> state`` run ``num_steps`` times, then ``outer_loss(state, hparams)``."""

    step: Callable[[PyTree, PyTree, jax.Array], PyTree]
    outer_loss: Callable[[PyTree, PyTree], jax.Array]
    num_steps: int
    unravel: Callable[[jax.Array], PyTree]  # flat hyperparameters -> pytree

    def run(self, hparams: PyTree, state: PyTree, start: int, length: int) -> PyTree:
        """Steps ``start .. start+length-1`` from ``state`` in one ``lax.scan``.

        The step index rides in the carry (not as a scanned ``arange``), so nothing but the
        reverse-mode residuals grows with ``length``.
        """

        def body(carry, _):
            s, t = carry
            return (self.step(s, hparams, t), t + 1), None

        (state, _), _ = lax.scan(body, (state, jnp.asarray(start, jnp.int32)), None, length=length)
        return state

    def objective(self, h_flat: jax.Array, state0: PyTree) -> jax.Array:
        """:math:`F(\\varphi)` on the flat hyperparameters."""
        hparams = self.unravel(h_flat)
        return self.outer_loss(self.run(hparams, state0, 0, self.num_steps), hparams)


def directional_derivatives(
    problem: UnrolledProblem, h_flat: jax.Array, state0: PyTree, directions: jax.Array, chunk_size: int | None = None
) -> tuple[jax.Array, jax.Array]:
    """:math:`(F(\\varphi), [\\nabla F \\cdot v_i]_i)` for the rows :math:`v_i` of ``directions``, by forward mode.

    One ``jax.jvp`` through the whole unrolled training per direction: the state's tangent
    is propagated alongside the state (Hessian-vector products through the training step),
    so memory does not grow with the number of steps. Directions are ``vmap``-ed, in
    chunks of ``chunk_size`` (``lax.map``) to bound memory when there are many.
    """

    def along(v):
        return jax.jvp(lambda h: problem.objective(h, state0), (h_flat,), (v,))

    if chunk_size is None or chunk_size >= directions.shape[0]:
        values, slopes = jax.vmap(along)(directions)
    else:
        values, slopes = lax.map(along, directions, batch_size=chunk_size)
    return values[0], slopes


class AbstractUnrolledMethod(abc.ABC):
    """A hypergradient method for :func:`implicit_jax.unrolled_hypergradient`: a frozen, hashable configuration."""

    name: str = ""
    #: whether the method draws random directions (and so needs ``key``).
    needs_key: bool = False

    def check(self, num_steps: int, num_hparams: int) -> None:  # noqa: B027 (optional hook; default: no constraint)
        """Raise if the method cannot run on this horizon / number of hyperparameters."""

    @abc.abstractmethod
    def value_and_grad(
        self, problem: UnrolledProblem, h_flat: jax.Array, state0: PyTree, key: jax.Array | None
    ) -> tuple[jax.Array, jax.Array]: ...
