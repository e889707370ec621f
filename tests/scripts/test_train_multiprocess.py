"""scripts/train.py as a multi-process run: processes on 127.0.0.1, CPU collectives (Gloo).

Each test starts its own processes, bounds them in time and kills whatever is left.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

pytestmark = pytest.mark.slow  # subprocesses and whole runs: the full suite, not the quick tier

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ["--config", "configs/smoke.py", "--progress=false", "--config.num_epochs=2", "--config.eval_every=16"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(workdir, num_processes, *extra, devices_per_process=1):
    port = free_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}")
    processes = []
    for index in range(num_processes):
        flags = (
            []
            if num_processes == 1
            else [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={num_processes}", f"--process_id={index}"]
        )
        processes.append(
            subprocess.Popen(
                [sys.executable, "scripts/train.py", *SMOKE, "--workdir", str(workdir), *flags, *extra],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return processes


def finish(processes, timeout=240):
    deadline = time.time() + timeout
    outputs = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=max(1.0, deadline - time.time()))
            outputs.append((process.returncode, out, err))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return outputs


def run(workdir, num_processes, *extra, devices_per_process=1):
    outputs = finish(start(workdir, num_processes, *extra, devices_per_process=devices_per_process))
    for code, _, err in outputs:
        assert code == 0, err[-3000:]
    return outputs


def final_params(workdir):
    folder = Path(workdir) / "checkpoints"
    last = max(int(p.name) for p in folder.iterdir() if p.name.isdigit())
    manager = ocp.CheckpointManager(str(folder), item_names=("state", "meta"))
    meta = manager.restore(last, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])  # read on this process's one device
    target = [jax.ShapeDtypeStruct(tuple(shape), np.dtype(dtype), sharding=device) for shape, dtype in meta["leaves"]]
    leaves = manager.restore(last, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
    manager.close()
    return last, [np.asarray(leaf) for leaf in leaves]


def records(workdir):
    return [json.loads(line) for line in open(Path(workdir) / "metrics.jsonl")]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("single")
    run(workdir, 1)
    return workdir


def test_two_processes_reach_the_single_process_parameters_and_write_each_record_once(single, tmp_path):
    outputs = run(tmp_path, 2)
    printed = [[line for line in out.splitlines() if not line.startswith("[Gloo]")] for _, out, _ in outputs]
    assert "final test accuracy" in printed[0][0] and printed[1] == []  # process 1 prints nothing
    step, ours = final_params(tmp_path)
    reference_step, reference = final_params(single)
    assert step == reference_step == 32
    for a, b in zip(ours, reference):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)  # float32 all-reduce order through 32 Adam steps
    steps = [r["step"] for r in records(tmp_path) if "loss" in r]
    assert steps == sorted(set(steps)) and len(records(tmp_path)) == len(records(single))
    evaluation = [r for r in records(tmp_path) if "test_accuracy" in r]
    assert evaluation[-1]["test_accuracy"] == pytest.approx(
        [r for r in records(single) if "test_accuracy" in r][-1]["test_accuracy"], abs=0.02
    )


def test_two_processes_resume_after_a_kill(single, tmp_path):
    processes = start(tmp_path, 2, "--config.num_epochs=4")
    deadline = time.time() + 240
    checkpoints = tmp_path / "checkpoints"
    while time.time() < deadline and not (checkpoints.exists() and any(p.name == "20" for p in checkpoints.iterdir())):
        assert all(p.poll() is None for p in processes), finish(processes)
        time.sleep(0.2)
    for process in processes:
        process.send_signal(signal.SIGKILL)
    finish(processes)
    assert not (tmp_path / "metrics.jsonl").read_text().count('"step": 64')  # it was cut short
    run(tmp_path, 2, "--config.num_epochs=4", "--resume")
    straight = tmp_path.parent / (tmp_path.name + "_straight")
    run(straight, 2, "--config.num_epochs=4")
    (step, resumed), (_, uninterrupted) = final_params(tmp_path), final_params(straight)
    assert step == 64
    for a, b in zip(resumed, uninterrupted):
        np.testing.assert_array_equal(a, b)
    steps = [r["step"] for r in records(tmp_path) if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 64


def test_two_processes_of_two_devices_each(single, tmp_path):
    run(tmp_path, 2, devices_per_process=2)
    _, ours = final_params(tmp_path)
    _, reference = final_params(single)
    for a, b in zip(ours, reference):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)  # float32 all-reduce order through 32 Adam steps


def test_sigterm_to_one_process_stops_both_at_one_step_with_a_checkpoint(tmp_path):
    processes = start(tmp_path, 2, "--config.num_epochs=400", "--config.checkpoint_every=0")
    deadline = time.time() + 240
    while time.time() < deadline and not (tmp_path / "metrics.jsonl").exists():
        assert all(p.poll() is None for p in processes), finish(processes)
        time.sleep(0.2)
    time.sleep(1.0)
    processes[1].send_signal(signal.SIGTERM)
    outputs = finish(processes, timeout=120)
    assert [code for code, _, _ in outputs] == [143, 143], [err[-2000:] for _, _, err in outputs]
    stopped = {int(err.split("after step ")[1].split(";")[0]) for _, _, err in outputs}
    assert len(stopped) == 1  # both at the same step
    step, _ = final_params(tmp_path)
    assert step == stopped.pop()


def test_compare_backward_on_two_processes(tmp_path):
    port = free_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "scripts/compare_backward.py",
                "--config",
                "configs/smoke.py",
                "--workdir",
                str(tmp_path),
                "--backwards=implicit,phantom_unroll:k=2",
                "--repeats=1",
                "--config.num_epochs=0.5",
                f"--coordinator_address=127.0.0.1:{port}",
                "--num_processes=2",
                f"--process_id={index}",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(2)
    ]
    outputs = finish(processes)
    assert [code for code, _, _ in outputs] == [0, 0], [err[-3000:] for _, _, err in outputs]
    assert "step/implicit" in outputs[0][1] and "step/implicit" not in outputs[1][1]
    rows = json.loads((tmp_path / "compare.json").read_text())["rows"]
    assert [r["backward"] for r in rows] == ["implicit", "phantom_unroll:k=2"]
