"""Split a pytree into its array leaves (differentiated) and everything else (carried as is).

Model objects from Equinox (``equinox.nn.MLP`` holds its activation function as a leaf),
haiku-style containers or user dataclasses may hold leaves that are not arrays: functions,
strings, enum values. JAX transformations can only trace arrays, so :func:`partition`
separates them, as ``equinox.partition(tree, equinox.is_array)`` does, and :func:`combine`
puts the tree back together inside the traced function. Python numbers count as arrays (JAX
converts them), so a ``float`` hyperparameter keeps receiving a gradient.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np

PyTree = Any
_NUMBERS = (bool, int, float, complex)


def is_array_leaf(leaf: Any) -> bool:
    """Whether JAX can trace ``leaf``: a JAX or NumPy array, a NumPy scalar or a Python number."""
    return isinstance(leaf, (jax.Array, np.ndarray, np.generic)) or type(leaf) in _NUMBERS


class Static(NamedTuple):
    """The non-array leaves of a tree and where they go (hashable by identity, never traced)."""

    treedef: Any
    leaves: tuple[Any, ...]  # None where the leaf is an array


def partition(tree: PyTree) -> tuple[list[Any], Static]:
    """``(arrays, static)``: the array leaves as a list (``None`` in place of the others), and the rest."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    arrays = [leaf if is_array_leaf(leaf) else None for leaf in leaves]
    static = tuple(None if is_array_leaf(leaf) else leaf for leaf in leaves)
    return arrays, Static(treedef, static)


def combine(arrays: list[Any], static: Static) -> PyTree:
    """The tree that :func:`partition` split, with ``arrays`` (possibly traced) in place of its array leaves."""
    leaves = [s if a is None else a for a, s in zip(arrays, static.leaves)]
    return jax.tree_util.tree_unflatten(static.treedef, leaves)


def has_static_leaves(tree: PyTree) -> bool:
    return any(not is_array_leaf(leaf) for leaf in jax.tree_util.tree_leaves(tree))


def static_leaf_types(tree: PyTree) -> list[str]:
    """Type names of the non-array leaves (for error messages)."""
    return sorted({type(leaf).__name__ for leaf in jax.tree_util.tree_leaves(tree) if not is_array_leaf(leaf)})
