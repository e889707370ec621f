"""The timing helper."""

import time

import jax.numpy as jnp
import pytest

from benchmarks.timing import call_times_ms, interleaved_ms, median_ms, min_ms


def test_median_ms_times_a_call_and_validates_repeats():
    calls = []
    assert median_ms(lambda x: calls.append(1) or x + 1, jnp.ones(3), repeats=3) >= 0
    assert len(calls) == 4  # one warm-up call, then the timed repeats
    with pytest.raises(ValueError, match="repeats"):
        median_ms(lambda: None, repeats=0)


def test_min_and_median_summarise_the_same_kind_of_timed_calls():
    delays = iter([0.0, 0.03, 0.0, 0.0])  # the first call is the untimed warm-up
    slow_then_fast = lambda: time.sleep(next(delays))
    times = call_times_ms(slow_then_fast, repeats=3)
    assert len(times) == 3 and times[0] >= 30  # the warm-up call is not among them
    assert min_ms(lambda: None, repeats=2) <= median_ms(lambda: time.sleep(0.002), repeats=2)
    with pytest.raises(ValueError, match="repeats"):
        min_ms(lambda: None, repeats=0)


def test_interleaved_ms_alternates_the_functions_and_validates_rounds():
    order = []
    first = lambda x: order.append("a") or x + 1
    second = lambda x: order.append("b") or x * 2
    times = interleaved_ms([first, second], jnp.ones(3), rounds=2)
    assert len(times) == 2 and all(t >= 0 for t in times)
    assert order == ["a", "b", "a", "b", "a", "b"]  # warm-ups, then round after round
    with pytest.raises(ValueError, match="rounds"):
        interleaved_ms([first], jnp.ones(3), rounds=0)
