"""Timing helpers shared by the scripts and benchmarks: medians of jitted calls, compile excluded."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import jax
import numpy as np


def call_times_ms(fn: Callable, *args, repeats: int = 5) -> list[float]:
    """Wall times in milliseconds of ``repeats`` calls of ``fn(*args)``, after one untimed call (compilation, warm-up).

    Every call is waited for with ``jax.block_until_ready``, so asynchronous dispatch does not hide work.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats!r}.")
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(1e3 * (time.perf_counter() - start))
    return times


def median_ms(fn: Callable, *args, repeats: int = 5) -> float:
    """Median wall time in milliseconds of ``fn(*args)`` (see :func:`call_times_ms`)."""
    return float(np.median(call_times_ms(fn, *args, repeats=repeats)))


def min_ms(fn: Callable, *args, repeats: int = 5) -> float:
    """Fastest wall time in milliseconds of ``fn(*args)``: a lower bound, since a busy machine only adds time."""
    return float(np.min(call_times_ms(fn, *args, repeats=repeats)))


def interleaved_ms(fns: Sequence[Callable], *args, rounds: int = 15) -> list[float]:
    """Median wall time in ms of each ``fn(*args)``, the functions called in turn, round after round.

    For ratios between methods: a slow spell of the machine (another process, frequency
    scaling) then hits every method alike instead of whichever happened to run during it.
    Each function is called once untimed first (compilation, warm-up).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds!r}.")
    for fn in fns:
        jax.block_until_ready(fn(*args))
    times = [[] for _ in fns]
    for _ in range(rounds):
        for fn, spent in zip(fns, times):
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            spent.append(time.perf_counter() - start)
    return [1e3 * float(np.median(spent)) for spent in times]
