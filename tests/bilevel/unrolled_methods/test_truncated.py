"""Truncated: reverse mode through the last k steps, against the window gradient."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import implicit_jax as ij
from tests.bilevel import sgd_problem as P

T = 12


def run(method, num_values=T):
    return ij.unrolled_hypergradient(P.make_step(T), P.hparams(num_values), P.state0(), T, P.outer_loss, method=method)


def test_truncated_over_everything_is_reverse_and_shorter_windows_are_the_window_gradient():
    _, reverse = run("reverse")
    _, full = run(ij.Truncated(T))
    chex.assert_trees_all_close(full, reverse, rtol=1e-12)
    value, last3 = run(ij.Truncated(3))
    assert float(value) == pytest.approx(float(run("reverse")[0]), rel=1e-12)
    # Steps before the window get no credit: their per-step learning rates have zero gradient.
    np.testing.assert_array_equal(last3["log_lr"][: T - 3], 0.0)
    assert np.all(last3["log_lr"][T - 3 :] != 0.0)
    # Inside the window the gradient is that of the window started from the (fixed) state.
    step, h = P.make_step(T), P.hparams(T)
    middle = P.state0()
    for t in range(T - 3):
        middle = step(middle, h, jnp.asarray(t, jnp.int32))

    def window(h):
        s = middle
        for t in range(T - 3, T):
            s = step(s, h, jnp.asarray(t, jnp.int32))
        return P.outer_loss(s, h)

    chex.assert_trees_all_close(last3, jax.grad(window)(h), rtol=1e-10)


def test_window_length_is_checked():
    with pytest.raises(ValueError, match="Truncated"):
        ij.Truncated(0)
