"""The unrolled-hypergradient entry point: validation, pytrees, jit and dtypes over the methods."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import implicit_jax as ij
from tests.bilevel import sgd_problem as P

T = 12


def run(method, num_values=T, num_steps=T, **kwargs):
    return ij.unrolled_hypergradient(P.make_step(num_steps), P.hparams(num_values), P.state0(), num_steps, P.outer_loss, method=method, **kwargs)


def test_jit_and_pytree_structure():
    h = P.hparams(4)
    fn = jax.jit(lambda h: ij.unrolled_hypergradient(P.make_step(T), h, P.state0(), T, P.outer_loss, method="fds"))
    value, grad = fn(h)
    chex.assert_trees_all_equal_structs(grad, h)
    chex.assert_trees_all_close(grad, run("reverse", num_values=4)[1], rtol=1e-10)


def test_float32_runs():
    h, s0 = P.hparams(3, jnp.float32), P.state0(jnp.float32)
    for method in ("reverse", "fds"):
        value, grad = ij.unrolled_hypergradient(P.make_step(T), h, s0, T, P.outer_loss, method=method)
        assert value.dtype == jnp.float32 and grad["log_lr"].dtype == jnp.float32


def test_bad_inputs_fail_with_clear_errors():
    step, h, s0 = P.make_step(T), P.hparams(3), P.state0()
    with pytest.raises(ValueError, match="num_steps must be an integer >= 1"):
        ij.unrolled_hypergradient(step, h, s0, 0, P.outer_loss)
    with pytest.raises(ValueError, match=r"Truncated\(k=20\).*num_steps is 12"):
        ij.unrolled_hypergradient(step, h, s0, T, P.outer_loss, method=ij.Truncated(20))
    with pytest.raises(ValueError, match=r"unknown method 'forward'.*'fds'.*'fg2u'"):
        ij.unrolled_hypergradient(step, h, s0, T, P.outer_loss, method="forward")
    with pytest.raises(ValueError, match="key"):
        ij.unrolled_hypergradient(step, h, s0, T, P.outer_loss, method="fg2u")
    with pytest.raises(TypeError, match=r"step\(state, hparams, t\) failed.*hparams = \{'lr'"):
        ij.unrolled_hypergradient(step, {"lr": jnp.asarray(0.1)}, s0, T, P.outer_loss)  # wrong structure
    with pytest.raises(TypeError, match="no floating-point leaf"):
        ij.unrolled_hypergradient(lambda s, h, t: s + 1, h, jnp.zeros(3, jnp.int32), T, lambda s, h: jnp.sum(h["weight_decay"]))
    with pytest.raises(TypeError, match="hparams must hold floating-point"):
        ij.unrolled_hypergradient(step, {"n": jnp.asarray(3)}, s0, T, P.outer_loss)
    with pytest.raises(ValueError, match=r"shape of z|keep the shape"):
        ij.unrolled_hypergradient(lambda s, h, t: (s[0][:2], s[1]), h, s0, T, P.outer_loss)
    with pytest.raises(ValueError, match="float scalar"):
        ij.unrolled_hypergradient(step, h, s0, T, lambda s, h: s[0])
