"""Mixed precision: bfloat16 / float16 states solve and differentiate like float32, within what the dtype resolves.

Policy under test: the state and f stay in the user's dtype; norms, Anderson's Gram matrix and
GMRES run in float32 (``_flat.accumulation_dtype``). A tolerance the dtype cannot reach warns.
"""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import implicit_jax as ij
from implicit_jax._flat import accumulation_dtype
from implicit_jax.fixed_point import SENSIBLE_TOL
from implicit_jax.testing import tanh_layer, tree_cosine

NORM = 0.8  # ||W||: errors are amplified by at most 1 / (1 - 0.8) = 5


def _cast(tree, dtype):
    return jax.tree_util.tree_map(lambda a: a.astype(dtype), tree)


@functools.cache
def _float32_reference(width):
    f, params, x, c = tanh_layer(d=width, batch=4, norm=NORM, x_scale=1.0, dtype=jnp.float32)
    z32 = ij.fixed_point(f, params, x, batched=True, tol=1e-6, max_steps=200)
    grad32 = jax.grad(lambda p: jnp.sum(c * ij.fixed_point(f, p, x, batched=True, tol=1e-6, max_steps=200)))(params)
    return f, params, x, c, z32, grad32


CASES = [(solver, dtype, 64) for solver in ("anderson", "broyden", "fixed_point_iteration") for dtype in ("bfloat16", "float16")]
CASES += [(solver, "bfloat16", 1024) for solver in ("anderson", "broyden", "fixed_point_iteration")]  # sums over 1024 entries


@pytest.mark.slow
@pytest.mark.parametrize("solver, dtype, width", CASES, ids=[f"{s}-{d}-{w}" for s, d, w in CASES])
def test_low_precision_matches_float32(solver, dtype, width):
    f, params, x, c, z32, grad32 = _float32_reference(width)
    tol = SENSIBLE_TOL[dtype]
    p16, x16, c16 = _cast(params, dtype), x.astype(dtype), c.astype(dtype)

    def loss(p):
        return jnp.sum(c16 * ij.fixed_point(f, p, x16, solver=solver, batched=True, tol=tol)).astype(jnp.float32)

    z, info = ij.fixed_point(f, p16, x16, solver=solver, batched=True, tol=tol, return_info=True)
    assert z.dtype == jnp.dtype(dtype) and info.abs_residual.dtype == jnp.float32
    assert bool(info.converged.all())
    error = jnp.linalg.norm(z.astype(jnp.float32) - z32, axis=-1) / jnp.linalg.norm(z32, axis=-1)
    assert float(error.max()) <= 2 * tol / (1 - NORM)
    grad = jax.grad(loss)(p16)
    assert float(tree_cosine(_cast(grad, jnp.float32), grad32)) >= 0.99


ESTIMATORS = ["implicit", "implicit_jvp", "shine", "jfb", "phantom_unroll", "phantom_neumann", "unroll"]


@functools.cache
def _float32_gradient(backward):
    f, params, x, c = tanh_layer(d=64, batch=4, norm=NORM, x_scale=1.0, dtype=jnp.float32)
    solver = "broyden" if backward == "shine" else "anderson"
    return jax.grad(lambda p: jnp.sum(c * ij.fixed_point(f, p, x, solver=solver, backward=backward, batched=True, tol=1e-5)))(
        params
    )


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("backward", ESTIMATORS)
def test_every_estimator_in_low_precision_matches_its_float32_gradient(backward, dtype):
    f, params, x, c = tanh_layer(d=64, batch=4, norm=NORM, x_scale=1.0, dtype=jnp.float32)
    solver = "broyden" if backward == "shine" else "anderson"
    p16, x16, c16 = _cast(params, dtype), x.astype(dtype), c.astype(dtype)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        grad = jax.grad(
            lambda p: jnp.sum(
                c16 * ij.fixed_point(f, p, x16, solver=solver, backward=backward, batched=True, tol=SENSIBLE_TOL[dtype])
            ).astype(jnp.float32)
        )(p16)
    assert not [w for w in caught if "scatter" in str(w.message)], [str(w.message) for w in caught]  # no lossy float32 writes
    assert jax.tree_util.tree_leaves(grad)[0].dtype == jnp.dtype(dtype)
    assert float(tree_cosine(_cast(grad, jnp.float32), _float32_gradient(backward))) >= 0.99


