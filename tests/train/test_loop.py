import json
import os
import signal
import socket

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from implicit_jax.train import Checkpointer, base_config, fit, read_metrics
from implicit_jax.train.data import synthetic
from implicit_jax.train.health import NonFiniteError
from implicit_jax.train.lock import RunLockedError
from implicit_jax.train.loop import RunInterrupted


def smoke_config(**overrides):
    config = base_config()
    config.update(
        dict(
            dataset="synthetic",
            width=16,
            batch_size=32,
            num_epochs=1.0,
            log_every=2,
            checkpoint_every=4,
            eval_every=8,
            eval_batch_size=64,
            jac_reg_weight=0.1,
            learning_rate=1e-2,
            warmup_steps=3,
            warmup_unrolled_steps=3,
        )
    )
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
    assert json.loads((tmp_path / "config.json").read_text())["width"] == 16
    # both steps (warm-up and train) are compiled before the clock starts: the first window is no compile
    assert records[0]["event"] == "compiled" and records[0]["compile_seconds"] > 0
    assert train[0]["time"] < records[0]["compile_seconds"] / 2


class Kill(Exception):
    pass


@pytest.mark.slow
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


@pytest.mark.slow
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


def checkpoint_steps(workdir):
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


@pytest.mark.slow
def test_a_diverging_run_stops_naming_the_step_and_never_saves_non_finite_state(tmp_path):
    config = smoke_config(learning_rate=1e30, schedule="constant", optimizer="sgd", warmup_steps=0)
    with pytest.raises(
        NonFiniteError, match=r"training stopped at step (\d+): non-finite .*gradient in \d+ of \d+ arrays"
    ) as error:
        fit(config, str(tmp_path), dataset=DATA, progress=False)
    bad_step = int(error.value.args[0].split("step ")[1].split(":")[0])
    assert checkpoint_steps(tmp_path)[-1] == bad_step - 1  # the last good step, checkpointed on the way out
    checkpointer = Checkpointer(str(tmp_path / "checkpoints"), {})
    for step in checkpoint_steps(tmp_path):
        for leaf in checkpointer.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]:
            assert np.all(np.isfinite(leaf)), step


@pytest.mark.slow
def test_skip_drops_the_batches_that_hold_a_nan_and_finishes(tmp_path):
    images = DATA.train_images.copy()
    images[[5, 300]] = np.nan  # two examples, so two batches per epoch carry a NaN
    config = smoke_config(nonfinite_policy="skip", max_nonfinite=2, warmup_steps=0)
    with pytest.warns(RuntimeWarning, match="skipped the batch of step"):
        result = fit(config, str(tmp_path), dataset=DATA._replace(train_images=images), progress=False)
    events = [r for r in read_metrics(result.metrics_path) if r.get("event") == "skipped_nonfinite"]
    assert 1 <= len(events) <= 2 and result.test_accuracy > 0.5
    assert all(np.all(np.isfinite(leaf)) for leaf in leaves(result.state.params))
    with pytest.raises(NonFiniteError, match=r"after 0 recoveries \(skip\)"):
        fit(
            smoke_config(nonfinite_policy="skip", max_nonfinite=0, warmup_steps=0),
            str(tmp_path / "strict"),
            dataset=DATA._replace(train_images=images),
            progress=False,
        )


@pytest.mark.slow
def test_rollback_returns_to_the_checkpoint_with_a_lower_learning_rate(tmp_path):
    config = smoke_config(
        learning_rate=1e30,
        schedule="constant",
        optimizer="sgd",
        warmup_steps=0,
        nonfinite_policy="rollback",
        max_nonfinite=5,
        rollback_lr_factor=1e-10,
    )
    with pytest.warns(RuntimeWarning, match="rolled back to the checkpoint of step 0"):
        result = fit(config, str(tmp_path), dataset=DATA, progress=False)
    rollbacks = [r for r in read_metrics(result.metrics_path) if r.get("event") == "rollback"]
    assert 1 <= len(rollbacks) <= 5 and float(result.state.lr_scale) == pytest.approx(rollbacks[-1]["lr_scale"], rel=1e-6)
    assert all(np.all(np.isfinite(leaf)) for leaf in leaves(result.state))
    train = [r for r in read_metrics(result.metrics_path) if "loss" in r]
    assert all(r["lr_scale"] == pytest.approx(rollbacks[-1]["lr_scale"], rel=1e-6) for r in train)  # earlier records dropped


@pytest.mark.slow
def test_ctrl_c_checkpoints_marks_the_partial_window_and_resume_keeps_the_clock(tmp_path):
    def interrupt_at_step_5(step):
        if step == 5:
            raise KeyboardInterrupt

    config = smoke_config(log_every=2)
    with pytest.raises(RunInterrupted, match="after step 5; its state is checkpointed") as error:
        fit(config, str(tmp_path), dataset=DATA, progress=False, on_step=interrupt_at_step_5)
    assert error.value.step == 5 and error.value.signum == signal.SIGINT
    records = read_metrics(str(tmp_path / "metrics.jsonl"))
    assert records[-1]["step"] == 5 and records[-1]["partial"] is True
    assert checkpoint_steps(tmp_path)[-1] == 5 and not (tmp_path / "run.lock").exists()
    time_at_4 = next(r["time"] for r in records if r["step"] == 4 and "loss" in r)
    result = fit(config, str(tmp_path), dataset=DATA, progress=False, resume=True)
    resumed = [r for r in read_metrics(result.metrics_path) if "loss" in r]
    assert [r["step"] for r in resumed][:4] == [2, 4, 5, 6] and [r.get("partial") for r in resumed[:4]] == [
        None,
        None,
        True,
        None,
    ]
    assert resumed[3]["time"] > time_at_4 and result.train_seconds > time_at_4  # the clock continued


def test_a_second_live_run_and_a_file_as_workdir_are_refused(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.lock").write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
    with pytest.raises(RunLockedError, match=f"PID {os.getppid()}"):
        fit(smoke_config(), str(tmp_path / "run"), dataset=DATA, progress=False)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        fit(smoke_config(), str(tmp_path / "file"), dataset=DATA, progress=False)
