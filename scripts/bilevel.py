"""Run a bi-level experiment from a config file; writes ``results.json`` and PNG plots to the workdir.

    python scripts/bilevel.py --config configs/bilevel_logreg_ho.py --workdir runs/logreg_ho
    python scripts/bilevel.py --config configs/bilevel_schedule_tuning.py --workdir runs/schedules
    python scripts/bilevel.py --config configs/bilevel_hyper_cleaning.py --workdir runs/cleaning

Override any field with ``--config.FIELD=VALUE`` (unknown fields are refused). The compared
estimators take their options inline, e.g.
``--config.backwards=implicit:max_steps=50,neumann:k=40:step_size=0.5`` or
``--config.methods=reverse,fg2u:num_directions=16``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for examples/

from examples.bilevel import hyper_cleaning, logreg_ho, report, schedule_tuning
from examples.bilevel.config import argmin_backwards, unrolled_methods, validate_bilevel_config
from implicit_jax.train.cli import exit_if_dry_run, exit_on_run_errors, preflight

_CONFIG = config_flags.DEFINE_config_file("config", None, "path to a bilevel config in configs/", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "output folder")
flags.mark_flags_as_required(["config", "workdir"])


def run_logreg_ho(config, workdir):
    split = (
        logreg_ho.breast_cancer()
        if config.dataset == "breast_cancer"
        else logreg_ho.fashion_mnist_pair(config.num_train, config.num_val)
    )
    results = {"dataset": split.name, "runs": {}}
    for regularization in config.regularizations.split(","):
        per_feature = regularization == "per_feature"
        traces = {}
        for name, backward in argmin_backwards(config.backwards).items():
            trace = logreg_ho.run_hyperopt(
                split,
                backward,
                per_feature=per_feature,
                outer_steps=config.outer_steps,
                learning_rate=config.outer_lr,
                inner_tol=config.inner_tol,
                label=name,
            )
            traces[name] = trace
            print(
                f"{regularization:12s} {name:24s} held-out {min(trace.val_loss):.4f} (last {trace.val_loss[-1]:.4f}) "
                f"test {trace.test_loss[-1]:.4f} in {trace.seconds[-1]:.2f} s, {np.mean(trace.inner_steps):.0f} inner steps/outer"
            )
        results["runs"][regularization] = {name: t._asdict() for name, t in traces.items()}
        report.plot_curves(
            os.path.join(workdir, f"heldout_vs_time_{regularization}.png"),
            {n: (t.seconds, t.val_loss) for n, t in traces.items()},
            xlabel="seconds (compilation excluded)",
            ylabel="held-out log loss",
            title=f"{split.name}: {regularization} regularisation",
        )
    if "scalar" in config.regularizations.split(","):
        grid = logreg_ho.sklearn_grid_search(split, np.linspace(config.grid_min, config.grid_max, config.grid_size))
        label, ours = next(iter(results["runs"]["scalar"].items()))
        results["sklearn_grid"] = grid
        print(
            f"cross-check: scikit-learn grid best log-lambda {grid['best_log_lam']:.2f} (held-out {grid['best_val_loss']:.4f}); "
            f"HO with {label} ends at {float(np.ravel(ours['log_lam'])[0]):.2f} (held-out {ours['val_loss'][-1]:.4f})"
        )
    return results


def run_schedule_tuning(config, workdir):
    split = schedule_tuning.digits_split()
    methods = unrolled_methods(config.methods)
    results = {"tuning": {}, "memory": {}}
    for name, method in methods.items():
        r = schedule_tuning.tune(
            split,
            config.num_steps,
            method,
            num_values=config.num_values,
            outer_steps=config.outer_steps,
            learning_rate=config.outer_lr,
        )
        results["tuning"][name] = r
        print(
            f"{name:8s} T={config.num_steps}: val loss {r['val_loss_curve'][0]:.4f} -> {r['tuned_val_loss']:.4f}, test accuracy "
            f"{100 * r['initial_test_accuracy']:.2f}% -> {100 * r['tuned_test_accuracy']:.2f}%, {1e3 * r['seconds_per_hypergradient']:.0f} ms per hypergradient"
        )
    report.plot_curves(
        os.path.join(workdir, "val_loss_vs_outer_step.png"),
        {n: (list(range(len(r["val_loss_curve"]))), r["val_loss_curve"]) for n, r in results["tuning"].items()},
        xlabel="outer step",
        ylabel="validation loss after T steps",
        title=f"schedule tuning on digits, T={config.num_steps}",
    )
    budget = config.memory_budget_mib * 2**20
    horizons = [int(t) for t in config.memory_horizons.split(",")]
    for name, method in methods.items():
        results["memory"][name] = {}
        for horizon in horizons:
            size = schedule_tuning.peak_temp_bytes(split, horizon, method, config.num_values)
            results["memory"][name][horizon] = {"temp_bytes": size, "within_budget": size <= budget}
            print(f"memory {name:8s} T={horizon:6d}: {size / 2**20:8.1f} MiB {'' if size <= budget else '(over the budget)'}")
    report.plot_curves(
        os.path.join(workdir, "memory_vs_horizon.png"),
        {n: (horizons, [v[h]["temp_bytes"] / 2**20 for h in horizons]) for n, v in results["memory"].items()},
        xlabel="num_steps T",
        ylabel="XLA temporary memory (MiB)",
        title="hypergradient memory vs horizon",
        log_y=True,
    )
    return results


def run_hyper_cleaning(config, workdir):
    data = hyper_cleaning.fashion_mnist_cleaning(config.num_train, config.num_val, config.num_test, config.corruption)
    results = {}
    for name, backward in argmin_backwards(config.backwards).items():
        r = hyper_cleaning.run(data, backward, outer_steps=config.outer_steps, learning_rate=config.outer_lr, l2=config.l2)
        results[name] = r
        print(
            f"{name:9s} flagging precision {r['precision']:.3f} recall {r['recall']:.3f} F1 {r['f1']:.3f}; test accuracy "
            f"cleaned {100 * r['test_accuracy_cleaned']:.2f}% vs unweighted {100 * r['test_accuracy_unweighted']:.2f}% "
            f"(oracle {100 * r['test_accuracy_oracle']:.2f}%), {r['seconds']:.1f} s"
        )
    report.plot_curves(
        os.path.join(workdir, "val_loss_vs_outer_step.png"),
        {n: (list(range(len(r["val_loss_curve"]))), r["val_loss_curve"]) for n, r in results.items()},
        xlabel="outer step",
        ylabel="clean validation loss",
        title="data hyper-cleaning, Fashion-MNIST",
    )
    return results


def main(argv):
    del argv
    config = _CONFIG.value
    try:
        validate_bilevel_config(config)
    except ValueError as error:
        sys.exit(f"error: {error}")
    exit_if_dry_run(f"bi-level experiment {config.experiment} into {_WORKDIR.value}")
    workdir = _WORKDIR.value
    os.makedirs(workdir, exist_ok=True)
    with exit_on_run_errors():  # Ctrl-C: one line and exit 130 (nothing is written: results.json comes at the end)
        results = {"logreg_ho": run_logreg_ho, "schedule_tuning": run_schedule_tuning, "hyper_cleaning": run_hyper_cleaning}[
            config.experiment
        ](config, workdir)
    results["config"] = config.to_dict()
    print(f"results: {report.write_json(os.path.join(workdir, 'results.json'), results)}")


if __name__ == "__main__":
    preflight(sys.argv[1:])
    app.run(main)