@pytest.mark.slow
def test_argmin_in_bfloat16_matches_the_float32_hypergradient():
    a = jax.random.normal(jax.random.key(1), (40, 16), jnp.float32)
    b = jax.random.normal(jax.random.key(2), (40,), jnp.float32)

    def inner(w, log_lam):
        residual = a.astype(w.dtype) @ w - b.astype(w.dtype)
        return 0.5 * jnp.mean(residual**2) + 0.5 * jnp.exp(log_lam) * jnp.sum(w**2)

    def hypergradient(dtype, tol):
        outer = lambda lam: jnp.sum(ij.argmin(inner, lam.astype(dtype), jnp.zeros(16, dtype), tol=tol).astype(jnp.float32))
        return float(jax.grad(outer)(jnp.array(-1.0, jnp.float32)))

    reference = hypergradient(jnp.float32, 1e-6)  # 0.1296
    for dtype, tol, bound in [(jnp.bfloat16, 1e-2, 0.06), (jnp.bfloat16, 1e-3, 0.01), (jnp.float16, 1e-3, 0.01)]:
        low = hypergradient(dtype, tol)  # measured: 0.1348, 0.1299, 0.1294
        assert abs(low - reference) <= bound * abs(reference), (dtype, tol, low, reference)


@pytest.mark.slow
def test_gmres_adjoint_in_bfloat16_accumulates_in_float32():
    f, params, x, c = tanh_layer(d=64, batch=4, norm=NORM, x_scale=1.0, dtype=jnp.float32)
    grad32 = jax.grad(lambda p: jnp.sum(c * ij.fixed_point(f, p, x, batched=True, tol=1e-6)))(params)
    p16, x16, c16 = _cast(params, jnp.bfloat16), x.astype(jnp.bfloat16), c.astype(jnp.bfloat16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        grad = jax.grad(
            lambda p: jnp.sum(
                c16 * ij.fixed_point(f, p, x16, backward=ij.Implicit(solver=ij.GMRES()), batched=True, tol=1e-2)
            ).astype(jnp.float32)
        )(p16)
    assert not [w for w in caught if "scatter" in str(w.message)], [str(w.message) for w in caught]  # no lossy float32 writes
    assert jax.tree_util.tree_leaves(grad)[0].dtype == jnp.bfloat16
    assert float(tree_cosine(_cast(grad, jnp.float32), grad32)) >= 0.99


def test_accumulation_dtype_is_at_least_float32():
    assert accumulation_dtype(jnp.bfloat16) == jnp.float32 and accumulation_dtype(jnp.float16) == jnp.float32
    assert accumulation_dtype(jnp.float32) == jnp.float32 and accumulation_dtype(jnp.float64) == jnp.float64


def test_an_unreachable_tolerance_warns_at_trace_time_naming_the_dtype():
    # The warning comes from tracing, so jax.eval_shape shows it without compiling anything.
    f = lambda p, z, x: jnp.tanh(0.5 * z + x)
    x = jax.ShapeDtypeStruct((4,), jnp.bfloat16)
    with pytest.warns(UserWarning, match=r"tol=1e-05 is below what a bfloat16 state can resolve.*tol >= 0.01"):
        jax.eval_shape(lambda x: ij.fixed_point(f, (), x), x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        jax.eval_shape(lambda x: ij.fixed_point(f, (), x, tol=1e-2), x)
        jax.eval_shape(lambda x: ij.fixed_point(f, (), x, tol=1e-5, stop_mode="abs"), x)  # absolute: scale unknown, no warning
    assert not [w for w in caught if "can resolve" in str(w.message)], [str(w.message) for w in caught]
    np.testing.assert_allclose(SENSIBLE_TOL["float32"], 1e-5)
