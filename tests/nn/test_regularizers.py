import jax
import jax.numpy as jnp
import numpy as np
import pytest

from implicit_jax.nn.regularizers import jacobian_frobenius_penalty


def test_hutchinson_penalty_is_unbiased_for_the_frobenius_norm():
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.standard_normal((6, 6)) / 3, jnp.float64)
    z = jnp.asarray(rng.standard_normal((4, 6)), jnp.float64)
    fn = lambda z: jnp.tanh(z @ w.T)
    exact = np.mean([np.sum(np.asarray(jax.jacobian(lambda v: jnp.tanh(w @ v))(zi)) ** 2) for zi in z]) / 6
    probes = 4000
    estimate = jacobian_frobenius_penalty(fn, z, jax.random.key(0), num_probes=probes)
    # each per-sample probe term ||e^T J||^2 has variance 2 ||J^T J||_F^2; the standard error follows
    per_sample_var = np.mean(
        [2 * np.sum((lambda j: j @ j.T)(np.asarray(jax.jacobian(lambda v: jnp.tanh(w @ v))(zi))) ** 2) for zi in z]
    )
    stderr = np.sqrt(per_sample_var / (probes * 4)) / 6
    assert abs(float(estimate) - exact) < 5 * stderr


def test_penalty_is_differentiable_and_rejects_zero_probes():
    w = jnp.eye(3, dtype=jnp.float64) * 0.5
    z = jnp.ones((2, 3), jnp.float64)
    grad = jax.grad(lambda w: jacobian_frobenius_penalty(lambda z: z @ w.T, z, jax.random.key(1), 64))(w)
    assert np.all(np.isfinite(grad)) and float(jnp.trace(grad)) > 0
    with pytest.raises(ValueError, match="num_probes"):
        jacobian_frobenius_penalty(lambda z: z, z, jax.random.key(0), 0)
