"""Damped fixed-point iteration."""

import jax.numpy as jnp
import numpy as np
import pytest

from implicit_jax.solvers import FixedPointIteration, StopCriterion, iterate


def test_linear_contraction_converges_geometrically():
    rate = 0.5
    z, info, _ = iterate(
        FixedPointIteration(),
        lambda z: rate * z + 1.0,
        jnp.zeros((1, 3), jnp.float64),
        StopCriterion(tol=1e-10, max_steps=100, stop_mode="abs"),
    )
    np.testing.assert_allclose(z, 2.0, atol=1e-9)
    # |z_t - z*| = 2 * rate^t and the residual is (1 - rate) * that: steps ~ log(1e-10 / (sqrt(3)*...)) / log(rate)
    expected = int(np.ceil(np.log(1e-10 / (np.sqrt(3) * 2 * (1 - rate))) / np.log(rate)))
    assert abs(int(info.steps) - expected) <= 1


def test_damping_makes_an_oscillating_map_converge():
    fn = lambda z: -1.5 * z + 2.5  # fixed point 1, slope -1.5: plain iteration diverges
    criterion = StopCriterion(tol=1e-8, max_steps=200)
    _, plain, _ = iterate(FixedPointIteration(), fn, jnp.zeros((1, 1), jnp.float64), criterion)
    z, damped, _ = iterate(FixedPointIteration(damping=0.4), fn, jnp.zeros((1, 1), jnp.float64), criterion)
    assert not bool(plain.converged[0]) and bool(damped.converged[0])
    np.testing.assert_allclose(z, 1.0, atol=1e-7)


@pytest.mark.parametrize("damping", [0.0, 1.5, -0.2])
def test_invalid_damping(damping):
    with pytest.raises(ValueError, match=r"damping=.*\(0, 1\]"):
        FixedPointIteration(damping=damping)
