"""The flat (batch, n) view of pytree states."""

import chex
import jax.numpy as jnp
import pytest

from implicit_jax import _flat


def test_round_trip_keeps_shapes_and_dtypes():
    z = {"a": jnp.ones((2, 3), jnp.float32), "b": (jnp.zeros((2,), jnp.float64), jnp.full((2, 2, 2), 3.0, jnp.float32))}
    for batched in [False, True]:
        layout = _flat.layout_of(z, batched)
        flat = _flat.flatten(layout, z)
        assert flat.shape == ((2, 3 + 1 + 4) if batched else (1, 6 + 2 + 8))
        assert flat.dtype == jnp.float64
        back = _flat.unflatten(layout, flat)
        chex.assert_trees_all_equal(back, z)
        chex.assert_trees_all_equal_dtypes(back, z)


def test_batched_layout_needs_a_common_leading_axis():
    with pytest.raises(ValueError, match="same leading batch size"):
        _flat.layout_of((jnp.ones((2, 3)), jnp.ones((3, 3))), batched=True)
    with pytest.raises(ValueError, match="leading batch axis"):
        _flat.layout_of(jnp.ones(()), batched=True)
    with pytest.raises(ValueError, match="empty pytree"):
        _flat.layout_of({}, batched=False)


def test_safe_divide_masks_small_denominators():
    q, ok = _flat.safe_divide(jnp.array([1.0, 1.0]), jnp.array([2.0, 0.0]))
    chex.assert_trees_all_close(q, jnp.array([0.5, 0.0]))
    assert ok.tolist() == [True, False]
