"""Train one model with each backward estimator (and seed) and compare accuracy, cost and time to accuracy.

    python scripts/compare_backward.py --config configs/digits_deq_mlp.py --workdir runs/compare
    python scripts/compare_backward.py --config configs/fashion_mnist_deq.py --workdir runs/compare_fm \
        --config.num_epochs=1 --backwards=implicit,jfb
    python scripts/compare_backward.py --config configs/digits_deq_mlp.py --workdir runs/phantoms \
        --backwards=implicit,phantom_unroll:k=3:damping=0.8,phantom_unroll:k=10,shine:refine=2
    python scripts/compare_backward.py --config configs/digits_deq_mlp.py --workdir runs/e2e --seeds=0,1 \
        --backwards=implicit,anderson/shine,broyden/shine,jfb --results=benchmarks/results/end_to_end_digits
    python scripts/compare_backward.py --config configs/digits_deq_mlp.py --workdir runs/e2e_again \
        --summarize=runs/e2e/compare.json --target_drop=1.0      # the report of earlier runs again, no training

An estimator is ``[SOLVER/]NAME[:OPTION=VALUE...]``: a backward name, optionally the forward solver
it runs with (otherwise the config's; ``shine`` without one uses the config's ``anderson`` or
``broyden``, else ``broyden``) and its options (the keyword arguments of its class, as
``--config.backward_options`` takes them), so one table can compare configurations of the same
estimator. Each estimator trains once per seed in ``--seeds`` (the training seed: initialisation and
batch order; the data subset stays the config's). Each run (metrics, plots, checkpoints) lands in
``WORKDIR/<estimator>/`` (``WORKDIR/<estimator>/seed<S>/`` with several seeds).

Prints two tables: per run (test accuracy, forward and backward milliseconds per train step,
mean forward solver steps, training seconds), and per estimator over its seeds (final accuracy
as mean ± half range, wall time and its ratio to the reference, the time to reach the target
accuracy -- the final accuracy of the reference run with the same seed minus ``--target_drop`` points,
the reference being ``implicit`` when compared; runs of one seed share initialisation and batch
order, so each is held to its paired reference -- forward solver steps over the last logged windows, and the backward
share of the step time). Writes both with every run's accuracy curve to ``WORKDIR/compare.json``,
plots accuracy against time and steps to ``WORKDIR/accuracy_vs_time.png`` and train loss to
``WORKDIR/loss_vs_time.png``, and with ``--results=PREFIX`` also writes ``PREFIX.json`` and
``PREFIX.png``. Training time excludes compilation (reported apart) and evaluations; forward and backward times are medians over
repeated calls of the jitted forward pass and of the jitted train step on one batch (backward =
step - forward). It takes the process flags of ``scripts/train.py`` for a multi-process run
(process 0 prints and writes the tables).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for benchmarks/
from benchmarks.timing import median_ms
from implicit_jax._registry import parse_spec
from implicit_jax.estimators import BACKWARDS
from implicit_jax.train import data as data_lib
from implicit_jax.train import fit, is_primary, read_metrics, sharding, validate_config
from implicit_jax.train.cli import (
    define_distributed_flags,
    exit_if_dry_run,
    exit_on_run_errors,
    initialize_distributed_from_flags,
    preflight,
)
from implicit_jax.train.loop import init_state, make_eval_step, make_train_step

_CONFIG = config_flags.DEFINE_config_file("config", None, "config file", lock_config=False, accept_new_attributes=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "output folder")
_BACKWARDS = flags.DEFINE_list(
    "backwards",
    ["implicit", "shine", "jfb", "phantom_unroll", "phantom_neumann"],
    f"estimators to compare, from {sorted(BACKWARDS)}, each optionally NAME:OPTION=VALUE:...",
)
_REPEATS = flags.DEFINE_integer("repeats", 5, "timing repeats per estimator")
_SEEDS = flags.DEFINE_list("seeds", [], "training seeds, each estimator trained once per seed (default: the config's seed)")
_TARGET_DROP = flags.DEFINE_float(
    "target_drop",
    0.5,
    "target accuracy = the reference's final accuracy with the same seed minus this "
    "many points (the reference: implicit if compared, else the first estimator)",
)
_SUMMARIZE = flags.DEFINE_string(
    "summarize",
    "",
    "a compare.json of earlier runs: print and write its report again (--target_drop, --results) without training",
)
_RESULTS = flags.DEFINE_string(
    "results", "", "also write the report to RESULTS.json and RESULTS.png (e.g. benchmarks/results/end_to_end_digits)"
)
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


def split_spec(spec: str) -> tuple[str | None, str]:
    """``"broyden/shine:refine=2"`` -> ``("broyden", "shine:refine=2")``; no ``SOLVER/`` prefix gives ``None``."""
    solver, sep, rest = spec.strip().partition("/")
    return (solver.strip(), rest.strip()) if sep else (None, spec.strip())


def run_config(base, spec: str, seed: int | None = None):
    """The validated config of one compared run: ``base`` with the solver, backward (and its options) that
    ``spec`` (``[SOLVER/]NAME[:OPTION=VALUE...]``) names, and ``seed`` when given."""
    solver, rest = split_spec(spec)
    name, options = parse_spec(rest)
    if name not in BACKWARDS:
        raise ValueError(f"unknown estimator {name!r} in --backwards={spec!r}; valid names are {sorted(BACKWARDS)}")
    config = base.copy_and_resolve_references()
    config.unlock()
    config.backward = name
    config.backward_options = options
    if solver is not None:
        config.solver, config.solver_options = solver, {}
    elif name == "shine" and config.solver not in ("anderson", "broyden"):
        config.solver, config.solver_options = "broyden", {}
    if seed is not None:
        config.seed = seed
    try:
        return validate_config(config)
    except ValueError as error:
        raise ValueError(f"--backwards entry {spec!r}: {error}") from None


def run_folder(spec: str, seed: int | None = None) -> str:
    """A folder name for a run: ``phantom_unroll:k=3`` -> ``phantom_unroll-k3``; ``broyden/shine`` with seed 1 ->
    ``broyden-shine/seed1``."""
    name = spec.replace("/", "-").replace(":", "-").replace("=", "")
    return name if seed is None else os.path.join(name, f"seed{seed}")


def accuracy_curve(records: list[dict]) -> list[tuple[int, float, float]]:
    """``(step, training seconds, test accuracy)`` of every evaluation record, in order."""
    return [(r["step"], r["time"], r["test_accuracy"]) for r in records if "test_accuracy" in r]


def time_to_accuracy(curve: list[tuple[int, float, float]], target: float) -> tuple[int, float] | None:
    """``(step, seconds)`` of the first evaluation at or above ``target``; ``None`` if none reaches it."""
    return next(((step, seconds) for step, seconds, accuracy in curve if accuracy >= target), None)


def final_forward_steps(records: list[dict], windows: int = 3) -> float:
    """Mean forward solver steps over the last ``windows`` logged training windows."""
    train = [r["forward_steps"] for r in records if "loss" in r and not r.get("warmup")] or [
        r["forward_steps"] for r in records if "loss" in r
    ]
    tail = train[-windows:]
    return sum(tail) / len(tail)


def reference_name(rows: list[dict]) -> str:
    """The estimator the others are measured against: ``implicit`` when compared, else the first."""
    specs = list(dict.fromkeys(r["backward"] for r in rows))
    return "implicit" if "implicit" in specs else specs[0]


def seed_targets(rows: list[dict], target_drop: float) -> dict[int, float]:
    """Per seed, the target accuracy: the reference's final accuracy with that seed minus ``target_drop``.

    Runs of one seed share the initialisation and the batch order, so each run is held to the
    reference run it is paired with; seed-to-seed spread does not enter the comparison.
    """
    reference = reference_name(rows)
    return {r["seed"]: r["test_accuracy"] - target_drop for r in rows if r["backward"] == reference}


def summarize(rows: list[dict], target_drop: float) -> tuple[list[dict], dict[int, float]]:
    """Per estimator, over its seeds: final test accuracy (mean, half range, and the mean paired difference to the
    reference), wall time and its ratio to the reference's, time and steps to the paired target accuracy
    (:func:`seed_targets`), forward steps at the end, backward share of the step time.

    Ratios are per seed (against the reference run of the same seed), then averaged. Returns the
    summary rows (in the order the estimators were given) and the per-seed targets.
    """
    import numpy as np

    reference = reference_name(rows)
    targets = seed_targets(rows, target_drop)
    by_seed = {r["seed"]: r for r in rows if r["backward"] == reference}
    summary = []
    for spec in dict.fromkeys(r["backward"] for r in rows):
        runs = [r for r in rows if r["backward"] == spec and r["seed"] in by_seed]
        accuracy = np.array([r["test_accuracy"] for r in runs])
        reached = [time_to_accuracy(r["curve"], targets[r["seed"]]) for r in runs]
        all_reach = all(x is not None for x in reached)
        summary.append(
            dict(
                backward=spec,
                solver=runs[0]["solver"],
                seeds=[r["seed"] for r in runs],
                accuracy_mean=float(accuracy.mean()),
                accuracy_half_range=float((accuracy.max() - accuracy.min()) / 2),
                accuracy_delta=float(np.mean([r["test_accuracy"] - by_seed[r["seed"]]["test_accuracy"] for r in runs])),
                train_seconds=float(np.mean([r["train_seconds"] for r in runs])),
                time_ratio_to_reference=float(np.mean([r["train_seconds"] / by_seed[r["seed"]]["train_seconds"] for r in runs])),
                seeds_reaching_target=sum(x is not None for x in reached),
                seconds_to_target=float(np.mean([x[1] for x in reached])) if all_reach else None,
                steps_to_target=float(np.mean([x[0] for x in reached])) if all_reach else None,
                target_time_ratio=float(np.mean([x[1] / by_seed[r["seed"]]["train_seconds"] for x, r in zip(reached, runs)]))
                if all_reach
                else None,
                final_forward_steps=float(np.mean([r["final_forward_steps"] for r in runs])),
                backward_share=float(np.mean([r["backward_ms"] / max(r["forward_ms"] + r["backward_ms"], 1e-9) for r in runs])),
                step_ms=float(np.mean([r["forward_ms"] + r["backward_ms"] for r in runs])),
            )
        )
    return summary, targets


def plot_loss(runs: dict[str, str], target: str) -> None:
    """Train loss against training seconds, a line per estimator (its first seed's run)."""
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


def plot_accuracy(rows: list[dict], targets: dict[int, float], path: str) -> None:
    """Test accuracy against training seconds (left) and training steps (right): a colour per estimator, a line
    style per seed, each seed's target accuracy a thin grey line in that style."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    specs = list(dict.fromkeys(r["backward"] for r in rows))
    colours = {spec: f"C{i % 10}" for i, spec in enumerate(specs)}
    seeds = sorted({r["seed"] for r in rows})
    styles = {seed: ["-", "--", ":", "-."][i % 4] for i, seed in enumerate(seeds)}
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for r in rows:
        steps, seconds, accuracy = zip(*r["curve"])
        label = r["backward"] if r["seed"] == seeds[0] else None
        for axis, x in zip(axes, (seconds, steps)):
            axis.plot(x, [100 * a for a in accuracy], styles[r["seed"]], color=colours[r["backward"]], label=label, marker=".")
    for axis, xlabel in zip(axes, ("training time (s)", "training step")):
        for seed, target in targets.items():
            axis.axhline(100 * target, color="grey", linestyle=styles.get(seed, ":"), linewidth=0.8)
        axis.set_xlabel(xlabel)
        axis.grid(alpha=0.3)
    lows = [100 * a for r in rows for *_, a in r["curve"][len(r["curve"]) // 3 :]]
    axes[0].set_ylim(min(lows) - 1, max(lows) + 0.5)
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].legend(fontsize=8)
    shown = ", ".join(f"{100 * t:.2f}% (seed {s})" for s, t in targets.items())
    figure.suptitle(f"seeds {', '.join(map(str, seeds))} (line styles); grey: targets {shown}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def print_tables(rows: list[dict], summary: list[dict], targets: dict[int, float]) -> None:
    name = reference_name(rows)
    references = {r["seed"]: r for r in rows if r["backward"] == name}
    width = max(16, *(len(r["backward"]) + 1 for r in rows))
    print(
        f"\n{'backward':<{width}} {'solver':<9} {'seed':>4} {'test acc':>8} {'fwd ms':>8} {'bwd ms':>8} {'step/implicit':>13} "
        f"{'fwd steps':>9} {'train s':>8}"
    )
    for r in rows:
        reference = references.get(r["seed"], next(iter(references.values())))
        ratio = (r["forward_ms"] + r["backward_ms"]) / (reference["forward_ms"] + reference["backward_ms"])
        r["step_ratio_to_implicit"] = ratio
        print(
            f"{r['backward']:<{width}} {r['solver']:<9} {r['seed']:>4} {100 * r['test_accuracy']:7.2f}% {r['forward_ms']:8.1f} "
            f"{r['backward_ms']:8.1f} {ratio:13.2f} {r['mean_forward_steps']:9.1f} {r['train_seconds']:8.0f}"
        )
    shown = ", ".join(f"{100 * t:.2f}% (seed {s})" for s, t in targets.items())
    print(f"\ntarget accuracy: {name}'s final accuracy with the same seed - target_drop: {shown}; ratios per seed, then averaged")
    print(
        f"{'backward':<{width}} {'final acc':>14} {'vs ref':>7} {'wall s':>7} {'wall/ref':>8} {'s to target':>11} "
        f"{'target/ref':>10} {'end fwd steps':>13} {'bwd share':>9}"
    )
    for s in summary:
        to_target = "-" if s["seconds_to_target"] is None else f"{s['seconds_to_target']:.3g}"
        ratio = (
            f"{s['seeds_reaching_target']}/{len(s['seeds'])} seeds"
            if s["target_time_ratio"] is None
            else f"{s['target_time_ratio']:.2f}"
        )
        print(
            f"{s['backward']:<{width}} {100 * s['accuracy_mean']:7.2f}±{100 * s['accuracy_half_range']:.2f}% "
            f"{100 * s['accuracy_delta']:+7.2f} {s['train_seconds']:7.3g} {s['time_ratio_to_reference']:8.2f} {to_target:>11} {ratio:>10} "
            f"{s['final_forward_steps']:13.1f} {100 * s['backward_share']:8.0f}%"
        )


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if _SUMMARIZE.value:  # the report of earlier runs again (e.g. with another --target_drop); nothing trains
        with open(_SUMMARIZE.value) as handle:
            earlier = json.load(handle)
        os.makedirs(_WORKDIR.value, exist_ok=True)
        write_report(earlier["config"], earlier["rows"], _WORKDIR.value, _RESULTS.value)
        return
    seeds = [int(s) for s in _SEEDS.value] if _SEEDS.value else [None]
    try:
        validate_config(_CONFIG.value)
        configs = {(spec, seed): run_config(_CONFIG.value, spec, seed) for spec in _BACKWARDS.value for seed in seeds}
    except ValueError as error:
        sys.exit(f"error: {error}")
    exit_if_dry_run(f"compare {len(configs)} runs ({', '.join(_BACKWARDS.value)}) into {_WORKDIR.value}")
    initialize_distributed_from_flags()  # after the pure-Python checks above, before any device is touched
    base = _CONFIG.value
    dataset = data_lib.load(
        base.dataset, data_dir=base.data_dir, train_subset=base.train_subset, test_subset=base.test_subset, seed=base.seed
    )
    rows, runs = [], {}
    for (name, seed), config in configs.items():
        with exit_on_run_errors():
            result = fit(
                config,
                os.path.join(_WORKDIR.value, run_folder(name, seed if len(seeds) > 1 else None)),
                dataset=dataset,
                progress=False,
            )
        forward_ms, backward_ms = step_times(config, dataset, result.state, _REPEATS.value)
        if not is_primary():
            continue  # process 0 reports
        records = read_metrics(result.metrics_path)
        train = [r for r in records if "loss" in r]
        runs.setdefault(name, result.metrics_path)
        rows.append(
            dict(
                backward=name,
                solver=config.solver,
                seed=config.seed,
                test_accuracy=result.test_accuracy,
                forward_ms=forward_ms,
                backward_ms=backward_ms,
                mean_forward_steps=sum(r["forward_steps"] for r in train) / len(train),
                final_forward_steps=final_forward_steps(records),
                train_seconds=result.train_seconds,
                compile_seconds=sum(r["compile_seconds"] for r in records if r.get("event") == "compiled"),
                steps=train[-1]["step"],
                curve=accuracy_curve(records),
            )
        )
        print(
            f"done {name} (seed {config.seed}): test accuracy {100 * result.test_accuracy:.2f}% in {result.train_seconds:.0f} s",
            flush=True,
        )
    if not is_primary():
        return
    plot_loss(runs, os.path.join(_WORKDIR.value, "loss_vs_time.png"))
    write_report(base.to_dict(), rows, _WORKDIR.value, _RESULTS.value)


def write_report(config: dict, rows: list[dict], workdir: str, results: str = "") -> None:
    """Summarize ``rows``, print both tables, write ``WORKDIR/compare.json`` and ``accuracy_vs_time.png`` (and
    ``RESULTS.json``/``.png`` when ``results`` is given)."""
    summary, targets = summarize(rows, _TARGET_DROP.value / 100)
    print_tables(rows, summary, targets)
    report = dict(
        config=config,
        seeds=sorted({r["seed"] for r in rows}),
        reference=reference_name(rows),
        target_drop_points=_TARGET_DROP.value,
        target_accuracy_per_seed={str(seed): target for seed, target in targets.items()},
        rows=rows,
        summary=summary,
    )
    outputs = [os.path.join(workdir, name) for name in ("compare.json", "accuracy_vs_time.png")]
    if results:
        os.makedirs(os.path.dirname(os.path.abspath(results)), exist_ok=True)
        outputs += [results + ".json", results + ".png"]
    for json_path, png_path in zip(outputs[::2], outputs[1::2]):
        with open(json_path, "w") as handle:
            json.dump(report, handle, indent=1)
        plot_accuracy(rows, targets, png_path)
    print(f"\ntables: {', '.join(outputs[::2])}; plots: {', '.join(outputs[1::2])}")


if __name__ == "__main__":
    preflight(sys.argv[1:])
    app.run(main)
