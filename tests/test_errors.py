"""Errors raised on request, eagerly and from traced code."""

import jax
import jax.numpy as jnp
import pytest

from implicit_jax.errors import NonConvergenceError, raise_if_backward_failed, raise_if_not_converged
from implicit_jax.estimators import BackwardInfo
from implicit_jax.solvers import SolverInfo


def info(converged):
    c = jnp.asarray(converged)
    return SolverInfo(jnp.asarray(7), jnp.asarray(8), jnp.full(c.shape, 0.5), jnp.full(c.shape, 0.1), c)


def test_eager_forward_check_raises_the_library_error():
    with pytest.raises(NonConvergenceError, match=r"1 of 2 sample\(s\) unconverged after 7 steps"):
        raise_if_not_converged(info([True, False]))
    raise_if_not_converged(info([True, True]))


def test_traced_forward_check_raises_through_jit():
    @jax.jit
    def run(c):
        raise_if_not_converged(info(c))
        return c

    jax.block_until_ready(run(jnp.array([True])))
    with pytest.raises(Exception, match="NonConvergenceError|did not converge"):
        jax.block_until_ready(run(jnp.array([False])))


def test_backward_check_ignores_rules_without_an_adjoint_solve():
    nan = jnp.asarray(jnp.nan)
    raise_if_backward_failed(BackwardInfo(jnp.asarray(0.0), nan, nan, nan, jnp.asarray(0.0)), "jfb")
    with pytest.raises(NonConvergenceError, match="backward='implicit' did not converge after 3 steps"):
        raise_if_backward_failed(
            BackwardInfo(jnp.asarray(3.0), jnp.asarray(1.0), nan, jnp.asarray(0.0), jnp.asarray(0.0)), "implicit"
        )
