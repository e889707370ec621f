"""Test-wide JAX configuration, set once here: float64 is available, float32 stays the default in tests.

Modules in :data:`FRESH_PROCESS_MODULES` run in a process of their own (``tests/test_fresh_process.py``
starts it), not in the shared pytest workers: XLA's CPU compiler was seen to crash (SIGSEGV in
``backend_compile_and_load``) on their bfloat16 programs in workers that had already compiled
hundreds of others, while the same module passes every time in a fresh process. A crash there
still fails the run; it just cannot take a shared worker and its other tests down with it.
"""

import os
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

#: test modules (paths relative to the repository root) run by tests/test_fresh_process.py.
FRESH_PROCESS_MODULES = ("tests/test_fixed_point_precision.py",)
FRESH_PROCESS_ENV = "IMPLICIT_JAX_FRESH_PROCESS"
ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    if os.environ.get(FRESH_PROCESS_ENV) == "1":
        return
    fresh = {str(ROOT / module) for module in FRESH_PROCESS_MODULES}
    deselected = [item for item in items if str(item.path) in fresh]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if str(item.path) not in fresh]
