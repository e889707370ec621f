"""Limited-memory Broyden."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from implicit_jax import quasi_newton as qn
from implicit_jax.solvers import Broyden, FixedPointIteration, StopCriterion, iterate
from implicit_jax.testing import contraction


def linear_map(n=6, norm=0.95, seed=0):
    w = contraction(jax.random.PRNGKey(seed), n, norm)
    b = jnp.arange(n, dtype=jnp.float64) / n
    return w, b, (lambda z: z @ w.T + b)


@pytest.mark.slow
@pytest.mark.parametrize("update", ["good", "bad"])
def test_broyden_beats_plain_iteration_on_a_slow_linear_map(update):
    w, b, fn = linear_map()
    criterion = StopCriterion(tol=1e-10, max_steps=300)
    z, info, _ = iterate(Broyden(update=update), fn, jnp.zeros((1, 6), jnp.float64), criterion)
    _, plain, _ = iterate(FixedPointIteration(), fn, jnp.zeros((1, 6), jnp.float64), criterion)
    np.testing.assert_allclose(z[0], np.linalg.solve(np.eye(6) - w, b), rtol=1e-8)
    assert int(info.steps) < int(plain.steps) / 2


def test_inverse_estimate_is_exact_in_one_dimension_and_kept_per_sample():
    # in 1-D the secant condition pins H down: on a linear map H = 1 / (w - 1) after one update
    w = 0.8
    fn = lambda z: w * z + 1.0
    _, _, state = iterate(Broyden(memory=30), fn, jnp.zeros((3, 1), jnp.float64), StopCriterion(tol=1e-12, max_steps=100))
    inverse = state.inverse
    assert inverse.u.shape == (3, 30, 1)  # one estimate per sample
    for i in range(3):
        h = qn.matvec(jax.tree_util.tree_map(lambda a: a[i], inverse), jnp.ones(1))
        np.testing.assert_allclose(h, 1.0 / (w - 1.0), rtol=1e-10)


def test_line_search_rescues_steps_that_overshoot():
    # r(z) = -atan(z - 0.3): quasi-Newton steps from z = 4 overshoot and run away without backtracking
    fn = lambda z: z - jnp.arctan(z - 0.3)
    criterion = StopCriterion(tol=1e-8, max_steps=100, stop_mode="abs")
    z0 = jnp.full((2, 1), 4.0, jnp.float64)
    z_plain, _, _ = iterate(Broyden(), fn, z0, criterion)
    z, info, _ = iterate(Broyden(line_search=True), fn, z0, criterion)
    assert np.all(np.abs(z_plain) > 1e3)  # ran away (where f(z) - z even cancels to 0)
    assert bool(info.converged.all())
    np.testing.assert_allclose(z, 0.3, atol=1e-7)
    assert int(info.num_fn_evals) > int(info.steps) + 1  # trial evaluations are counted


@pytest.mark.slow
def test_per_sample_estimates_are_independent():
    _w, b, fn = linear_map(n=4)
    z0 = jnp.stack([jnp.zeros(4), jnp.ones(4)])
    _, _, batched = iterate(Broyden(), fn, z0, StopCriterion(tol=1e-10, max_steps=50))
    _, _, single = iterate(Broyden(), fn, z0[1:], StopCriterion(tol=1e-10, max_steps=50))
    row = lambda state, i: jax.tree_util.tree_map(lambda a: a[i], state.inverse)
    np.testing.assert_allclose(qn.matvec(row(batched, 1), b), qn.matvec(row(single, 0), b), rtol=1e-8)


def test_invalid_configuration():
    with pytest.raises(ValueError, match=r"update=.*\('good', 'bad'\)"):
        Broyden(update="ugly")
    with pytest.raises(ValueError, match="memory"):
        Broyden(memory=0)
