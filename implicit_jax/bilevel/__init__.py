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

__all__ = [
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
