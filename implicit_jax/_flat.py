"""A flat ``(batch, n)`` view of a pytree state, so solvers can stay simple.

Every solver in :mod:`implicit_jax.solvers` works on a 2-D array whose rows are
independent systems (samples). ``batched=True`` means the leading axis of every
leaf of ``z`` indexes samples (the DEQ convention: one system per example); with
``batched=False`` the whole pytree is one system and the view has a single row.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

PyTree = Any

#: How to pose a complex problem to solvers that work in real arithmetic.
COMPLEX_ADVICE = (
    "The solvers' norms, Gram matrices and Krylov products are real inner products, and a map of "
    "complex z is in general only real-linearisable (not holomorphic), so pass the real and imaginary "
    "parts as two real leaves instead, e.g. z = (z.real, z.imag) with f rebuilding z = re + 1j * im; "
    "every solver and estimator is exact on that real view."
)


class StateLayout(NamedTuple):
    """How a pytree state maps to and from its ``(batch, n)`` flat view."""

    treedef: Any
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[Any, ...]
    batched: bool
    dtype: Any  # the common dtype of the flat view

    @property
    def batch_size(self) -> int:
        return self.shapes[0][0] if self.batched else 1

    @property
    def sizes(self) -> tuple[int, ...]:
        start = 1 if self.batched else 0
        return tuple(math.prod(s[start:]) for s in self.shapes)


def layout_of(z: PyTree, batched: bool) -> StateLayout:
    """Describe ``z``; checks that batched leaves share one leading batch size."""
    leaves, treedef = jax.tree_util.tree_flatten(z)
    if not leaves:
        raise ValueError("the fixed-point state z is an empty pytree; it needs at least one array leaf.")
    shapes = tuple(tuple(jnp.shape(leaf)) for leaf in leaves)
    dtypes = tuple(jnp.result_type(leaf) for leaf in leaves)
    for dt in dtypes:
        if not jnp.issubdtype(dt, jnp.inexact):
            raise TypeError(
                f"the fixed-point state must hold floating-point arrays, got a leaf of dtype {dt}; "
                "cast z0 (or x, which z0 defaults to) to a float dtype."
            )
        if jnp.issubdtype(dt, jnp.complexfloating):
            raise TypeError(f"complex states are not supported (got a leaf of dtype {dt}). {COMPLEX_ADVICE}")
    if batched:
        if any(len(s) == 0 for s in shapes):
            raise ValueError(f"batched=True needs a leading batch axis on every leaf of z, got shapes {shapes}.")
        if len({s[0] for s in shapes}) != 1:
            raise ValueError(f"batched=True needs the same leading batch size on every leaf of z, got shapes {shapes}.")
    return StateLayout(treedef, shapes, dtypes, batched, jnp.result_type(*dtypes))


def flatten(layout: StateLayout, z: PyTree) -> jax.Array:
    """Pytree -> ``(batch, n)`` array in the layout's common dtype."""
    rows = layout.batch_size
    leaves = jax.tree_util.tree_leaves(z)
    parts = [jnp.reshape(leaf, (rows, -1)).astype(layout.dtype) for leaf in leaves]
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=1)


def unflatten(layout: StateLayout, flat: jax.Array) -> PyTree:
    """``(batch, n)`` array -> pytree with the original shapes and dtypes."""
    leaves, start = [], 0
    for shape, dtype, size in zip(layout.shapes, layout.dtypes, layout.sizes):
        leaves.append(jnp.reshape(flat[:, start : start + size], shape).astype(dtype))
        start += size
    return jax.tree_util.tree_unflatten(layout.treedef, leaves)


def flat_map(layout: StateLayout, fn: Callable[[PyTree], PyTree]) -> Callable[[jax.Array], jax.Array]:
    """Lift ``fn: pytree -> pytree`` (same layout) to ``(batch, n) -> (batch, n)``."""
    return lambda flat: flatten(layout, fn(unflatten(layout, flat)))


def check_same_layout(z_in: PyTree, z_out: PyTree, what: str = "f(params, z, x)") -> None:
    """Raise a readable error when ``z_out`` differs from ``z_in`` in structure, shape or dtype.

    Works on shape-dtype structs, so it runs at trace time (see ``jax.eval_shape``).
    """
    in_leaves, in_tree = jax.tree_util.tree_flatten(z_in)
    out_leaves, out_tree = jax.tree_util.tree_flatten(z_out)
    if in_tree != out_tree:  # type: ignore[operator]  # PyTreeDef compares; its stub says not
        raise ValueError(
            f"{what} must return a state with the same pytree structure as z: z is {in_tree}, but it returned {out_tree}."
        )
    for i, (a, b) in enumerate(zip(in_leaves, out_leaves)):
        if jnp.shape(a) != jnp.shape(b):
            raise ValueError(
                f"{what} must keep the shape of z: leaf {i} of z has shape {jnp.shape(a)}, but it returned shape {jnp.shape(b)}."
            )
        if jnp.result_type(a) != jnp.result_type(b):
            raise TypeError(
                f"{what} must keep the dtype of z: leaf {i} of z has dtype {jnp.result_type(a)}, "
                f"but it returned dtype {jnp.result_type(b)} (shape {jnp.shape(b)})."
            )


def accumulation_dtype(dtype) -> Any:
    """The dtype that reductions over a state of ``dtype`` accumulate in: at least float32.

    bfloat16 keeps 8 significant bits, float16 11: a sum of squares over thousands of entries
    in them loses the residual's leading digits. The state stays in its own dtype; norms,
    inner products and the small dense algebra of the solvers use this one (the policy of
    optax's moment statistics under mixed precision).
    """
    return jnp.promote_types(dtype, jnp.float32)


def row_norm(a: jax.Array) -> jax.Array:
    """Euclidean norm of each row of a ``(batch, n)`` array, accumulated in :func:`accumulation_dtype`."""
    a = a.astype(accumulation_dtype(a.dtype))
    return jnp.sqrt(jnp.sum(jnp.square(a), axis=-1))


def safe_divide(num: jax.Array, den: jax.Array, tiny: float | None = None) -> tuple[jax.Array, jax.Array]:
    """``num / den`` where ``|den| > tiny``, else 0; returns ``(quotient, ok)``.

    Uses the double-``where`` pattern so that gradients through the masked branch stay finite.
    """
    if tiny is None:
        tiny = float(jnp.finfo(jnp.result_type(den)).tiny) ** 0.5
    ok = jnp.abs(den) > tiny
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0), ok
