"""Bi-level problems: hypergradients of inner optima (``argmin``) and of unrolled training."""

from implicit_jax.bilevel.argmin import MINIMIZERS, argmin, resolve_argmin_backward, resolve_minimizer
from implicit_jax.bilevel.argmin_estimators import (
    ARGMIN_BACKWARDS,
    AbstractArgminBackward,
    ArgminImplicit,
    ArgminJFB,
    ArgminNeumann,
    ArgminShine,
    ArgminUnroll,
)
from implicit_jax.bilevel.unrolled import resolve_method, unrolled_hypergradient
from implicit_jax.bilevel.unrolled_methods import (
    FDS,
    FG2U,
    UNROLLED_METHODS,
    AbstractUnrolledMethod,
    Reverse,
    Truncated,
    shared_index,
    shared_schedule,
)

__all__ = [
    "ARGMIN_BACKWARDS",
    "AbstractArgminBackward",
    "AbstractUnrolledMethod",
    "ArgminImplicit",
    "ArgminJFB",
    "ArgminNeumann",
    "ArgminShine",
    "ArgminUnroll",
    "FDS",
    "FG2U",
    "MINIMIZERS",
    "Reverse",
    "Truncated",
    "UNROLLED_METHODS",
    "argmin",
    "resolve_argmin_backward",
    "resolve_method",
    "resolve_minimizer",
    "shared_index",
    "shared_schedule",
    "unrolled_hypergradient",
]
