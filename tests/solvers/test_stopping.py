"""Stopping rules: the three modes, their thresholds, and a fixed point at zero that only ``mixed`` can meet."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import implicit_jax as ij
from implicit_jax.solvers import CG, GMRES, SOLVERS, StopCriterion, iterate
from implicit_jax.solvers.fixed_point.base import metric_bound, stop_metric


def test_threshold_of_each_mode():
    reference = jnp.array([0.0, 2.0])
    np.testing.assert_allclose(StopCriterion(tol=0.1, stop_mode="abs").threshold(reference), [0.1, 0.1])
    np.testing.assert_allclose(StopCriterion(tol=0.1, stop_mode="rel").threshold(reference), [0.0, 0.2])
    np.testing.assert_allclose(StopCriterion(tol=0.1, stop_mode="mixed", atol=0.01).threshold(reference), [0.01, 0.21])


def test_invalid_criteria_name_the_option():
    with pytest.raises(ValueError, match=r"stop_mode must be one of \('abs', 'rel', 'mixed'\)"):
        StopCriterion(stop_mode="max")
    with pytest.raises(ValueError, match="atol must be a non-negative"):
        StopCriterion(stop_mode="mixed", atol=-1.0)
    with pytest.raises(ValueError, match="stop_mode='mixed' only"):
        StopCriterion(stop_mode="rel", atol=1e-8)
    with pytest.raises(ValueError, match="stop_mode='mixed' only"):
        ij.fixed_point(lambda p, z, x: 0.5 * z, (), jnp.ones(2), atol=1e-8)


def test_mixed_metric_is_the_ratio_to_the_threshold():
    criterion = StopCriterion(tol=0.1, stop_mode="mixed", atol=0.01)
    abs_res, f_norm = jnp.array([0.0, 0.105, 0.5]), jnp.array([1.0, 1.0, 1.0])
    metric = stop_metric(criterion, abs_res, abs_res / f_norm)
    np.testing.assert_allclose(metric, [0.0, 0.105 / 0.11, 0.5 / 0.11], rtol=1e-6)
    assert metric_bound(criterion) == 1.0 and metric_bound(StopCriterion(tol=0.1)) == 0.1


A = jnp.array([[0.5, 0.2], [0.1, 0.4]], jnp.float32)  # contraction with its fixed point at 0


@pytest.mark.slow
@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_a_fixed_point_at_zero_meets_mixed_but_never_rel(solver):
    fn = lambda z: z @ A.T
    z0 = jnp.ones((1, 2), jnp.float32)
    z, info, _ = iterate(SOLVERS[solver](), fn, z0, StopCriterion(tol=1e-5, max_steps=40, stop_mode="mixed", atol=1e-7))
    assert bool(info.converged[0]) and float(info.abs_residual[0]) <= 1e-7 + 1e-5 * float(jnp.linalg.norm(fn(z)))
    assert float(jnp.abs(z).max()) < 1e-5
    # the relative residual of a linear contraction's iterates stays O(1) on the way to 0
    _, info, _ = iterate(SOLVERS["fixed_point_iteration"](), fn, z0, StopCriterion(tol=1e-5, max_steps=40, stop_mode="rel"))
    assert not bool(info.converged[0]) and float(info.rel_residual[0]) > 0.1


@pytest.mark.slow
@pytest.mark.parametrize("linear_solver", [CG(), GMRES()], ids=["cg", "gmres"])
def test_linear_solvers_with_a_zero_right_hand_side_need_mixed(linear_solver):
    # b = 0: "rel" asks for ||Mx|| <= 0, met only by an exact zero; "mixed" stops at atol.
    m = jnp.array([[2.0, 0.5], [0.5, 1.0]])
    matvec = lambda x: x @ m.T
    b, x0 = jnp.zeros((1, 2)), jnp.ones((1, 2))
    if isinstance(linear_solver, CG):
        b, x0, matvec = b[0], x0[0], (lambda x: m @ x)
    x, info = linear_solver.solve(matvec, b, x0, StopCriterion(tol=1e-6, max_steps=1, stop_mode="mixed", atol=10.0))
    assert bool(jnp.all(info.converged)) and int(jnp.max(info.steps)) <= 1
    x, info = linear_solver.solve(matvec, b, x0, StopCriterion(tol=1e-6, max_steps=20, stop_mode="mixed", atol=1e-8))
    assert bool(jnp.all(info.converged)) and float(jnp.max(jnp.abs(x))) < 1e-6


@pytest.mark.slow
def test_mixed_mode_gives_the_exact_gradient_through_the_adjoint():
    b = jnp.array([1.0, -2.0], jnp.float64)
    solve = lambda b: ij.fixed_point(
        lambda b, z, x: z @ A.T.astype(b.dtype) + b, b, (), z0=jnp.zeros(2, b.dtype), stop_mode="mixed", tol=1e-8, atol=1e-10
    )
    expected = np.linalg.inv(np.eye(2) - np.asarray(A, np.float64))
    np.testing.assert_allclose(jax.jacrev(solve)(b), expected, rtol=1e-6)


def test_divergence_ratio_stops_a_diverging_sample_early_and_leaves_the_others():
    from implicit_jax.solvers import FixedPointIteration

    scale = jnp.array([[0.5], [2.0]], jnp.float32)  # row 0 contracts, row 1 doubles its residual per step
    fn = lambda z: scale * z + 1.0
    z0 = jnp.zeros((2, 3), jnp.float32)
    _, info, _ = iterate(FixedPointIteration(), fn, z0, StopCriterion(tol=1e-6, max_steps=60, divergence_ratio=1e3))
    assert info.converged.tolist() == [True, False]
    assert int(info.steps) <= 25  # row 1 stops after about log2(1e3) = 10 steps, row 0 converges in ~21
    _, info, _ = iterate(FixedPointIteration(), fn, z0, StopCriterion(tol=1e-6, max_steps=60))
    assert int(info.steps) == 60  # without it, the diverging row runs to max_steps
    with pytest.raises(ValueError, match="divergence_ratio must be a number > 1"):
        StopCriterion(divergence_ratio=0.5)
