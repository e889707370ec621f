"""Train a DEQ from a config file (the Flax examples' convention).

    python scripts/train.py --config configs/fashion_mnist_deq.py --workdir runs/fmnist
    python scripts/train.py --config configs/digits_deq_mlp.py --workdir runs/digits --config.backward=shine \
        --config.solver=broyden
    python scripts/train.py --config configs/smoke.py --workdir runs/smoke --resume
    python scripts/train.py --config configs/digits_deq_mlp.py --workdir runs/phantom --config.backward=phantom_unroll \
        --config.backward_options.k=3 --config.backward_options.damping=0.8 --config.solver_options.memory=8

The workdir receives ``metrics.jsonl``, ``loss.png``/``accuracy.png``, ``config.json`` and
``checkpoints/``; ``config.json`` also records the configured solver and backward objects.
``solver_options``/``backward_options`` take the keyword arguments of the chosen classes.
``--resume`` continues from the latest readable checkpoint. The configuration is validated
(unknown fields, wrong types, invalid values) before any data is loaded.

Multi-process (several hosts, or several processes on one): run the same command in every
process with ``--coordinator_address=HOST:PORT --num_processes=N --process_id=I`` (process 0
listens on HOST:PORT), or with ``--distributed`` where JAX detects the cluster (SLURM, Cloud
TPU). The workdir must be on a file system every process sees; only process 0 writes metrics,
plots and ``config.json``; orbax writes the checkpoints from every process. See
:mod:`implicit_jax.train.sharding`.

Exit status: 0 done, 1 an error (one line), 130 after Ctrl-C and 143 after ``SIGTERM`` (both
checkpoint the last completed step first).
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from implicit_jax.train import fit, is_primary, validate_config
from implicit_jax.train.cli import (
    define_distributed_flags,
    exit_if_dry_run,
    exit_on_run_errors,
    initialize_distributed_from_flags,
    preflight,
)

# New attributes are accepted so that --config.backward_options.k=3 can add an option; every name is
# then checked (preflight, validate_config) before anything runs.
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "path to a config file in configs/", lock_config=False, accept_new_attributes=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "output folder (metrics, plots, checkpoints)")
_RESUME = flags.DEFINE_bool("resume", False, "continue from the latest checkpoint in --workdir")
_PROGRESS = flags.DEFINE_bool("progress", True, "show a progress bar")
define_distributed_flags()
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    config = _CONFIG.value
    try:
        validate_config(config)  # pure Python: touches no device, so it may precede joining a multi-process run
    except ValueError as error:
        sys.exit(f"error: {error}")
    exit_if_dry_run(f"train {config.model} on {config.dataset} into {_WORKDIR.value}")
    initialize_distributed_from_flags()
    with exit_on_run_errors():
        result = fit(config, _WORKDIR.value, resume=_RESUME.value, progress=_PROGRESS.value)
    if not is_primary():
        return
    print(
        f"final test accuracy: {100 * result.test_accuracy:.2f}% (test loss {result.test_loss:.4f}) after "
        f"{result.train_seconds:.0f} s of training"
    )
    print(f"metrics: {result.metrics_path}")
    print(f"plots: {', '.join(result.plots)}")
    print(f"checkpoints: {result.workdir}/checkpoints")


if __name__ == "__main__":
    preflight(sys.argv[1:])
    app.run(main)
