"""The timing helper."""

import jax.numpy as jnp
import pytest

from implicit_jax.benchmarking import median_ms


def test_median_ms_times_a_call_and_validates_repeats():
    calls = []
    assert median_ms(lambda x: calls.append(1) or x + 1, jnp.ones(3), repeats=3) >= 0
    assert len(calls) == 4  # one warm-up call, then the timed repeats
    with pytest.raises(ValueError, match="repeats"):
        median_ms(lambda: None, repeats=0)
