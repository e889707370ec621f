"""Test-wide JAX configuration, set once here: float64 is available, float32 stays the default in tests.

Every executable that XLA's CPU backend compiles keeps memory mappings until JAX's caches
drop it, and a solve run op by op outside ``jit`` (``argmin``, ``fixed_point(throw=True)``)
compiles each control-flow primitive separately (about 450 mappings for one eager gradient);
``fixed_point``'s compiled eager programs stay in its cache. A pytest worker that runs hundreds
of such tests passed 55,000 mappings and crashed (SIGSEGV inside the compiler) when Linux's
``vm.max_map_count`` (65,530) was reached. :func:`_bounded_memory_mappings` clears the caches
whenever the count passes :data:`MAX_MAPPINGS`.

Many tests compile the same programs in different processes (the pytest workers, the scripts
and notebooks they run as subprocesses). JAX's persistent compilation cache, in one temporary
directory that every process of the run inherits through ``JAX_COMPILATION_CACHE_DIR``, compiles
each once: the suite ran in 14:48 instead of 17:30 on 2 cores. A directory already named by that
variable is used as it is; the one created here is removed at the end of the run.
"""

import gc
import os
import shutil
import tempfile

import jax
import pytest

from implicit_jax import _compiled

jax.config.update("jax_enable_x64", True)

#: programs that compile faster than this are not worth a disk write.
PERSISTENT_CACHE_MIN_COMPILE_SECONDS = "0.1"
_CACHE_VARIABLE = "JAX_COMPILATION_CACHE_DIR"
_CREATED_BY = "IMPLICIT_JAX_TEST_CACHE_CREATED_BY"  # the pid of the process that created the directory

if _CACHE_VARIABLE not in os.environ:  # the first process of the run; workers and subprocesses inherit it
    os.environ[_CACHE_VARIABLE] = tempfile.mkdtemp(prefix="implicit_jax-tests-xla-cache-")
    os.environ[_CREATED_BY] = str(os.getpid())
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", PERSISTENT_CACHE_MIN_COMPILE_SECONDS)
jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE_VARIABLE])
jax.config.update("jax_persistent_cache_min_compile_time_secs", float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))


def pytest_unconfigure(config):
    if os.environ.get(_CREATED_BY) == str(os.getpid()):
        shutil.rmtree(os.environ[_CACHE_VARIABLE], ignore_errors=True)


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
