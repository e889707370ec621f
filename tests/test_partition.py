"""Array / non-array split of pytrees (models holding functions or strings as leaves)."""

import jax
import jax.numpy as jnp
import numpy as np

from implicit_jax._partition import combine, has_static_leaves, is_array_leaf, partition, static_leaf_types


def test_partition_and_combine_round_trip():
    tree = {"w": jnp.ones(2), "act": jnp.tanh, "name": "mlp", "scale": 0.5, "n": np.int32(3)}
    arrays, static = partition(tree)
    assert sum(a is not None for a in arrays) == 3  # w, scale, n
    assert has_static_leaves(tree) and "str" in static_leaf_types(tree) and len(static_leaf_types(tree)) == 2
    doubled = jax.tree_util.tree_map(lambda a: a * 2, arrays)
    out = combine(doubled, static)
    assert out["act"] is jnp.tanh and out["name"] == "mlp" and out["scale"] == 1.0
    np.testing.assert_array_equal(out["w"], 2 * jnp.ones(2))


def test_python_numbers_and_arrays_are_array_leaves():
    assert all(is_array_leaf(v) for v in (1.0, 2, True, np.float32(1), np.ones(2), jnp.ones(2)))
    assert not any(is_array_leaf(v) for v in ("a", jnp.tanh, object()))
    assert not has_static_leaves({"a": jnp.ones(2), "b": 3.0})
