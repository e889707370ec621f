"""Data parallelism: 4 simulated CPU devices give the single-device result (run in subprocesses,
since the device count is fixed when JAX starts)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys, numpy as np, jax
from implicit_jax.train import base_config, fit
from implicit_jax.train.data import synthetic
config = base_config()
config.update(dict(width=16, batch_size=32, num_epochs=0.5, log_every=2, eval_batch_size=64, jac_reg_weight=0.1, learning_rate=1e-2))
result = fit(config, sys.argv[1], dataset=synthetic(num_train=256, num_test=128), progress=False)
print("devices", jax.device_count())
np.savez(sys.argv[2], *[np.asarray(l) for l in jax.tree_util.tree_leaves(result.state.params)],
         accuracy=result.test_accuracy)
"""


def run(tmp_path, devices):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    out = tmp_path / f"params{devices}.npz"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / f"run{devices}"), str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"devices {devices}" in proc.stdout
    return np.load(out)


@pytest.mark.slow
def test_four_devices_match_one_device(tmp_path):
    one, four = run(tmp_path, 1), run(tmp_path, 4)
    assert one.files == four.files
    for name in one.files:
        np.testing.assert_allclose(one[name], four[name], rtol=2e-4, atol=2e-5)
