"""ArgminNeumann: the truncated Neumann series (Lorraine et al. 2020, eq. 9), against its formula and the exact hypergradient."""

import chex
import jax.numpy as jnp
import pytest

import implicit_jax as ij
from tests.bilevel import ridge
from tests.bilevel.argmin_estimators.common import LAM, hypergrad, rel_error


@pytest.mark.slow
@pytest.mark.parametrize("k, step_size", [(1, 0.5), (5, 0.5), (20, 0.3)])
def test_neumann_matches_its_truncated_formula(k, step_size):
    h, v = ridge.hessian(LAM), ridge.outer_cotangent(LAM)
    u = step_size * sum(jnp.linalg.matrix_power(jnp.eye(ridge.D) - step_size * h, j) @ v for j in range(k))
    chex.assert_trees_all_close(hypergrad(ij.ArgminNeumann(k=k, step_size=step_size)), ridge.hypergradient_for(LAM, u), rtol=1e-8)


def test_neumann_converges_to_exact_as_k_grows():
    errors = [rel_error(hypergrad(ij.ArgminNeumann(k=k, step_size=0.05))) for k in (5, 50, 500)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-6, errors
