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
    return ij.unrolled_hypergradient(
        P.make_step(num_steps), P.hparams(num_values), P.state0(), num_steps, P.outer_loss, method=method, **kwargs
    )


def test_jit_and_pytree_structure():
    h = P.hparams(4)
    fn = jax.jit(lambda h: ij.unrolled_hypergradient(P.make_step(T), h, P.state0(), T, P.outer_loss, method="fds"))
    _value, grad = fn(h)
    chex.assert_trees_all_equal_structs(grad, h)
    chex.assert_trees_all_close(grad, run("reverse", num_values=4)[1], rtol=1e-10)


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.parametrize("method", ["reverse", "fds", "truncated"])
def test_an_equinox_model_as_state_and_hparams_with_static_leaves(method):
    """An eqx.nn.MLP trained by SGD (its activation a non-array leaf) and hparams holding a function."""
    eqx = pytest.importorskip("equinox")
    model = eqx.nn.MLP(3, 1, 8, 1, activation=jnp.tanh, key=jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (16, 3))
    y = jnp.sin(x[:, :1])
    hparams = {"log_lr": jnp.full((4,), -2.0), "schedule": lambda h, t: jnp.exp(h[t // 2])}  # 8 steps, 4 shared values

    def loss(m):
        return jnp.mean((jax.vmap(m)(x) - y) ** 2)

    def step(m, h, t):
        grads = eqx.filter_grad(loss)(m)
        return eqx.apply_updates(m, jax.tree_util.tree_map(lambda g: -h["schedule"](h["log_lr"], t) * g, grads))

    def outer(m, h):
        return loss(m)

    chosen = ij.FDS(chunk_size=2) if method == "fds" else ij.Truncated(k=8) if method == "truncated" else method
    value, grad = ij.unrolled_hypergradient(step, hparams, model, 8, outer, method=chosen)
    assert grad["schedule"] is None and grad["log_lr"].shape == (4,)

    # the same problem written on the arrays alone
    params, static = eqx.partition(model, eqx.is_array)

    def array_step(p, log_lr, t):
        return eqx.partition(step(eqx.combine(p, static), dict(hparams, log_lr=log_lr), t), eqx.is_array)[0]

    ref_value, ref_grad = ij.unrolled_hypergradient(
        array_step, hparams["log_lr"], params, 8, lambda p, h: loss(eqx.combine(p, static)), method=chosen
    )
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    np.testing.assert_allclose(grad["log_lr"], ref_grad, rtol=1e-10, atol=1e-14)
    if method == "reverse":  # against plain backpropagation through the 8 steps

        def unrolled(log_lr):
            m = model
            for t in range(8):
                m = step(m, dict(hparams, log_lr=log_lr), t)
            return outer(m, None)

        np.testing.assert_allclose(grad["log_lr"], jax.grad(unrolled)(hparams["log_lr"]), rtol=1e-8)
