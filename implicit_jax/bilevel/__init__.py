"""Bi-level problems: hypergradients of inner optima (``argmin``) and of unrolled training."""

from implicit_jax.bilevel.argmin import MINIMIZERS, argmin, resolve_argmin_backward, resolve_minimizer
from implicit_jax.bilevel.argmin_backwards import (
    ARGMIN_BACKWARDS,
    ArgminImplicit,
    ArgminJFB,
    ArgminNeumann,
    ArgminShine,
    ArgminUnroll,
)
from implicit_jax.bilevel.fds import FDS, shared_index, shared_schedule
from implicit_jax.bilevel.fg2u import FG2U
from implicit_jax.bilevel.unrolled import UNROLLED_METHODS, Reverse, Truncated, resolve_method, unrolled_hypergradient
from implicit_jax.bilevel.unrolled_base import AbstractUnrolledMethod

__all__ = [
    "AbstractUnrolledMethod",
    "FDS",
    "FG2U",
    "Reverse",
    "Truncated",
    "UNROLLED_METHODS",
    "resolve_method",
    "shared_index",
    "shared_schedule",
    "unrolled_hypergradient",
    "ARGMIN_BACKWARDS",
    "ArgminImplicit",
    "ArgminJFB",
    "ArgminNeumann",
    "ArgminShine",
    "ArgminUnroll",
    "MINIMIZERS",
    "argmin",
    "resolve_argmin_backward",
    "resolve_minimizer",
]
