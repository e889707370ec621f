"""Eager calls run one cached ``jax.jit`` program, keyed on the map's traced program, never stale."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import implicit_jax as ij
from implicit_jax import _compiled
from implicit_jax.testing import tanh_layer

W = 0.5 * jnp.eye(3)
SCALE = 1.0


def reads_globals(p, z, x):
    return SCALE * (W @ z) + p * x


def solve(f=reads_globals, p=1.0, **kwargs):
    return ij.fixed_point(f, p, jnp.ones(3), tol=1e-7, max_steps=200, **kwargs)


@pytest.fixture(autouse=True)
def _empty_cache():
    _compiled._cache.clear()
    yield
    _compiled._cache.clear()


def test_a_repeated_eager_call_reuses_one_compiled_program():
    first = solve()
    (entry,) = _compiled._cache.values()
    second = solve(p=2.0)  # new values, same shapes: no new trace or compile
    assert len(_compiled._cache) == 1 and entry.jitted._cache_size() == 1
    chex.assert_trees_all_close(first, jnp.full(3, 2.0), atol=1e-5)
    chex.assert_trees_all_close(second, jnp.full(3, 4.0), atol=1e-5)
    # another function is another entry, even with the same program
    other = lambda p, z, x: reads_globals(p, z, x)
    solve(f=other)
    assert len(_compiled._cache) == 2


def test_rebinding_a_global_the_map_reads_is_not_stale():
    global W, SCALE
    old_w, old_scale = W, SCALE
    try:
        before = solve()
        W = 0.75 * jnp.eye(3)  # an array the map closes over: an argument of the program
        after_w = solve()
        SCALE = 0.5  # a Python scalar: part of the program's text
        after_scale = solve()
        op_by_op = solve(throw=True)  # the path that does not compile the solve as a whole
    finally:
        W, SCALE = old_w, old_scale
    chex.assert_trees_all_close(before, jnp.full(3, 2.0), atol=1e-5)
    chex.assert_trees_all_close(after_w, jnp.full(3, 4.0), atol=1e-5)  # z = x / (1 - 0.75)
    chex.assert_trees_all_close(after_scale, jnp.full(3, 1 / (1 - 0.375)), atol=1e-5)
    chex.assert_trees_all_close(op_by_op, after_scale, atol=1e-5)
    assert len(_compiled._cache) == 3  # a new array is a new key, and so is a new scalar


def _clipped(rule_slope):
    @jax.custom_jvp
    def clip(z):  # same name, same forward computation; only the derivative differs
        return jnp.clip(z, -10.0, 10.0)

    @clip.defjvp
    def clip_jvp(primals, tangents):
        (z,), (t,) = primals, tangents
        return clip(z), rule_slope * t

    return clip


def test_maps_with_custom_derivatives_are_cached_and_keep_their_own_rules():
    grads, maps = [], []
    for slope in (1.0, 0.0):
        clip = _clipped(slope)
        f = lambda p, z, x, clip=clip: 0.5 * clip(z) + p * x
        maps.append(f)  # alive: the cache drops the programs of a map that is gone
        for p in (1.0, 1.0):  # the second call reuses the program although custom_jvp traces anew
            grads.append(jax.grad(lambda p, f=f: jnp.sum(solve(f, p)))(p))
    assert len(_compiled._cache) == 2
    np.testing.assert_allclose(grads[:2], 6.0, rtol=1e-4)  # d/dp of 3 * 2p: slope 1 is the true Jacobian
    np.testing.assert_allclose(grads[2:], 3.0, rtol=1e-4)  # slope 0: the adjoint sees J = 0, dz/dp = x


class Layer:
    def __init__(self, w):
        self.w = w

    def apply(self, p, z, x):
        return self.w * z + p * x


def test_bound_methods_and_maps_with_static_leaves_are_keyed_on_the_user_function():
    layer = Layer(0.5)
    for p in (1.0, 2.0):
        solve(layer.apply, p)  # a new bound-method object at each access
    assert len(_compiled._cache) == 1
    _compiled._cache.clear()

    def with_activation(p, z, x):
        return p["act"](p["w"] * z) + x

    for w in (0.5, 0.25):  # params with a function leaf: solved through a new closure each call
        z = ij.fixed_point(with_activation, {"w": w, "act": jnp.tanh}, jnp.ones(3), tol=1e-7, max_steps=200)
    assert len(_compiled._cache) == 1
    chex.assert_trees_all_close(z, jnp.tanh(0.25 * z) + 1.0, atol=1e-5)


@pytest.mark.slow
def test_eager_results_and_gradients_match_the_op_by_op_solve():
    f, params, x, c = tanh_layer(d=6, batch=3, dtype=jnp.float64)

    def loss(p, **kwargs):
        return jnp.sum(c * ij.fixed_point(f, p, x, batched=True, tol=1e-10, max_steps=200, **kwargs))

    compiled_value, compiled_grad = jax.value_and_grad(loss)(params)
    assert len(_compiled._cache) == 1
    eager_value, eager_grad = jax.value_and_grad(lambda p: loss(p, throw=True))(params)  # throw=True: op by op
    chex.assert_trees_all_close((compiled_value, compiled_grad), (eager_value, eager_grad), rtol=1e-9)


def test_gradients_reach_values_the_map_closes_over_under_an_eager_grad():
    def solution(scale):
        return jnp.sum(solve(lambda p, z, x: scale * 0.5 * z + p * x))

    # z = x / (1 - s/2), dz/ds = x / 2 / (1 - s/2)^2 = 2 per entry at s = 1
    np.testing.assert_allclose(jax.grad(solution)(1.0), 6.0, rtol=1e-4)


def test_the_cache_keeps_the_most_recent_programs_only(monkeypatch):
    monkeypatch.setattr(_compiled, "CACHE_SIZE", 2)
    maps = [lambda p, z, x, k=k: 0.5 * z + p * x + k for k in range(3)]  # k is a literal: three programs
    for f in maps:
        solve(f)
    assert len(_compiled._cache) == 2
    solve(maps[2])  # the newest is still there
    assert len(_compiled._cache) == 2
    chex.assert_trees_all_close(solve(maps[0]), jnp.full(3, 2.0), atol=1e-5)  # the oldest was dropped and comes back


def test_inside_jit_the_solve_is_traced_into_the_enclosing_program():
    # A map that gathers with a closed-over integer index, differentiated inside jit (this
    # pattern broke when the cached program was also used under jit).
    index = jnp.array([2, 0, 1])

    def f(p, z, x):
        return 0.5 * z[index][index][index] + p * x  # the composed permutation is the identity

    def loss(p):
        return jnp.sum(ij.fixed_point(f, p, jnp.ones(3), tol=1e-7, max_steps=200))

    jitted = jax.jit(jax.grad(loss))(1.0)
    assert len(_compiled._cache) == 0
    np.testing.assert_allclose(jitted, 6.0, rtol=1e-4)  # z = 2 p x
    np.testing.assert_allclose(jax.grad(loss)(1.0), jitted, rtol=1e-6)  # eager: the cached program
    assert len(_compiled._cache) == 1


SHIFT = np.zeros(3)


def test_a_numpy_array_changed_in_place_is_not_stale():
    f = lambda p, z, x: 0.5 * z + p * x + SHIFT
    before = solve(f)
    SHIFT[:] = 1.0  # same object, new contents: keyed by its bytes
    try:
        after = solve(f)
    finally:
        SHIFT[:] = 0.0
    chex.assert_trees_all_close(before, jnp.full(3, 2.0), atol=1e-5)
    chex.assert_trees_all_close(after, jnp.full(3, 4.0), atol=1e-5)


H = jnp.array([[5.0, 0.3, 0.1], [0.3, 5.5, 0.2], [0.1, 0.2, 6.0]], jnp.float32)


def newton_like(b, w, _):  # Jacobian eigenvalues -4 to -5: the adjoint iteration diverges, GMRES is needed
    return w - (H @ w - b)


def backward_configs():
    return [key[4] for key in _compiled._cache]  # key = (solve, programs, layout, solver, backward, criterion)


def test_an_eager_gradient_compiles_the_rescue_only_for_an_adjoint_that_fails():
    f, params, x, c = tanh_layer(d=5, batch=2)

    def loss(p, tap):
        return jnp.sum(c * ij.fixed_point(f, p, x, batched=True, tol=1e-5, backward_tap=tap))

    grads, info = jax.grad(loss, argnums=(0, 1))(params, ij.backward_tap())
    assert backward_configs() == [ij.Implicit(fallback=None)]  # the adjoint converged: no GMRES compiled
    assert float(info.converged) == 1.0 and float(info.fallback_fraction) == 0.0
    chex.assert_trees_all_close(grads, jax.jit(jax.grad(loss, argnums=0))(params, None), rtol=1e-5, atol=1e-7)

    b = jnp.array([1.0, 2.0, 3.0])
    iteration = ij.Implicit(solver="fixed_point_iteration")  # diverges here (Anderson's adjoint would converge)

    def solution(b, tap=None):
        return ij.fixed_point(newton_like, b, (), z0=jnp.zeros(3), solver="broyden", backward=iteration, backward_tap=tap)

    grad, info = jax.grad(lambda b, tap: jnp.sum(solution(b, tap)), argnums=(0, 1))(b, ij.backward_tap())
    # the adjoint iteration failed, so the whole estimator ran from the root: rescued by GMRES
    assert backward_configs()[-2:] == [dataclasses.replace(iteration, fallback=None), iteration]
    assert float(info.fallback_fraction) == 1.0 and float(info.converged) == 1.0
    chex.assert_trees_all_close(grad, jnp.linalg.solve(H.T, jnp.ones(3)), rtol=1e-5)
    chex.assert_trees_all_close(jax.grad(lambda b: jnp.sum(solution(b)))(b), grad, rtol=1e-6)  # without a tap
    # a pullback run under jit cannot look at the failure: the whole estimator is traced
    _, pull = jax.vjp(solution, b)
    chex.assert_trees_all_close(jax.jit(pull)(jnp.ones(3))[0], grad, rtol=1e-5)
