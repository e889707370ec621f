import jax.numpy as jnp
import numpy as np
import pytest

from implicit_jax.train.checkpoint import Checkpointer, IncompatibleCheckpointError


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


def test_training_seconds_are_kept_and_an_unreadable_latest_checkpoint_is_skipped(tmp_path):
    like = {"w": jnp.zeros((2, 3), jnp.float32)}
    saver = Checkpointer(str(tmp_path / "ck"), {"width": 3}, max_to_keep=3)
    for step in (4, 8):
        saver.save(step, {"w": jnp.full((2, 3), float(step), jnp.float32)}, train_seconds=1.5 * step)
    restored = saver.restore_latest(like)
    assert restored.step == 8 and restored.train_seconds == 12.0 and float(restored.state["w"][0, 0]) == 8.0
    # tear the newest checkpoint: delete its array files (a save cut short, a disk cleaned by hand)
    for path in sorted((tmp_path / "ck" / "8" / "state").rglob("*")):
        if path.is_file():
            path.unlink()
    with pytest.warns(RuntimeWarning, match=r"ck/8 cannot be read .*skipping it and trying an older one"):
        restored = saver.restore_latest(like)
    assert restored.step == 4 and restored.train_seconds == 6.0 and float(restored.state["w"][0, 0]) == 4.0
    saver.close()
    other = Checkpointer(str(tmp_path / "ck"), {"width": 4})
    with pytest.raises(IncompatibleCheckpointError, match="width: checkpoint 3 vs config 4"):
        other.restore_latest(like)  # another model's checkpoint is an error, never skipped
    assert Checkpointer(str(tmp_path / "empty"), {"width": 3}).restore_latest(like) is None
