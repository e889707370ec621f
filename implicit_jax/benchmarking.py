"""Timing helpers shared by the scripts and benchmarks: medians of jitted calls, compile excluded."""

from __future__ import annotations

import time
from typing import Callable

import jax
import numpy as np


def median_ms(fn: Callable, *args, repeats: int = 5) -> float:
    """Median wall time in milliseconds of ``fn(*args)``, after one untimed call (compilation, warm-up).

    Every call is waited for with ``jax.block_until_ready``, so asynchronous dispatch does not hide work.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats!r}.")
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))
