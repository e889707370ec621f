import chex
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from implicit_jax.nn.normalization import NormalizedKernel, spectral_normalize, weight_normalize


def test_weight_normalize_gives_each_output_channel_norm_equal_to_its_gain():
    kernel = jnp.asarray(np.random.default_rng(0).standard_normal((3, 3, 4, 5)), jnp.float32)
    gain = jnp.arange(1.0, 6.0, dtype=jnp.float32)
    w = weight_normalize(kernel, gain)
    chex.assert_trees_all_close(jnp.linalg.norm(w.reshape(-1, 5), axis=0), gain, rtol=1e-5)


@pytest.mark.parametrize("scale", [0.3, 5.0])
def test_spectral_normalize_caps_the_largest_singular_value_only_when_above_the_bound(scale):
    kernel = jnp.asarray(np.random.default_rng(1).standard_normal((8, 8)), jnp.float32)
    kernel = scale * kernel / jnp.linalg.norm(kernel, 2)
    w = spectral_normalize(kernel, 0.9)
    np.testing.assert_allclose(jnp.linalg.norm(w, 2), min(scale, 0.9), rtol=1e-5)


def test_normalized_kernel_modes_and_bad_name():
    rngs = nnx.Rngs(0)
    assert NormalizedKernel((4, 4), normalization="none", rngs=rngs)().shape == (4, 4)
    k = NormalizedKernel((6, 6), normalization="spectral", spectral_bound=0.5, init_scale=4.0, rngs=rngs)
    np.testing.assert_allclose(jnp.linalg.norm(k(), 2), 0.5, rtol=1e-5)
    with pytest.raises(ValueError, match="normalization='batch' is not one of"):
        NormalizedKernel((4, 4), normalization="batch", rngs=rngs)
