import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import implicit_jax as ij
from implicit_jax.bilevel.unrolled_methods.fds import shared_index
from tests.bilevel import sgd_problem as P

T = 12


def run(method, num_values):
    return ij.unrolled_hypergradient(P.make_step(T), P.hparams(num_values), P.state0(), T, P.outer_loss, method=method)


def test_shared_index_blocks_are_contiguous_and_cover_every_value():
    idx = np.asarray(jax.vmap(lambda t: shared_index(t, 3, 10))(jnp.arange(10)))
    np.testing.assert_array_equal(idx, [0, 0, 0, 0, 1, 1, 1, 2, 2, 2])  # floor(K t / T)
    assert np.all(np.diff(np.asarray(jax.vmap(lambda t: shared_index(t, 7, 100))(jnp.arange(100)))) >= 0)
    np.testing.assert_array_equal(np.unique(jax.vmap(lambda t: shared_index(t, 7, 100))(jnp.arange(100))), np.arange(7))
    assert float(ij.shared_schedule(jnp.arange(4.0), 99, 100)) == 3.0
    tree = ij.shared_schedule({"a": jnp.arange(2.0), "b": jnp.arange(5.0) * 10}, 6, 10)
    assert float(tree["a"]) == 1.0 and float(tree["b"]) == 30.0


@pytest.mark.slow
def test_fds_without_sharing_equals_reverse():
    value_f, fds = run("fds", T)
    value_r, reverse = run("reverse", T)
    assert float(value_f) == pytest.approx(float(value_r), rel=1e-14)
    chex.assert_trees_all_close(fds, reverse, rtol=1e-10, atol=1e-16)


@pytest.mark.slow
def test_fds_with_sharing_is_the_gradient_wrt_the_shared_values():
    _, fds = run("fds", 3)
    _, reverse = run("reverse", 3)
    chex.assert_trees_all_close(fds, reverse, rtol=1e-10, atol=1e-16)
    # ... which is the sum of the per-step gradients over each block (chain rule).
    per_step_h = P.hparams(T)
    per_step_h["log_lr"] = jnp.full((T,), -3.0)
    _, per_step = ij.unrolled_hypergradient(P.make_step(T), per_step_h, P.state0(), T, P.outer_loss, method="fds")
    blocks = np.asarray(jax.vmap(lambda t: shared_index(t, 3, T))(jnp.arange(T)))
    summed = np.array([per_step["log_lr"][blocks == k].sum() for k in range(3)])
    np.testing.assert_allclose(fds["log_lr"], summed, rtol=1e-10)


def test_chunked_tangents_give_the_same_gradient():
    _, whole = run("fds", T)
    _, chunked = run(ij.FDS(chunk_size=4), T)
    chex.assert_trees_all_close(whole, chunked, rtol=1e-12)


def test_memory_does_not_grow_with_the_horizon():
    def temp_bytes(method, num_steps):
        fn = jax.jit(
            lambda h: ij.unrolled_hypergradient(P.make_step(num_steps), h, P.state0(), num_steps, P.outer_loss, method=method)
        )
        return fn.lower(P.hparams(4)).compile().memory_analysis().temp_size_in_bytes

    assert temp_bytes("fds", 2000) == temp_bytes("fds", 200)
    assert temp_bytes("reverse", 2000) > 5 * temp_bytes("reverse", 200)


def test_bad_chunk_size():
    with pytest.raises(ValueError, match="chunk_size"):
        ij.FDS(chunk_size=0)
