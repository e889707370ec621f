import json

import jax
import numpy as np
import pytest

from implicit_jax.train import base_config, fit, read_metrics
from implicit_jax.train.data import synthetic


def smoke_config(**overrides):
    config = base_config()
    config.update(dict(dataset="synthetic", width=16, batch_size=32, num_epochs=1.0, log_every=2, checkpoint_every=4,
                       eval_every=8, eval_batch_size=64, jac_reg_weight=0.1, learning_rate=1e-2, warmup_steps=3, warmup_unrolled_steps=3))
    config.update(overrides)
    return config


DATA = synthetic(num_train=512, num_test=128)  # 16 steps per epoch at batch 32


def leaves(state):
    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(state)]


def test_fit_learns_and_writes_metrics_plots_and_checkpoints(tmp_path):
    result = fit(smoke_config(num_epochs=3.0), str(tmp_path), dataset=DATA, progress=False)
    records = read_metrics(result.metrics_path)
    assert result.test_accuracy > 0.6  # 4 classes, chance is 0.25
    train = [r for r in records if "loss" in r]
    assert train[0]["warmup"] and not train[-1]["warmup"]
    assert train[-1]["loss"] < train[0]["loss"]
    assert [r["step"] for r in records if "test_accuracy" in r] == [8, 16, 24, 32, 40, 48]
    assert {"forward_steps", "forward_residual", "backward_steps", "jacobian_penalty"} <= set(train[-1])
    assert (tmp_path / "loss.png").exists() and (tmp_path / "accuracy.png").exists()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == ["44", "48"]
    assert json.load(open(tmp_path / "config.json"))["width"] == 16


class Kill(Exception):
    pass


def test_a_killed_and_resumed_run_ends_with_the_uninterrupted_parameters(tmp_path):
    config = smoke_config()
    straight = fit(config, str(tmp_path / "straight"), dataset=DATA, progress=False)

    def kill_at_step_7(step):
        if step == 7:
            raise Kill

    with pytest.raises(Kill):
        fit(config, str(tmp_path / "resumed"), dataset=DATA, progress=False, on_step=kill_at_step_7)
    # the interrupted run saved step 7 on its way out, beside the periodic step-4 checkpoint
    assert sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir() if p.name.isdigit()) == ["4", "7"]
    resumed = fit(config, str(tmp_path / "resumed"), dataset=DATA, progress=False, resume=True)
    for a, b in zip(leaves(straight.state), leaves(resumed.state)):
        np.testing.assert_array_equal(a, b)
    steps = [r["step"] for r in read_metrics(resumed.metrics_path) if "loss" in r]
    assert steps == sorted(set(steps))  # no step logged twice


def test_existing_run_is_not_overwritten_and_incompatible_resume_is_refused(tmp_path):
    fit(smoke_config(num_epochs=0.25), str(tmp_path), dataset=DATA, progress=False)
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    with pytest.raises(ValueError, match="already holds checkpoints"):
        fit(smoke_config(num_epochs=0.25), str(tmp_path), dataset=DATA, progress=False)
    with pytest.raises(ValueError, match="width: checkpoint 16 vs config 24"):
        fit(smoke_config(num_epochs=0.25, width=24), str(tmp_path), dataset=DATA, progress=False, resume=True)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before


def test_bad_dataset_and_batch_size_fail_before_training(tmp_path):
    with pytest.raises(ValueError, match="labels must have shape"):
        fit(smoke_config(), str(tmp_path), dataset=DATA._replace(train_labels=DATA.train_labels[:10]), progress=False)
    with pytest.raises(ValueError, match="exceeds"):
        fit(smoke_config(batch_size=1024), str(tmp_path), dataset=DATA, progress=False)
    assert not (tmp_path / "metrics.jsonl").exists()
