"""Test-wide JAX configuration, set once here: float64 is available, float32 stays the default in tests.

Every executable that XLA's CPU backend compiles keeps memory mappings until JAX's caches
drop it, and a solve run op by op outside ``jit`` (``argmin``, ``fixed_point(throw=True)``)
compiles each control-flow primitive separately (about 450 mappings for one eager gradient);
``fixed_point``'s compiled eager programs stay in its cache. A pytest worker that runs hundreds
of such tests passed 55,000 mappings and crashed (SIGSEGV inside the compiler) when Linux's
``vm.max_map_count`` (65,530) was reached. :func:`_bounded_memory_mappings` clears the caches
whenever the count passes :data:`MAX_MAPPINGS`.
"""

import gc

import jax
import pytest

from implicit_jax import _compiled

jax.config.update("jax_enable_x64", True)

#: clear JAX's compilation caches after a test once this process holds more memory mappings.
MAX_MAPPINGS = 20_000


def _memory_mappings() -> int:
    try:
        with open("/proc/self/maps", "rb") as handle:
            return sum(1 for _ in handle)
    except OSError:  # not Linux: nothing to bound
        return 0


@pytest.fixture(autouse=True)
def _bounded_memory_mappings():
    yield
    if _memory_mappings() > MAX_MAPPINGS:
        _compiled._cache.clear()
        jax.clear_caches()
        gc.collect()
