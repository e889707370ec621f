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
(:func:`retraced`), every array it reads is an argument of the compiled program (the
traced program's consts), and the cache key is the map together with the traced program's
text, which holds its Python scalars and structure. One thing the text does not show is
which function a ``custom_jvp``/``custom_vjp`` rule or a callback inside the map is: a map
(the same Python object) that starts calling a *different* such function, with the same
traced text, through a rebound global reuses the first program.
"""

from __future__ import annotations

import collections
import inspect
import weakref
from collections.abc import Callable, Hashable, Sequence
from typing import Any, NamedTuple

import jax
from jax.extend import core as jax_core

#: programs kept; the least recently used is dropped beyond this.
CACHE_SIZE = 32

#: key -> the jitted solve.
_cache: collections.OrderedDict[tuple, Callable] = collections.OrderedDict()


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
    """A hashable stand-in for ``f`` that does not keep it alive, or ``None`` if there is none.

    A weak reference compares equal to another while both referents are alive and equal. A
    bound method is a new object at every attribute access (``model.apply``), so it is keyed
    by its object (weakly) and its function. When the referent dies, the programs keyed on it
    are dropped (:func:`_forget`).
    """
    try:
        if inspect.ismethod(f):
            key: Hashable = (weakref.ref(f.__self__, _forget), f.__func__)
        else:
            key = weakref.ref(f, _forget)
        hash(key)
    except TypeError:  # not weakly referenceable, or not hashable
        return None
    return key


def _forget(dead: weakref.ref) -> None:
    """Drop the cached programs whose key holds the weak reference ``dead``."""
    for key in list(_cache):
        if any(k is dead or (isinstance(k, tuple) and k[0] is dead) for k, *_ in key[1]):
            _cache.pop(key, None)


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


class _Traced(NamedTuple):
    jaxpr: jax_core.Jaxpr
    consts: list
    out_tree: Any


def compiled(solve: Callable[..., Any], maps: Sequence[Map], static: tuple) -> Callable[..., Any] | None:
    """``solve`` under ``jax.jit``, with the maps rebuilt from their traced programs; ``None`` if it cannot be cached.

    Args:
      solve: ``solve(*maps, *static, *dynamic)``, the computation to compile (part of the key:
        a module-level function).
      maps: the user functions ``solve`` takes, each traced here (through :func:`retraced`).
      static: hashable configuration (state layout, solver, estimator, stopping criterion).

    Returns:
      A function of the dynamic arguments ``*dynamic``, or ``None`` when a map cannot be keyed
      or ``static`` is not hashable (the caller then runs ``solve`` op by op).
    """
    map_keys = [_map_key(m.fn if m.key_of is None else m.key_of) for m in maps]
    if any(k is None for k in map_keys):
        return None
    traced = []
    for m in maps:
        closed, out_shape = jax.make_jaxpr(retraced(m.fn), return_shape=True)(*m.example)
        traced.append(_Traced(closed.jaxpr, closed.consts, jax.tree_util.tree_structure(out_shape)))
    programs = tuple(
        (k, str(t.jaxpr), jax.tree_util.tree_structure(m.example), t.out_tree) for k, t, m in zip(map_keys, traced, maps)
    )
    key = (solve, programs, *static)
    try:
        jitted = _cache.get(key)
    except TypeError:  # an unhashable configuration
        return None
    if jitted is None:
        jitted = _cache[key] = _jit_with_maps(solve, [(t.jaxpr, t.out_tree) for t in traced], static)
    _cache.move_to_end(key)
    while len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)
    consts = [t.consts for t in traced]
    return lambda *dynamic: jitted(consts, *dynamic)


def _rebuilt(jaxpr: jax_core.Jaxpr, out_tree, consts) -> Callable:
    """The function evaluating ``jaxpr`` with ``consts``, taking and returning pytrees."""

    def traced_map(*args):
        outputs = jax_core.jaxpr_as_fun(jax_core.ClosedJaxpr(jaxpr, consts))(*jax.tree_util.tree_leaves(args))
        return jax.tree_util.tree_unflatten(out_tree, outputs)

    return traced_map


def _jit_with_maps(solve, programs: list, static: tuple) -> Callable:
    """``jax.jit`` of ``(consts, *dynamic) -> solve(*maps, *static, *dynamic)``, map ``i`` evaluating program ``i`` with ``consts[i]``."""

    def run(consts, *dynamic):
        maps = [_rebuilt(jaxpr, out_tree, c) for (jaxpr, out_tree), c in zip(programs, consts)]
        return solve(*maps, *static, *dynamic)

    return jax.jit(run)
