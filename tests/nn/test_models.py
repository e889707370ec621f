import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from implicit_jax.nn import DEQ, DEQMLP, ConvDEQ, ResidualCell


@pytest.mark.slow
def test_conv_deq_shapes_convergence_and_finite_gradients():
    model = ConvDEQ(1, 3, image_size=8, channels=8, groups=4, rngs=nnx.Rngs(0), tol=1e-3, max_steps=40)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 8, 8, 1)), jnp.float32)
    out = model(x)
    assert out.logits.shape == (4, 3) and out.info.rel_residual.shape == (4,)
    assert bool(jnp.all(out.info.converged)) and float(out.jacobian_penalty) == 0.0
    graphdef, state = nnx.split(model)
    grads = jax.grad(lambda s: jnp.sum(nnx.merge(graphdef, s)(x).logits ** 2))(state)
    assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))
    penalty = model(x, jacobian_key=jax.random.key(0)).jacobian_penalty
    assert float(penalty) > 0


def test_residual_cell_keeps_the_state_shape_and_its_jacobian_penalty_is_positive():
    # the conv DEQ's cell and DEQ.jacobian_penalty at a small size (the whole ConvDEQ is in the slow tier)
    deq = DEQ(ResidualCell(8, groups=4, rngs=nnx.Rngs(0)))
    z, x = jnp.zeros((2, 4, 4, 8), jnp.float32), jnp.asarray(np.random.default_rng(0).standard_normal((2, 4, 4, 8)), jnp.float32)
    out = deq.cell(z, x)
    assert out.shape == z.shape and bool(jnp.all(jnp.isfinite(out)))
    assert float(deq.jacobian_penalty(out, x, jax.random.key(0))) > 0


def test_models_reject_wrong_input_shapes():
    conv = ConvDEQ(1, 3, image_size=8, channels=8, groups=4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"expects images of shape \(batch, 8, 8, 1\)"):
        conv(jnp.zeros((2, 8, 8, 3), jnp.float32))
    mlp = DEQMLP(64, 10, hidden=16, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="expects 64 features"):
        mlp(jnp.zeros((2, 7, 7, 1), jnp.float32))
    with pytest.raises(ValueError, match="divisible by 4"):
        ConvDEQ(1, 3, image_size=10, rngs=nnx.Rngs(0))


@pytest.mark.slow
def test_deq_mlp_cell_is_a_contraction_and_its_solve_converges():
    mlp = DEQMLP(64, 10, hidden=16, spectral_bound=0.9, rngs=nnx.Rngs(0), tol=1e-5, max_steps=100)
    assert float(jnp.linalg.norm(mlp.deq.cell.linear(), 2)) <= 0.9 + 1e-5
    out = mlp(jnp.asarray(np.random.default_rng(0).standard_normal((3, 8, 8, 1)), jnp.float32))
    assert out.logits.shape == (3, 10) and bool(jnp.all(out.info.converged))


@pytest.mark.slow
def test_deq_mlp_in_bfloat16_solves_in_bfloat16_and_keeps_float32_parameters_and_gradients():
    x = jax.random.normal(jax.random.key(0), (8, 20))
    models = {dtype: DEQMLP(20, 3, hidden=32, dtype=dtype, tol=1e-2, rngs=nnx.Rngs(0)) for dtype in (jnp.float32, jnp.bfloat16)}
    outputs = {}
    for dtype, model in models.items():
        graphdef, params = nnx.split(model)

        def loss(p, graphdef=graphdef):
            out = nnx.merge(graphdef, p)(x)
            return jnp.mean(out.logits**2), out

        (_value, out), grads = jax.value_and_grad(loss, has_aux=True)(params)
        assert out.logits.dtype == jnp.float32 and bool(jnp.all(out.info.converged))
        assert all(g.dtype == jnp.float32 for g in jax.tree_util.tree_leaves(grads))
        outputs[dtype] = (out.logits, jnp.concatenate([jnp.ravel(g) for g in jax.tree_util.tree_leaves(grads)]))
    z, _ = models[jnp.bfloat16].deq(models[jnp.bfloat16].injection(x).astype(jnp.bfloat16))
    assert z.dtype == jnp.bfloat16
    (logits32, grads32), (logits16, grads16) = outputs[jnp.float32], outputs[jnp.bfloat16]
    np.testing.assert_allclose(logits16, logits32, atol=0.05)
    assert float(jnp.dot(grads16, grads32) / (jnp.linalg.norm(grads16) * jnp.linalg.norm(grads32))) > 0.99
