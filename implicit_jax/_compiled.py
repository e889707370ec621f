"""Compiled solves for calls made outside ``jax.jit``.

Called eagerly (in a notebook, or under an eager ``jax.grad``), a solve would run op by op:
JAX compiles each ``lax.while_loop`` and ``lax.cond`` of the forward solver, the adjoint
solve and its rescue separately, and again at every call, because their bodies are new
functions each time (seconds per call on a CPU). :func:`compiled` instead runs the solve as
one ``jax.jit`` program and keeps it in a small cache, so that a call with the same map,
shapes and configuration reuses it (optimistix does the same with ``equinox.filter_jit``).

A ``jax.jit`` of the map itself would be stale: JAX traces a function once per shape and
keeps the values it read from globals and closure cells then, so a notebook that rebinds
``W = ...`` would go on solving with the old ``W``. Here the map is traced at every call
(:func:`retraced`) and the cache key is the map together with its traced program's text
(which holds its Python scalars and structure) and the arrays it reads: a ``jax.Array`` by
identity (it is immutable, and the cache entry keeps it alive so that no other array takes its
id), a NumPy array by its bytes. Rebinding a global array therefore compiles anew. One thing the
text does not show is which function a ``custom_jvp``/``custom_vjp`` rule or a callback inside
the map is: a map (the same Python object) that starts calling a *different* such function,
with the same traced text, through a rebound global reuses the first program. A cached program
keeps its map and the arrays the map reads alive until it is evicted.
"""

from __future__ import annotations

import collections
import functools
import hashlib
from collections.abc import Callable, Hashable, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.extend.core import concrete_or_error

#: programs kept; the least recently used is dropped beyond this.
CACHE_SIZE = 32

#: key -> the jitted solve and what it needs (:class:`_Entry`).
_cache: collections.OrderedDict[tuple, _Entry] = collections.OrderedDict()


def retraced(f: Callable) -> Callable:
    """A new function object calling ``f``, so that JAX traces ``f`` again.

    JAX's tracing caches (behind ``jax.closure_convert``, ``jax.make_jaxpr`` and
    ``jax.jit``) are keyed on the function object: tracing the same ``f`` twice at the same
    shapes hands back the first program, with the values ``f`` read from globals and
    closure cells at that time. A map that reads a global array rebound since (a notebook's
    ``W = ...``) would be solved with the old value, silently. A fresh alias per call makes
    every trace read the current values.
    """

    def alias(*args):
        return f(*args)

    return alias


def _map_key(f: Callable) -> Hashable | None:
    """``f`` as a cache key (a bound method compares equal to another of the same object and
    function), or ``None`` if it is not hashable."""
    try:
        hash(f)
    except TypeError:
        return None
    return f


class Map(NamedTuple):
    """A user function to trace for :func:`compiled`.

    Attributes:
      fn: the function, traced at ``example``.
      example: its arguments (arrays or shape-dtype structs).
      key_of: the function the cache is keyed on, when ``fn`` wraps it in a new closure at
        every call (``fixed_point`` moves static leaves of ``params`` into such a closure);
        ``None``: ``fn`` itself.
    """

    fn: Callable
    example: tuple
    key_of: Callable | None = None


def compiled(
    solve: Callable[..., Any], maps: Sequence[Map], static: tuple, *, plain_closure: bool = False
) -> Callable[..., Any] | None:
    """``solve`` under ``jax.jit``, cached; ``None`` if this call cannot use the cache.

    Args:
      solve: ``solve(*maps, *static, *dynamic)``, the computation to compile (part of the key:
        a module-level function).
      maps: the user functions ``solve`` takes, each traced here (through :func:`retraced`) for
        the key, and traced again inside the program when it is first compiled.
      static: hashable configuration (state layout, solver, estimator, stopping criterion).
      plain_closure: also return ``None`` when a map reads a value traced by an enclosing
        eager transformation (a ``jax.grad`` of a loss whose map closes over the
        differentiated parameters): the caller's own ``jax.custom_vjp`` around the program
        would not see that value as an input.

    Returns:
      A function of the dynamic arguments ``*dynamic``, or ``None`` when the call is not eager
      (some argument or closed-over value is traced by ``jit`` or ``vmap``), a map cannot be
      keyed or ``static`` is not hashable: the caller then runs ``solve`` itself.
    """
    if not _all_concrete([m.example for m in maps]):
        return None  # inside a jit (or vmap) trace: the caller traces the solve into it directly
    map_keys = [_map_key(m.fn if m.key_of is None else m.key_of) for m in maps]
    if any(k is None for k in map_keys):
        return None
    programs, consts = [], []
    for k, m in zip(map_keys, maps):
        closed, out_shape = jax.make_jaxpr(retraced(m.fn), return_shape=True)(*m.example)
        if not _all_concrete(closed.consts):
            return None
        if plain_closure and any(isinstance(c, jax.core.Tracer) for c in closed.consts):
            return None
        structure = (jax.tree_util.tree_structure(m.example), jax.tree_util.tree_structure(out_shape))
        programs.append((k, str(closed.jaxpr), structure, tuple(_value_key(c) for c in closed.consts)))
        consts.append(closed.consts)
    key = (solve, tuple(programs), *static)
    try:
        entry = _cache.get(key)
    except TypeError:  # an unhashable configuration
        return None
    if entry is None:
        entry = _cache[key] = _Entry(*_jit_with_maps(solve, static), consts)
    _cache.move_to_end(key)
    while len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)
    return functools.partial(_call, entry, [m.fn for m in maps])


class _Entry(NamedTuple):
    jitted: Callable
    current_maps: list  # the maps of the call in progress, which a (re)trace reads
    consts: list  # the arrays the key identifies by ``id``, kept alive so that no other array takes their ids


def _call(entry: _Entry, fns: list, *dynamic):
    entry.current_maps[:] = fns
    try:
        return entry.jitted(*dynamic)
    finally:
        entry.current_maps.clear()


def _value_key(value) -> Hashable:
    """What identifies a closed-over array's value: its identity for an immutable ``jax.Array``, its bytes otherwise."""
    if isinstance(value, jax.Array):
        return id(value)
    array = np.asarray(value)
    return (array.dtype.str, array.shape, hashlib.blake2b(array.tobytes(), digest_size=16).digest())


def _all_concrete(tree) -> bool:
    """Whether every leaf has a concrete value: an eager call, or one under an eager ``jax.grad``.

    Inside a ``jit`` or ``vmap`` trace there is nothing to cache (the solve is traced into the
    enclosing program), and a map's traced program may hold values of that trace.
    """
    try:
        for leaf in jax.tree_util.tree_leaves(tree):
            concrete_or_error(None, leaf)
    except jax.errors.ConcretizationTypeError:
        return False
    return True


def _jit_with_maps(solve, static: tuple) -> tuple[Callable, list]:
    """``jax.jit`` of ``(*dynamic) -> solve(*maps, *static, *dynamic)``, the maps those of the call that traces it."""
    current_maps: list = []

    def run(*dynamic):
        return solve(*(retraced(fn) for fn in current_maps), *static, *dynamic)

    return jax.jit(run), current_maps
