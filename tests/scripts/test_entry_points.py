"""The README's main job and the benchmark stay runnable (small settings)."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import pytest

from implicit_jax.testing import tanh_layer

pytestmark = pytest.mark.slow  # subprocesses and whole runs: the full suite, not the quick tier

ROOT = Path(__file__).resolve().parents[2]


def run(*args, timeout=600, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def test_demo_quick_trains_and_prints_both_tables():
    out = run("scripts/demo.py", "--quick")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "cos to exact" in out.stdout and "test acc" in out.stdout
    for name in ["implicit", "shine", "jfb", "phantom_unroll"]:
        assert name in out.stdout


def test_backward_benchmark_runs_without_peers(tmp_path):
    target = tmp_path / "bench.json"
    out = run(
        "benchmarks/backward.py",
        "--settings",
        "8x16",
        "--repeats",
        "1",
        "--no-peers",
        "--methods",
        "fixed-point,shine (broyden),phantom_neumann",
        "--out",
        str(target),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "implicit (fixed-point fwd+adjoint)" in out.stdout and "phantom_neumann" in out.stdout and target.exists()
    assert "anderson" not in out.stdout  # --methods left the others out


def test_compile_time_benchmark_runs_without_peers(tmp_path):
    target = tmp_path / "compile.json"
    out = run(
        "benchmarks/compile_time.py",
        "--problems",
        "small",
        "--repeats",
        "1",
        "--no-peers",
        "--methods",
        "fixed_point_iteration / jfb",
        "--out",
        str(target),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "fixed_point_iteration / jfb" in out.stdout and "anderson" not in out.stdout and target.exists()
    result = json.loads(target.read_text())
    (row,) = result["rows"]
    assert row["fusions"] > 0 and row["compile_s"] > 0
    (eager,) = result["eager"]
    assert eager["first_call_s"] > eager["repeat_call_s"] > 0


def test_train_script_runs_the_smoke_config_and_resumes(tmp_path):
    workdir = str(tmp_path / "smoke")
    out = run(
        "scripts/train.py", "--config", "configs/smoke.py", "--workdir", workdir, "--progress=false", "--config.num_epochs=1"
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "final test accuracy" in out.stdout and (tmp_path / "smoke" / "accuracy.png").exists()
    again = run(
        "scripts/train.py", "--config", "configs/smoke.py", "--workdir", workdir, "--progress=false", "--config.num_epochs=1"
    )
    assert again.returncode != 0 and "already holds checkpoints" in again.stderr
    resumed = run(
        "scripts/train.py",
        "--config",
        "configs/smoke.py",
        "--workdir",
        workdir,
        "--progress=false",
        "--config.num_epochs=2",
        "--resume",
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]


def test_train_script_rejects_bad_configs_before_any_compute(tmp_path):
    cases = [
        ("--config.backward=adjoint", "is not one of"),
        ("--config.colour=red", "unknown config field 'colour'"),
        ("--config.batch_size=many", "batch_size"),
        ("--config.seed=-1", "seed=-1 is out of range"),
        ("--config.seed.x=1", "config field 'seed' is a value, not a group"),
    ]
    for override, message in cases:
        out = run("scripts/train.py", "--config", "configs/smoke.py", "--workdir", str(tmp_path / "bad"), override)
        assert out.returncode != 0 and message in out.stderr and "Traceback" not in out.stderr, (override, out.stderr[-1000:])
    assert not (tmp_path / "bad").exists()
    missing = run("scripts/train.py", "--config", "configs/nope.py", "--workdir", str(tmp_path / "bad"))
    assert missing.returncode != 0 and missing.stderr.strip() == (
        "error: config file 'configs/nope.py' does not exist (from --config=configs/nope.py); the shipped ones are in configs/."
    )
    (tmp_path / "a_file").write_text("")
    as_file = run("scripts/train.py", "--config", "configs/smoke.py", "--workdir", str(tmp_path / "a_file"))
    assert as_file.returncode != 0 and "is a file, not a folder" in as_file.stderr and "Traceback" not in as_file.stderr
    devices = run(
        "scripts/train.py",
        "--config",
        "configs/smoke.py",
        "--workdir",
        str(tmp_path / "bad"),
        "--config.batch_size=30",
        env_extra={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"},
    )
    assert devices.returncode != 0 and "batch_size=30 must be divisible by the 4 devices" in devices.stderr
    assert "Traceback" not in devices.stderr and not (tmp_path / "bad" / "metrics.jsonl").exists()


def test_train_script_stops_a_diverging_run_with_one_line_and_exit_1(tmp_path):
    out = run(
        "scripts/train.py",
        "--config",
        "configs/smoke.py",
        "--workdir",
        str(tmp_path),
        "--progress=false",
        "--config.learning_rate=1e30",
        "--config.schedule=constant",
        "--config.optimizer=sgd",
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "error: training stopped at step" in out.stderr and "nothing non-finite was saved" in out.stderr
    assert "final test accuracy" not in out.stdout


def test_ctrl_c_checkpoints_and_exits_130_with_one_line(tmp_path):
    workdir = tmp_path / "run"
    # Python ignores SIGINT if it started ignored (a background job): install the usual handler first.
    launch = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            launch,
            "scripts/train.py",
            "--config",
            "configs/smoke.py",
            "--workdir",
            str(workdir),
            "--progress=false",
            "--config.num_epochs=500",
            "--config.checkpoint_every=5",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while not (workdir / "metrics.jsonl").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)  # inside the training loop, with checkpoints every 5 steps: likely during a save
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and "interrupted (SIGINT) after step" in stderr and "continue with --resume" in stderr
    assert any(p.name.isdigit() for p in (workdir / "checkpoints").iterdir()) and not (workdir / "run.lock").exists()


def test_train_script_takes_estimator_options_from_the_command_line(tmp_path):
    workdir = tmp_path / "digits"
    out = run(
        "scripts/train.py",
        "--config",
        "configs/digits_deq_mlp.py",
        "--workdir",
        str(workdir),
        "--progress=false",
        "--config.num_epochs=1",
        "--config.eval_every=0",
        "--config.backward=phantom_unroll",
        "--config.backward_options.k=3",
        "--config.backward_options.damping=0.8",
        "--config.solver_options.memory=8",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "final test accuracy" in out.stdout
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["backward_options"] == {"k": 3, "damping": 0.8} and saved["solver_options"] == {"memory": 8}
    assert saved["resolved"] == {
        "backward": "PhantomUnroll(k=3, damping=0.8)",
        "solver": "Anderson(memory=8, mixing=1.0, regularization=1e-08)",
    }
    typo = run(
        "scripts/train.py",
        "--config",
        "configs/digits_deq_mlp.py",
        "--workdir",
        str(tmp_path / "typo"),
        "--config.backward=phantom_unroll",
        "--config.backward_options.dampnig=0.8",
    )
    assert typo.returncode != 0 and "backward 'phantom_unroll' has no option 'dampnig'" in typo.stderr
    assert "Options of 'phantom_unroll' (with defaults): k=5, damping=0.5" in typo.stderr and "Traceback" not in typo.stderr
    assert not (tmp_path / "typo").exists()  # refused before any data loading or output


def test_compare_backward_prints_a_table_and_saves_a_plot(tmp_path):
    out = run(
        "scripts/compare_backward.py",
        "--config",
        "configs/smoke.py",
        "--workdir",
        str(tmp_path),
        "--backwards=implicit,broyden/phantom_unroll:k=2:damping=0.8",
        "--seeds=3,4",
        "--repeats=1",
        "--config.num_epochs=1",
        "--config.eval_every=2",
        "--results",
        str(tmp_path / "results" / "e2e"),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "step/implicit" in out.stdout and "s to target" in out.stdout and "phantom_unroll:k=2:damping=0.8" in out.stdout
    for name in ["loss_vs_time.png", "accuracy_vs_time.png", "compare.json", "results/e2e.json", "results/e2e.png"]:
        assert (tmp_path / name).exists(), name
    saved = json.loads((tmp_path / "broyden-phantom_unroll-k2-damping0.8" / "seed4" / "config.json").read_text())
    assert saved["resolved"]["backward"] == "PhantomUnroll(k=2, damping=0.8)" and saved["seed"] == 4
    assert saved["solver"] == "broyden" and saved["resolved"]["solver"].startswith("Broyden(")
    report = json.loads((tmp_path / "results" / "e2e.json").read_text())
    assert [(r["backward"], r["seed"]) for r in report["rows"]] == [
        (b, s) for b in ["implicit", "broyden/phantom_unroll:k=2:damping=0.8"] for s in (3, 4)
    ]
    assert all(r["curve"] and r["compile_seconds"] > 0 for r in report["rows"])
    implicit = report["summary"][0]
    assert implicit["backward"] == "implicit" and implicit["time_ratio_to_reference"] == 1.0 and implicit["seeds"] == [3, 4]
    finals = {r["seed"]: r["test_accuracy"] for r in report["rows"] if r["backward"] == "implicit"}
    assert report["target_accuracy_per_seed"] == pytest.approx({str(s): a - 0.005 for s, a in finals.items()})
    again = run(
        "scripts/compare_backward.py",
        "--config",
        "configs/smoke.py",
        "--workdir",
        str(tmp_path / "again"),
        "--summarize",
        str(tmp_path / "compare.json"),
        "--target_drop=1.0",
    )
    assert again.returncode == 0 and "s to target" in again.stdout, again.stderr[-2000:]
    assert json.loads((tmp_path / "again" / "compare.json").read_text())["target_drop_points"] == 1.0
    for spec, message in [("implicit,shine:k=2", "has no option 'k'"), ("newton/shine", "anderson")]:
        bad = run("scripts/compare_backward.py", "--config", "configs/smoke.py", "--workdir", str(tmp_path / "bad"),
                  f"--backwards={spec}")  # fmt: skip
        entry = spec.split(",")[-1]
        assert bad.returncode != 0 and f"--backwards entry {entry!r}" in bad.stderr and message in bad.stderr, bad.stderr[-1000:]


def test_time_to_accuracy_and_the_summary_over_seeds():
    spec = importlib.util.spec_from_file_location("compare_backward", ROOT / "scripts" / "compare_backward.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    curve = [(10, 1.0, 0.80), (20, 2.0, 0.90), (30, 3.0, 0.95)]
    assert module.time_to_accuracy(curve, 0.9) == (20, 2.0) and module.time_to_accuracy(curve, 0.99) is None

    def row(backward, seed, accuracy, seconds, curve):
        return dict(
            backward=backward,
            solver="anderson",
            seed=seed,
            test_accuracy=accuracy,
            train_seconds=seconds,
            curve=curve,
            final_forward_steps=5.0,
            forward_ms=1.0,
            backward_ms=3.0,
        )

    rows = [
        row("implicit", 0, 0.96, 10.0, [(1, 5.0, 0.90), (2, 10.0, 0.96)]),
        row("implicit", 1, 0.94, 10.0, [(1, 5.0, 0.95), (2, 10.0, 0.94)]),
        row("jfb", 0, 0.95, 4.0, [(1, 2.0, 0.945), (2, 4.0, 0.95)]),
        row("jfb", 1, 0.93, 4.0, [(1, 2.0, 0.94), (2, 4.0, 0.93)]),
    ]
    summary, targets = module.summarize(rows, 0.005)
    assert targets == pytest.approx({0: 0.955, 1: 0.935})  # paired: each seed's implicit run - 0.5 points
    implicit, jfb = summary
    assert implicit["accuracy_mean"] == pytest.approx(0.95) and implicit["accuracy_half_range"] == pytest.approx(0.01)
    assert implicit["seconds_to_target"] == 7.5 and implicit["steps_to_target"] == 1.5  # seed 0 at 10 s, seed 1 at 5 s
    assert implicit["target_time_ratio"] == pytest.approx(0.75) and implicit["accuracy_delta"] == 0.0
    assert jfb["seeds_reaching_target"] == 1 and jfb["seconds_to_target"] is None and jfb["time_ratio_to_reference"] == 0.4
    assert jfb["accuracy_delta"] == pytest.approx(-0.01) and jfb["backward_share"] == 0.75


def test_mixed_precision_benchmark_runs(tmp_path):
    target = tmp_path / "mp.json"
    out = run(
        "benchmarks/mixed_precision.py", "--config", "configs/smoke.py", "--seeds", "0", "--epochs", "0.2", "--out", str(target)
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "bfloat16 (tol 0.01)" in out.stdout and "vs f32" in out.stdout
    assert set(json.loads(target.read_text())["rows"]) == {"float32 (tol 0.001)", "float32 (tol 0.01)", "bfloat16 (tol 0.01)"}


def test_train_step_benchmark_runs_without_peers(tmp_path):
    target = tmp_path / "train_step.json"
    out = run("benchmarks/train_step.py", "--steps", "3", "--skip", "1", "--no-peers", "--out", str(target))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "/implicit" in out.stdout and "phantom_neumann" in out.stdout and target.exists()


def test_bilevel_script_runs_logreg_ho_and_schedule_tuning(tmp_path):
    ho = run(
        "scripts/bilevel.py",
        "--config",
        "configs/bilevel_logreg_ho.py",
        "--workdir",
        str(tmp_path / "ho"),
        "--config.outer_steps=3",
        "--config.regularizations=scalar",
        "--config.grid_size=3",
    )
    assert ho.returncode == 0, ho.stderr[-3000:]
    assert "cross-check: scikit-learn grid" in ho.stdout and (tmp_path / "ho" / "heldout_vs_time_scalar.png").exists()
    sched = run(
        "scripts/bilevel.py",
        "--config",
        "configs/bilevel_schedule_tuning.py",
        "--workdir",
        str(tmp_path / "s"),
        "--config.num_steps=20",
        "--config.num_values=2",
        "--config.outer_steps=2",
        "--config.memory_horizons=10,20",
        "--config.methods=reverse,fds,fg2u:num_directions=2",
    )
    assert sched.returncode == 0, sched.stderr[-3000:]
    assert "memory fds" in sched.stdout and "fg2u:num_directions=2" in sched.stdout and (tmp_path / "s" / "results.json").exists()
    bad = run(
        "scripts/bilevel.py",
        "--config",
        "configs/bilevel_logreg_ho.py",
        "--workdir",
        str(tmp_path / "b"),
        "--config.outer_stepz=3",
    )
    assert bad.returncode != 0 and "unknown config field 'outer_stepz'" in bad.stderr and "Traceback" not in bad.stderr
    wrong = run(
        "scripts/bilevel.py",
        "--config",
        "configs/bilevel_logreg_ho.py",
        "--workdir",
        str(tmp_path / "w"),
        "--config.regularizations=l1",
    )
    assert (
        wrong.returncode != 0
        and "regularizations='l1' is out of range (comma-separated subset of ['scalar', 'per_feature'])" in wrong.stderr
    )


def test_bilevel_benchmark_quick(tmp_path):
    target = tmp_path / "bilevel.json"
    out = run(
        "benchmarks/bilevel.py", "--quick", "--outer-steps", "2", "--repeats", "1", "--horizons", "10,20", "--out", str(target)
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "shine + OPA" in out.stdout and "over budget" not in out.stdout and target.exists()


def _backward_benchmark():
    spec = importlib.util.spec_from_file_location("backward_benchmark", ROOT / "benchmarks" / "backward.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def test_matched_error_picks_our_fastest_point_at_or_below_the_peers_error():
    bench = _backward_benchmark()
    point = lambda side, tol, ms, err: {"side": side, "tol": tol, "total_ms": ms, "rel_error": err}
    points = [
        point("ours", 1e-5, 5.0, 1e-5),
        point("ours", 3e-5, 4.0, 3e-5),
        point("ours", 1e-4, 3.0, 9e-5),
        point("peer", 1e-5, 8.0, 3.4e-5),
        point("peer", 1e-4, 6.0, 5e-5),
    ]
    peer, best = bench.matched_error(points)
    assert peer["total_ms"] == 8.0  # the peer at the benchmark's tolerance, not its fastest point
    assert best["tol"] == 3e-5  # fastest of ours with error <= 3.4e-5; the 1e-4 point is faster but worse
    _, none = bench.matched_error([point("ours", 1e-5, 5.0, 1e-4), point("peer", 1e-5, 8.0, 3e-5)])
    assert none is None


def test_tolerance_sweep_times_both_methods_at_every_tolerance():
    bench = _backward_benchmark()
    f, params, x, c = tanh_layer(d=8, batch=3, dtype=jnp.float32, orthogonal=True)
    ref = bench.reference_gradient(f, params, x, c)[0]
    tols = [1e-6, bench.TOL, 1e-3]
    ours = ("implicit (fixed-point fwd+adjoint)", lambda tol: bench.our_solve(f, "implicit (fixed-point fwd+adjoint)", tol))
    other = ("implicit (anderson fwd+adjoint)", lambda tol: bench.our_solve(f, "implicit (anderson fwd+adjoint)", tol))
    points, line = bench.tolerance_sweep("3x8", ours, other, params, x, c, ref, tols, rounds=1)
    assert [(p["side"], p["tol"]) for p in points] == [("ours", t) for t in tols] + [("peer", t) for t in tols]
    errors = [p["rel_error"] for p in points if p["side"] == "ours"]
    assert errors[0] < 1e-5 < errors[-1]  # the gradient error follows the tolerance
    assert "at matched gradient error" in line


def test_shine_studies_run_at_a_tiny_size(tmp_path):
    layer = run("benchmarks/opa_study.py", "--width", "16", "--batch", "2", "--everies", "2", "--rounds", "1",
                "--out", str(tmp_path / "opa.json"))  # fmt: skip
    assert layer.returncode == 0, layer.stderr[-2000:]
    rows = json.loads((tmp_path / "opa.json").read_text())["rows"]
    assert {r["method"] for r in rows} >= {"jfb (anderson)", "shine (broyden) + OPA adjoint every 2"}
    assert all(-1.0 <= r["cosine"] <= 1.0 for r in rows)
    conv = run("benchmarks/shine_conv_study.py", "--batch", "2", "--tols", "1e-2", "--memories", "5", "--train_steps", "0",
               "--out", str(tmp_path / "conv.json"))  # fmt: skip
    if "Fashion-MNIST" in conv.stderr and conv.returncode != 0:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist; .ci/run does)")
    assert conv.returncode == 0, conv.stderr[-2000:]
    assert "shine (anderson m=5) fallback" in conv.stdout
