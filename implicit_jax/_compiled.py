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
from collections.abc import Callable, Hashable
from typing import Any

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
    by its object (weakly) and its function.
    """
    try:
        if inspect.ismethod(f):
            key: Hashable = (weakref.ref(f.__self__), f.__func__)
        else:
            key = weakref.ref(f)
        hash(key)
    except TypeError:  # not weakly referenceable, or not hashable
        return None
    return key


def compiled(
    solve: Callable[..., Any], f: Callable, example: tuple, static: tuple, *, key_of: Callable | None = None
) -> Callable[..., Any] | None:
    """``solve`` under ``jax.jit``, with the map rebuilt from its traced program; ``None`` if it cannot be cached.

    Args:
      solve: ``solve(f, *static, *dynamic)``, the computation to compile; ``f`` is the map.
      f: the map as the user passed it; it is traced here at ``example``.
      example: the map's arguments ``(params, z, x)``.
      static: hashable configuration (state layout, solver, estimator, stopping criterion).
      key_of: the function the cache is keyed on, when ``f`` wraps it in a new closure at
        every call (the user's map, when ``f`` moves static leaves of ``params`` into it).

    Returns:
      A function of the dynamic arguments ``*dynamic``, or ``None`` when ``f`` cannot be keyed
      or ``static`` is not hashable (the caller then runs ``solve`` op by op).
    """
    map_key = _map_key(f if key_of is None else key_of)
    if map_key is None:
        return None
    closed, out_shape = jax.make_jaxpr(retraced(f), return_shape=True)(*example)
    out_tree = jax.tree_util.tree_structure(out_shape)
    key = (map_key, str(closed.jaxpr), jax.tree_util.tree_structure(example), out_tree, *static)
    try:
        jitted = _cache.get(key)
    except TypeError:  # an unhashable configuration
        return None
    if jitted is None:
        jitted = _cache[key] = _jit_with_map(solve, closed.jaxpr, out_tree, static)
    _cache.move_to_end(key)
    while len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)
    return lambda *dynamic: jitted(closed.consts, *dynamic)


def _jit_with_map(solve, jaxpr: jax_core.Jaxpr, out_tree, static: tuple) -> Callable:
    """``jax.jit`` of ``(consts, *dynamic) -> solve(map, *static, *dynamic)``, the map evaluating ``jaxpr`` with those consts."""

    def run(consts, *dynamic):
        def traced_map(*args):
            leaves = jax.tree_util.tree_leaves(args)
            return jax.tree_util.tree_unflatten(out_tree, jax_core.jaxpr_as_fun(jax_core.ClosedJaxpr(jaxpr, consts))(*leaves))

        return solve(traced_map, *static, *dynamic)

    return jax.jit(run)
