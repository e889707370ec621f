import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from implicit_jax.nn.conv import conv_same


def reference(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.slow
@pytest.mark.parametrize("size", [1, 3, 5])
def test_conv_same_matches_lax_conv_and_its_vjp(size):
    rng = np.random.default_rng(size)
    x = jnp.asarray(rng.standard_normal((2, 6, 7, 3)), jnp.float64)
    k = jnp.asarray(rng.standard_normal((size, size, 3, 4)), jnp.float64)
    g = jnp.asarray(rng.standard_normal((2, 6, 7, 4)), jnp.float64)
    chex.assert_trees_all_close(conv_same(x, k), reference(x, k), rtol=1e-12, atol=1e-12)
    ours = jax.vjp(conv_same, x, k)[1](g)
    theirs = jax.vjp(reference, x, k)[1](g)
    chex.assert_trees_all_close(ours, theirs, rtol=1e-10, atol=1e-10)


def test_conv_same_second_order_matches_reference():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((1, 5, 5, 2)), jnp.float64)
    k = jnp.asarray(rng.standard_normal((3, 3, 2, 2)), jnp.float64)

    def penalty(conv, k):  # a Jacobian-regulariser-like term: grad of a VJP norm
        return jnp.sum(jax.vjp(lambda z: jnp.tanh(conv(z, k)), x)[1](jnp.ones_like(x))[0] ** 2)

    chex.assert_trees_all_close(
        jax.grad(lambda k: penalty(conv_same, k))(k), jax.grad(lambda k: penalty(reference, k))(k), rtol=1e-10
    )


def test_conv_same_rejects_even_kernels():
    with pytest.raises(ValueError, match="odd kernel size"):
        conv_same(jnp.zeros((1, 4, 4, 1)), jnp.zeros((2, 2, 1, 1)))
