"""The README's main job and the benchmark stay runnable (small settings)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args, timeout=600):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_demo_quick_trains_and_prints_both_tables():
    out = run("scripts/demo.py", "--quick")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "cos to exact" in out.stdout and "test acc" in out.stdout
    for name in ["implicit", "shine", "jfb", "phantom_unroll"]:
        assert name in out.stdout


def test_backward_benchmark_runs_without_peers(tmp_path):
    target = tmp_path / "bench.json"
    out = run("benchmarks/backward.py", "--settings", "8x16", "--repeats", "1", "--no-peers", "--out", str(target))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "implicit (fixed-point fwd+adjoint)" in out.stdout and target.exists()
