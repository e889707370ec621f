import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import implicit_jax as ij
from implicit_jax.nn import DEQ, MLPCell, unrolled
from implicit_jax.testing import tree_cosine


def make(backward="implicit", **kw):
    cell = MLPCell(8, spectral_bound=0.8, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((5, 8)), jnp.float32)
    return DEQ(cell, backward=backward, tol=1e-6, max_steps=100, **kw), x


@pytest.mark.slow
def test_deq_returns_a_fixed_point_of_its_cell_with_per_sample_info():
    deq, x = make()
    z, info = deq(x)
    chex.assert_trees_all_close(deq.cell(z, x), z, atol=1e-5)
    assert info.rel_residual.shape == (5,) and bool(jnp.all(info.converged))


def loss_of(deq, x):
    graphdef, state = nnx.split(deq)

    def loss(state):
        z, _ = nnx.merge(graphdef, state)(x)
        return jnp.sum(jnp.sin(z))

    return loss, state


@pytest.mark.slow
def test_implicit_gradient_matches_finite_differences_in_the_cell_kernel():
    deq, x = make()
    loss, state = loss_of(deq, x)
    grads = jax.grad(loss)(state)
    direction = jax.tree_util.tree_map(lambda g: jnp.asarray(np.random.default_rng(1).standard_normal(g.shape), g.dtype), grads)
    eps = 1e-2
    plus = loss(jax.tree_util.tree_map(lambda p, d: p + eps * d, state, direction))
    minus = loss(jax.tree_util.tree_map(lambda p, d: p - eps * d, state, direction))
    fd = (plus - minus) / (2 * eps)
    analytic = sum(jnp.sum(g * d) for g, d in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(direction)))
    np.testing.assert_allclose(analytic, fd, rtol=2e-2)


@pytest.mark.slow
@pytest.mark.parametrize("backward", ["unroll", "shine", "phantom_unroll"])
def test_other_estimators_point_the_same_way_as_implicit(backward):
    deq, x = make()
    exact = jax.grad(loss_of(deq, x)[0])(loss_of(deq, x)[1])
    solver = "broyden" if backward == "shine" else "anderson"
    other, _ = make(backward, solver=solver)
    loss, state = loss_of(other, x)
    assert tree_cosine(jax.grad(loss)(state), exact) > (0.999 if backward == "unroll" else 0.9)


def test_unrolled_warmup_applies_the_cell_n_times_and_backprops_through_it():
    deq, x = make()
    z, info = deq(x, unrolled_steps=3)
    manual = jnp.zeros_like(x)
    for _ in range(3):
        manual = deq.cell(manual, x)
    chex.assert_trees_all_close(z, manual, rtol=1e-6)
    assert int(info.steps) == 3 and not bool(jnp.any(info.converged))
    with pytest.raises(ValueError, match="unrolled_steps must be an integer >= 1"):
        deq(x, unrolled_steps=0)


@pytest.mark.slow
def test_backward_tap_reports_the_adjoint_solve():
    deq, x = make()
    graphdef, state = nnx.split(deq)

    def loss(state, tap):
        return jnp.sum(nnx.merge(graphdef, state)(x, backward_tap=tap)[0])

    info = jax.grad(loss, argnums=1)(state, ij.backward_tap())
    assert float(info.converged) == 1.0 and float(info.steps) >= 1


def test_bad_options_fail_at_construction():
    cell = MLPCell(4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="unknown backward"):
        DEQ(cell, backward="adjoint")
    with pytest.raises(ValueError, match="max_steps"):
        DEQ(cell, max_steps=0)
    with pytest.raises(ValueError, match="shine"):
        DEQ(cell, backward="shine", solver="fixed_point_iteration")


def test_unrolled_helper_residual_is_the_last_step_change():
    z, info = unrolled(lambda z: 0.5 * z + 1.0, jnp.zeros((2, 3)), 4)
    chex.assert_trees_all_close(z, jnp.full((2, 3), 1.875))
    np.testing.assert_allclose(info.abs_residual, np.full(2, 0.125 * np.sqrt(3)), rtol=1e-6)


class NormCell(nnx.Module):
    """tanh(norm(dropout(W z)) + x): a cell whose layers may carry mutable state."""

    def __init__(self, norm: nnx.Module, dropout: nnx.Module):
        self.linear = nnx.Linear(4, 4, rngs=nnx.Rngs(0))
        self.norm, self.dropout = norm, dropout

    def __call__(self, z, x):
        return jnp.tanh(self.norm(self.dropout(0.5 * self.linear(z))) + x)


@pytest.mark.filterwarnings("ignore:scatter inputs have incompatible types:FutureWarning")  # BatchNorm under float64
@pytest.mark.parametrize(
    "stateful, names",
    [
        ("batchnorm", "norm.mean, norm.var"),
        ("dropout", "dropout.rngs.count"),
    ],
)
@pytest.mark.parametrize("unrolled_steps", [None, 3])
def test_a_cell_that_updates_its_own_state_is_rejected_naming_the_variables(stateful, names, unrolled_steps):
    # Left unchecked these run silently: the solver's copies of the cell take the updates, so
    # BatchNorm's running statistics never move and dropout draws the same mask on every call.
    rngs = nnx.Rngs(1)
    norm = nnx.BatchNorm(4, rngs=rngs) if stateful == "batchnorm" else nnx.LayerNorm(4, rngs=rngs)
    dropout = nnx.Dropout(0.5, rngs=rngs) if stateful == "dropout" else nnx.Dropout(0.5, deterministic=True, rngs=rngs)
    deq = DEQ(NormCell(norm, dropout))
    with pytest.raises(ValueError, match=f"changed its own state when called \\({names}\\).*LayerNorm"):
        deq(jnp.ones((2, 4)), unrolled_steps=unrolled_steps)


@pytest.mark.slow
def test_the_same_layers_in_inference_mode_are_accepted_and_differentiable():
    rngs = nnx.Rngs(1)
    deq = DEQ(
        NormCell(nnx.BatchNorm(4, use_running_average=True, rngs=rngs), nnx.Dropout(0.5, deterministic=True, rngs=rngs)), tol=1e-6
    )
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 4)), jnp.float32)
    _z, info = deq(x)
    assert bool(jnp.all(info.converged))
    graphdef, params, rest = nnx.split(deq, nnx.Param, ...)  # the dropout layer keeps an (integer) RNG count
    grads = jax.grad(lambda p: jnp.sum(jnp.sin(nnx.merge(graphdef, p, rest)(x)[0])))(params)
    chex.assert_tree_all_finite(grads)
    assert float(jnp.abs(grads["cell"]["linear"]["kernel"][...]).sum()) > 0
