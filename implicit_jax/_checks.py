"""Trace-time checks of user functions, with messages that name the structures the user passed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def describe(tree: Any) -> str:
    """``{'a': 'float32[3]'}``-style summary of a pytree's dtypes and shapes."""
    return str(jax.tree_util.tree_map(lambda a: f"{jnp.result_type(a)}{list(jnp.shape(a))}", tree))


def eval_shape_or_explain(fn: Callable, signature: str, named_args: dict[str, Any]) -> Any:
    """``jax.eval_shape(fn, *args)``; on failure re-raise with every argument's structure.

    Structure mismatches (a missing key, a wrong index or attribute, a wrong type) become a
    ``TypeError``; shape errors stay ``ValueError``.
    """
    try:
        return jax.eval_shape(fn, *named_args.values())
    except Exception as error:
        kind = ValueError if isinstance(error, ValueError) else TypeError
        described = ", ".join(f"{name} = {describe(value)}" for name, value in named_args.items())
        raise kind(f"{signature} failed when called with {described}: {type(error).__name__}: {error}") from error


def check_float_scalar(out: Any, signature: str) -> None:
    if not (isinstance(out, jax.ShapeDtypeStruct) and out.shape == () and jnp.issubdtype(out.dtype, jnp.floating)):
        raise ValueError(f"{signature} must return a float scalar, got {describe(out)}.")
