"""bfloat16 against float32 training: the DEQ MLP of ``configs/digits_deq_mlp.py`` on digits.

Three settings, each trained from the same seeds with the config's schedule and length:

* ``float32``, the config's tolerance (1e-4);
* ``float32`` at tolerance 1e-2, the tolerance bfloat16 can reach (separates the effect of the
  looser solve from that of the dtype);
* ``bfloat16`` at tolerance 1e-2: the equilibrium state, the cell and the solver's iterates in
  bfloat16, the solver's reductions, the parameters, the head and the gradients in float32.

The table gives the final test accuracy (mean and spread over seeds), the difference to
float32 in points, the final test loss, the mean forward solver steps and the training seconds. On a CPU bfloat16
is emulated, so its seconds say nothing about an accelerator's.

    python benchmarks/mixed_precision.py                 # writes benchmarks/results/mixed_precision.json
    python benchmarks/mixed_precision.py --seeds 0 --epochs 2 --out /tmp/mp.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import numpy as np

from implicit_jax.train import data as data_lib
from implicit_jax.train import fit, read_metrics
from implicit_jax.train.cli import load_config_file

#: (dtype, forward tol); None is the config's own tol
SETTINGS = (("float32", None), ("float32", 1e-2), ("bfloat16", 1e-2))


def train(config, seed: int, dataset) -> dict:
    config = config.copy_and_resolve_references()
    config.seed = seed
    with tempfile.TemporaryDirectory() as workdir:
        result = fit(config, workdir, dataset=dataset, progress=False)
        train_records = [r for r in read_metrics(result.metrics_path) if "loss" in r]
    return dict(
        test_accuracy=result.test_accuracy,
        test_loss=result.test_loss,
        train_seconds=result.train_seconds,
        forward_steps=float(np.mean([r["forward_steps"] for r in train_records])),
        forward_converged=float(np.mean([r["forward_converged"] for r in train_records])),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/digits_deq_mlp.py")
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds")
    parser.add_argument("--epochs", type=float, default=None, help="override the config's num_epochs")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "mixed_precision.json"))
    args = parser.parse_args()
    from implicit_jax.train.cli import exit_if_dry_run  # needs the train extra; here so the rest does not

    exit_if_dry_run(f"{Path(__file__).name} with {vars(args)}")
    base = load_config_file(args.config)
    if args.epochs is not None:
        base.num_epochs = args.epochs
    seeds = [int(s) for s in args.seeds.split(",")]
    dataset = data_lib.load(
        base.dataset, data_dir=base.data_dir, train_subset=base.train_subset, test_subset=base.test_subset, seed=base.seed
    )
    rows = {}
    for dtype, tol in SETTINGS:
        config = base.copy_and_resolve_references()
        config.dtype = dtype
        config.tol = config.tol if tol is None else tol
        name = f"{dtype} (tol {config.tol:g})"
        runs = [train(config, seed, dataset) for seed in seeds]
        rows[name] = dict(
            dtype=dtype,
            tol=config.tol,
            runs=runs,
            accuracy_mean=float(np.mean([r["test_accuracy"] for r in runs])),
            accuracy_spread=float(np.ptp([r["test_accuracy"] for r in runs])),
        )
        print(f"done {name}", flush=True)
    reference = next(iter(rows.values()))["accuracy_mean"]  # float32 at the config's tol
    print(
        f"\n{'setting':<22} {'test acc':>9} {'spread':>7} {'vs f32':>7} {'test loss':>9} {'fwd steps':>9} {'converged':>9} {'train s':>8}"
    )
    for name, row in rows.items():
        row["points_vs_float32"] = 100 * (row["accuracy_mean"] - reference)
        print(
            f"{name:<22} {100 * row['accuracy_mean']:8.2f}% {100 * row['accuracy_spread']:6.2f} "
            f"{row['points_vs_float32']:+7.2f} {np.mean([r['test_loss'] for r in row['runs']]):9.4f} "
            f"{np.mean([r['forward_steps'] for r in row['runs']]):9.2f} "
            f"{np.mean([r['forward_converged'] for r in row['runs']]):9.3f} "
            f"{np.mean([r['train_seconds'] for r in row['runs']]):8.1f}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(config=base.to_dict(), seeds=seeds, machine=platform.platform(), rows=rows), indent=1))
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
