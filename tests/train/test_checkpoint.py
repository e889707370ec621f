import jax.numpy as jnp
import numpy as np
import pytest

from implicit_jax.train.checkpoint import Checkpointer


def test_roundtrip_and_incompatible_models_are_refused(tmp_path):
    state = {"w": jnp.arange(6.0, dtype=jnp.float32).reshape(2, 3), "step": jnp.asarray(7, jnp.int32)}
    saver = Checkpointer(str(tmp_path / "ck"), {"model": "deq_mlp", "width": 3})
    saver.save(7, state)
    assert saver.latest_step() == 7
    like = {"w": jnp.zeros((2, 3), jnp.float32), "step": jnp.asarray(0, jnp.int32)}
    restored = saver.restore(7, like)
    np.testing.assert_array_equal(restored["w"], state["w"])
    assert int(restored["step"]) == 7
    saver.close()

    other = Checkpointer(str(tmp_path / "ck"), {"model": "deq_mlp", "width": 4})
    with pytest.raises(ValueError, match="width: checkpoint 3 vs config 4"):
        other.restore(7, like)
    same = Checkpointer(str(tmp_path / "ck"), {"model": "deq_mlp", "width": 3})
    with pytest.raises(ValueError, match="do not match"):
        same.restore(7, {"w": jnp.zeros((3, 3), jnp.float32), "step": jnp.asarray(0, jnp.int32)})
    assert same.latest_step() == 7  # nothing was overwritten
