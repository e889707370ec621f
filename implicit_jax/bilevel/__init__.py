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
    "FDS",
    "FG2U",
    "MINIMIZERS",
    "UNROLLED_METHODS",
    "AbstractArgminBackward",
    "AbstractUnrolledMethod",
    "ArgminImplicit",
    "ArgminJFB",
    "ArgminNeumann",
    "ArgminShine",
    "ArgminUnroll",
    "Reverse",
    "Truncated",
    "argmin",
    "resolve_argmin_backward",
    "resolve_method",
    "resolve_minimizer",
    "shared_index",
    "shared_schedule",
    "unrolled_hypergradient",
]
