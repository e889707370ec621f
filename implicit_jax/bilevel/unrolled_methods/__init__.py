"""Hypergradient methods for :func:`implicit_jax.unrolled_hypergradient`, one module each."""

from implicit_jax.bilevel.unrolled_methods.base import AbstractUnrolledMethod, UnrolledProblem, directional_derivatives
from implicit_jax.bilevel.unrolled_methods.fds import FDS, shared_index, shared_schedule
from implicit_jax.bilevel.unrolled_methods.fg2u import FG2U
from implicit_jax.bilevel.unrolled_methods.reverse import Reverse
from implicit_jax.bilevel.unrolled_methods.truncated import Truncated

#: method names accepted by ``unrolled_hypergradient(method=...)``, mapped to default configurations.
UNROLLED_METHODS = {"reverse": Reverse, "truncated": Truncated, "fds": FDS, "fg2u": FG2U}

__all__ = [
    "FDS",
    "FG2U",
    "UNROLLED_METHODS",
    "AbstractUnrolledMethod",
    "Reverse",
    "Truncated",
    "UnrolledProblem",
    "directional_derivatives",
    "shared_index",
    "shared_schedule",
]
