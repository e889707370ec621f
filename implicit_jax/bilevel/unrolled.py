r"""Hypergradients through unrolled training: ``unrolled_hypergradient(step, hparams, state0, T, outer_loss, method=...)``.

For :math:`F(\varphi) = \mathcal{L}(s_T(\varphi), \varphi)`, :math:`s_{t+1} = \text{step}(s_t, \varphi, t)`:

================  ===========================================  =====================  ==================
method            estimate                                     memory                 reference
================  ===========================================  =====================  ==================
``"reverse"``     exact, backprop through all :math:`T` steps  grows with :math:`T`   Maclaurin et al. 2015
``Truncated(k)``  backprop through the last :math:`k` steps    grows with :math:`k`   Shaban et al. 2019
``"fds"``         exact, forward mode, one tangent per         :math:`O(|s| N)`       Micaelli & Storkey 2021
                  hyperparameter (shared schedules keep
                  :math:`N` small)
``FG2U(b)``       unbiased, :math:`b` random JVP directions    :math:`O(|s| b)`       Shen et al. 2024
================  ===========================================  =====================  ==================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from implicit_jax import _flat, _partition
from implicit_jax._checks import check_float_scalar, describe, eval_shape_or_explain
from implicit_jax._deprecated import moved_names
from implicit_jax._registry import resolve
from implicit_jax.bilevel.unrolled_methods import UNROLLED_METHODS, AbstractUnrolledMethod, UnrolledProblem

PyTree = Any


def resolve_method(method, options: Mapping[str, Any] | None = None) -> AbstractUnrolledMethod:
    """An unrolled-hypergradient method name (with ``options``, e.g. ``{"num_directions": 8}``) or configured object."""
    return resolve(
        method,
        UNROLLED_METHODS,
        AbstractUnrolledMethod,
        "method",
        "Truncated(k=20), FDS(chunk_size=4) or FG2U(num_directions=8)",
        options,
    )


def _check(step, outer_loss, hparams, state0, num_steps) -> None:
    if not (isinstance(num_steps, int) and not isinstance(num_steps, bool) and num_steps >= 1):
        raise ValueError(f"num_steps must be an integer >= 1 (the number of training steps to unroll), got {num_steps!r}.")
    h_leaves = jax.tree_util.tree_leaves(hparams)
    if not h_leaves:
        raise ValueError("hparams has no array leaves: there is nothing to differentiate.")
    for leaf in h_leaves:
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise TypeError(f"hparams must hold floating-point arrays (they are differentiated), got {describe(hparams)}.")
    if not any(jnp.issubdtype(jnp.result_type(leaf), jnp.floating) for leaf in jax.tree_util.tree_leaves(state0)):
        raise TypeError(
            f"the training state has no floating-point leaf ({describe(state0)}), so step(state, hparams, t) is not "
            "differentiable and every hypergradient would be silently zero. Use float arrays for the weights."
        )
    t = jax.ShapeDtypeStruct((), jnp.int32)
    out = eval_shape_or_explain(step, "step(state, hparams, t)", {"state": state0, "hparams": hparams, "t": t})
    _flat.check_same_layout(state0, out, what="step(state, hparams, t)")
    loss = eval_shape_or_explain(outer_loss, "outer_loss(state, hparams)", {"state": state0, "hparams": hparams})
    check_float_scalar(loss, "outer_loss(state, hparams)")


def unrolled_hypergradient(
    step: Callable[[PyTree, PyTree, jax.Array], PyTree],
    hparams: PyTree,
    state0: PyTree,
    num_steps: int,
    outer_loss: Callable[[PyTree, PyTree], jax.Array],
    *,
    method: str | AbstractUnrolledMethod = "reverse",
    key: jax.Array | None = None,
) -> tuple[jax.Array, PyTree]:
    """The outer loss after ``num_steps`` training steps and its hypergradient.

    Args:
      step: one differentiable training step ``step(state, hparams, t) -> state`` (same
        structure, shapes and dtypes); ``t`` is the int32 step index, so minibatches and
        schedules can depend on it (use :func:`shared_schedule` for FDS's shared values).
      hparams: the hyperparameters (any pytree of floats; non-array leaves, such as an
        Equinox module's functions, ride along and get ``None`` in the hypergradient).
      state0: the initial training state (weights, momentum, ...; an Equinox model works:
        its non-array leaves ride along untouched).
      num_steps: :math:`T >= 1`.
      outer_loss: ``outer_loss(state_T, hparams) -> scalar`` (e.g. validation loss).
      method: ``"reverse"``, ``"truncated"``, ``"fds"``, ``"fg2u"`` or a configured object
        (``Truncated(k)``, ``FDS(chunk_size=...)``, ``FG2U(num_directions=b, distribution=...)``).
      key: PRNG key for the random directions of ``FG2U``.

    Returns:
      ``(value, hypergrad)``: :math:`F(\\varphi)` and the estimate of :math:`\\nabla F` with the structure of ``hparams``.
    """
    method = resolve_method(method)
    hparams_treedef = None
    if _partition.has_static_leaves(hparams) or _partition.has_static_leaves(state0):  # e.g. an Equinox model
        step, outer_loss, hparams, state0, hparams_treedef = _on_array_leaves(step, outer_loss, hparams, state0)
    _check(step, outer_loss, hparams, state0, num_steps)
    h_flat, unravel = ravel_pytree(hparams)
    method.check(num_steps, h_flat.size)
    if method.needs_key and key is None:
        raise ValueError(f"method {method!r} draws random directions; pass key=jax.random.key(...).")
    problem = UnrolledProblem(step, outer_loss, num_steps, unravel)
    value, grad = method.value_and_grad(problem, h_flat, state0, key)
    if hparams_treedef is not None:  # None at the non-array leaves, as equinox.filter_grad gives
        return value, jax.tree_util.tree_unflatten(hparams_treedef, unravel(grad))
    return value, unravel(grad)


def _on_array_leaves(step, outer_loss, hparams, state0):
    """``step`` and ``outer_loss`` on the array leaves of ``hparams`` and ``state0``; the other leaves ride along.

    Returns ``(step, outer_loss, hparams arrays, state arrays, hparams treedef)``; the arrays
    are lists with ``None`` at the non-array leaves (which ``ravel_pytree`` and the loops skip).
    """
    h_arrays, h_static = _partition.partition(hparams)
    s_arrays, s_static = _partition.partition(state0)

    def array_step(state, h, t):
        out = step(_partition.combine(state, s_static), _partition.combine(h, h_static), t)
        return _partition.partition(out)[0]

    def array_loss(state, h):
        return outer_loss(_partition.combine(state, s_static), _partition.combine(h, h_static))

    return array_step, array_loss, h_arrays, s_arrays, h_static.treedef


__getattr__ = moved_names(
    __name__, {"Reverse": "implicit_jax.bilevel.unrolled_methods", "Truncated": "implicit_jax.bilevel.unrolled_methods"}
)
