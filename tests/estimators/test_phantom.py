"""Phantom gradients (Geng et al. 2021): closed forms on a linear map and the convergence trend of Fig. 1."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import implicit_jax as ij
from implicit_jax.testing import linear_closed_form, linear_problem, tanh_layer, tree_cosine


def neumann_adjoint(w, c, k, damping):
    """u = lambda * sum_{s<k} B^{T s} c with B = lambda W + (1 - lambda) I (eq. 17)."""
    b_t = (damping * w + (1 - damping) * jnp.eye(w.shape[0])).T
    terms, v = [], c
    for _ in range(k):
        terms.append(v)
        v = b_t @ v
    return damping * sum(terms)


@pytest.mark.slow
@pytest.mark.parametrize("estimator", [ij.PhantomNeumann, ij.PhantomUnroll])
@pytest.mark.parametrize("k,damping", [(1, 0.5), (3, 0.5), (5, 1.0), (7, 0.8)])
def test_linear_map_matches_the_closed_form(estimator, k, damping):
    f, params, x, c = linear_problem()
    _, expected, dx = linear_closed_form(params, x, c, neumann_adjoint(params["W"], c, k, damping))
    loss = lambda p, x: jnp.sum(c * ij.fixed_point(f, p, x, backward=estimator(k=k, damping=damping), tol=1e-13, max_steps=300))
    chex.assert_trees_all_close(jax.grad(loss, argnums=(0, 1))(params, x), (expected, dx), atol=1e-9)


def phantom_cosines(estimator, damping, ks):
    f, params, x, c = tanh_layer(d=64, batch=4, x_scale=0.3)

    def grad(bw):
        return jax.grad(lambda p: jnp.sum(c * ij.fixed_point(f, p, x, backward=bw, tol=1e-12, max_steps=300, batched=True)))(
            params
        )

    exact = grad("implicit")
    return [tree_cosine(grad(estimator(k=k, damping=damping)), exact) for k in ks]


@pytest.mark.slow
@pytest.mark.parametrize("estimator", [ij.PhantomNeumann, ij.PhantomUnroll])
@pytest.mark.parametrize("damping", [0.5, 1.0])
def test_cosine_to_exact_rises_with_k(estimator, damping):
    # Fig. 1 of Geng et al. (2021): cosine to the exact gradient increases with k, faster for lambda = 1.
    ks = [1, 2, 5, 10, 20]
    cosines = phantom_cosines(estimator, damping, ks)
    assert all(b > a for a, b in itertools.pairwise(cosines)), cosines
    assert cosines[-1] > (0.99 if damping == 0.5 else 0.999), cosines


@pytest.mark.slow
def test_unit_damping_converges_faster_and_k1_is_damping_independent():
    ks = [1, 5]
    half, one = phantom_cosines(ij.PhantomNeumann, 0.5, ks), phantom_cosines(ij.PhantomNeumann, 1.0, ks)
    np.testing.assert_allclose(half[0], one[0], rtol=1e-12)  # k = 1 is lambda * JFB
    assert one[1] > half[1]


@pytest.mark.slow
def test_unrolled_and_neumann_agree_at_an_exact_fixed_point():
    f, params, x, c = tanh_layer(d=16, batch=2)
    grad = lambda bw: jax.grad(
        lambda p: jnp.sum(c * ij.fixed_point(f, p, x, backward=bw, tol=1e-14, max_steps=500, batched=True))
    )(params)
    chex.assert_trees_all_close(grad(ij.PhantomUnroll(k=6, damping=0.7)), grad(ij.PhantomNeumann(k=6, damping=0.7)), atol=1e-10)


@pytest.mark.parametrize("estimator", [ij.PhantomNeumann, ij.PhantomUnroll])
def test_invalid_configuration(estimator):
    with pytest.raises(ValueError, match=r"k=.*>= 1"):
        estimator(k=0)
    with pytest.raises(ValueError, match=r"damping=.*\(0, 1\]"):
        estimator(damping=1.5)
