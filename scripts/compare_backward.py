"""Train one model from one seed with each backward estimator and compare them.

    python scripts/compare_backward.py --config configs/digits_deq_mlp.py --workdir runs/compare
    python scripts/compare_backward.py --config configs/fashion_mnist_deq.py --workdir runs/compare_fm \
        --config.num_epochs=1 --backwards=implicit,jfb
    python scripts/compare_backward.py --config configs/digits_deq_mlp.py --workdir runs/phantoms \
        --backwards=implicit,phantom_unroll:k=3:damping=0.8,phantom_unroll:k=10,shine:refine=2

Prints a table (test accuracy, forward and backward milliseconds per train step, mean
forward solver steps, training seconds), writes it to ``WORKDIR/compare.json`` and saves
``WORKDIR/loss_vs_time.png``. Each estimator's run (metrics, plots, checkpoints) lands in
``WORKDIR/<estimator>/``. An estimator is a name, optionally with its options as
``NAME:OPTION=VALUE:...`` (the keyword arguments of its class, as ``--config.backward_options``
takes them), so one table can compare configurations of the same estimator. SHINE needs a solver that keeps an inverse estimate:
with the config's ``anderson`` or ``broyden`` it uses that solver, otherwise ``broyden``; every
other run uses the config's solver. Forward and backward
times are medians over repeated calls of the jitted forward pass and of the jitted
train step on one batch (backward = step - forward). It takes the process flags of
``scripts/train.py`` for a multi-process run (process 0 prints and writes the table).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for benchmarks/
from benchmarks.timing import median_ms  # noqa: E402
from implicit_jax._registry import parse_spec
from implicit_jax.estimators import BACKWARDS
from implicit_jax.train import fit, is_primary, read_metrics, validate_config
from implicit_jax.train.cli import define_distributed_flags, exit_on_run_errors, initialize_distributed_from_flags, preflight
from implicit_jax.train import data as data_lib
from implicit_jax.train import sharding
from implicit_jax.train.loop import init_state, make_eval_step, make_train_step

_CONFIG = config_flags.DEFINE_config_file("config", None, "config file", lock_config=False, accept_new_attributes=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "output folder")
_BACKWARDS = flags.DEFINE_list("backwards", ["implicit", "shine", "jfb", "phantom_unroll", "phantom_neumann"],
                               f"estimators to compare, from {sorted(BACKWARDS)}, each optionally NAME:OPTION=VALUE:...")
_REPEATS = flags.DEFINE_integer("repeats", 5, "timing repeats per estimator")
define_distributed_flags()
flags.mark_flags_as_required(["config", "workdir"])


def step_times(config, dataset, state, repeats: int) -> tuple[float, float]:
    """Median ms of the jitted forward pass and of the jitted train step on the first training batch."""
    import jax
    import numpy as np

    _, (graphdef, rest), optimizer, _ = init_state(config, dataset, 1)
    mesh = sharding.data_mesh()
    idx = data_lib.batch_indices(0, len(dataset.train_labels), config.batch_size, config.seed)
    images, labels = sharding.shard_batch(mesh, dataset.train_images[idx], dataset.train_labels[idx])
    mask = jax.numpy.ones(labels.shape, np.float32)
    forward = jax.jit(make_eval_step(graphdef, rest))
    train = jax.jit(make_train_step(graphdef, rest, optimizer, jac_reg_weight=config.jac_reg_weight))
    forward_ms = median_ms(forward, state.params, images, labels, mask, repeats=repeats)
    step_ms = median_ms(train, state, images, labels, repeats=repeats)
    return forward_ms, max(step_ms - forward_ms, 0.0)


def run_config(base, spec: str):
    """The validated config of one compared run: ``base`` with the backward (and its options) that ``spec`` names."""
    name, options = parse_spec(spec)
    if name not in BACKWARDS:
        raise ValueError(f"unknown estimator {name!r} in --backwards={spec!r}; valid names are {sorted(BACKWARDS)}")
    config = base.copy_and_resolve_references()
    config.unlock()
    config.backward = name
    config.backward_options = options
    if name == "shine" and config.solver not in ("anderson", "broyden"):
        config.solver, config.solver_options = "broyden", {}
    try:
        return validate_config(config)
    except ValueError as error:
        raise ValueError(f"--backwards entry {spec!r}: {error}") from None


def run_folder(spec: str) -> str:
    """A folder name for a run: ``phantom_unroll:k=3`` -> ``phantom_unroll-k3``."""
    return spec.replace(":", "-").replace("=", "")


def plot(runs: dict[str, str], target: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for name, path in runs.items():
        rows = [(r["time"], r["loss"]) for r in read_metrics(path) if "loss" in r]
        axis.plot(*zip(*rows), label=name)
    axis.set_xlabel("training time (s)")
    axis.set_ylabel("train loss")
    axis.set_yscale("log")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(target, dpi=100)
    plt.close(figure)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    initialize_distributed_from_flags()
    try:
        validate_config(_CONFIG.value)
        configs = {spec: run_config(_CONFIG.value, spec) for spec in _BACKWARDS.value}
    except ValueError as error:
        sys.exit(f"error: {error}")
    base = _CONFIG.value
    dataset = data_lib.load(base.dataset, data_dir=base.data_dir, train_subset=base.train_subset,
                            test_subset=base.test_subset, seed=base.seed)
    rows, runs = [], {}
    for name, config in configs.items():
        with exit_on_run_errors():
            result = fit(config, os.path.join(_WORKDIR.value, run_folder(name)), dataset=dataset, progress=False)
        forward_ms, backward_ms = step_times(config, dataset, result.state, _REPEATS.value)
        if not is_primary():
            continue  # process 0 reports
        train = [r for r in read_metrics(result.metrics_path) if "loss" in r]
        mean_steps = sum(r["forward_steps"] for r in train) / len(train)
        runs[name] = result.metrics_path
        rows.append(dict(backward=name, solver=config.solver, test_accuracy=result.test_accuracy,
                         forward_ms=forward_ms, backward_ms=backward_ms, mean_forward_steps=mean_steps,
                         train_seconds=result.train_seconds))
        print(f"done {name}: test accuracy {100 * result.test_accuracy:.2f}%", flush=True)
    if not is_primary():
        return
    reference = next((r for r in rows if r["backward"] == "implicit"), rows[0])
    width = max(16, *(len(r["backward"]) + 1 for r in rows))
    print(f"\n{'backward':<{width}} {'solver':<9} {'test acc':>8} {'fwd ms':>8} {'bwd ms':>8} {'step/implicit':>13} "
          f"{'fwd steps':>9} {'train s':>8}")
    for r in rows:
        ratio = (r["forward_ms"] + r["backward_ms"]) / (reference["forward_ms"] + reference["backward_ms"])
        r["step_ratio_to_implicit"] = ratio
        print(f"{r['backward']:<{width}} {r['solver']:<9} {100 * r['test_accuracy']:7.2f}% {r['forward_ms']:8.1f} "
              f"{r['backward_ms']:8.1f} {ratio:13.2f} {r['mean_forward_steps']:9.1f} {r['train_seconds']:8.0f}")
    with open(os.path.join(_WORKDIR.value, "compare.json"), "w") as handle:
        json.dump(dict(config=base.to_dict(), rows=rows), handle, indent=1)
    plot(runs, os.path.join(_WORKDIR.value, "loss_vs_time.png"))
    print(f"\ntable: {_WORKDIR.value}/compare.json, plot: {_WORKDIR.value}/loss_vs_time.png")


if __name__ == "__main__":
    preflight(sys.argv[1:])
    app.run(main)
