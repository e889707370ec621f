"""Test-wide JAX configuration, set once here: float64 is available, float32 stays the default in tests."""

import jax

jax.config.update("jax_enable_x64", True)
