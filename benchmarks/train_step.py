"""Wall time per DEQ train step for each backward estimator, as ratios to "implicit", and against torchdeq.

Model: the DEQ MLP of ``configs/digits_deq_mlp.py`` (injection 64 -> 128, cell
z = tanh(W z + x) with W spectrally normalised to 0.9, layer norm, linear head) on
scikit-learn's 8x8 digits, batch 64, Anderson forward (tolerance 1e-4 on the relative
residual, at most 40 steps), Adam. Every method trains from its own framework's
initialisation on the same batch sequence for ``--steps`` steps; the table gives the
median wall time of the steps after the first ``--skip`` (compilation, warm-up), the
mean forward solver steps, and the final train loss.

torchdeq (PyTorch, CPU) runs the same model with its equivalent options: ``ift=True``
for "implicit" (Anderson adjoint solve at the same tolerance), ``grad=1`` for "jfb",
``grad=k, tau=damping`` for "phantom_unroll" (its unrolled phantom gradient). torchdeq has
no SHINE or Neumann-phantom estimator. Install it with the ``bench`` extra after torch's
CPU build (``pip install torch==2.13.0``); without it, only our rows are printed.

``--model conv`` times the conv DEQ of ``configs/fashion_mnist_deq.py`` (batch 128,
Fashion-MNIST, Anderson at tolerance 1e-2, at most 15 steps, Jacobian regularisation) instead;
torchdeq is not run there.

    python benchmarks/train_step.py                      # writes benchmarks/results/train_step_mlp.json
    python benchmarks/train_step.py --model conv --steps 40 --skip 10
    python benchmarks/train_step.py --steps 30 --no-peers
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import time
from pathlib import Path

import jax
import numpy as np

import implicit_jax as ij
from implicit_jax.train import base_config, sharding
from implicit_jax.train import data as data_lib
from implicit_jax.train.loop import init_state, make_train_step

HIDDEN, BATCH, TOL, MAX_STEPS, LR, BOUND = 128, 64, 1e-4, 40, 3e-3, 0.9
PHANTOM_K, PHANTOM_DAMPING = 5, 0.5
OURS = {
    "implicit": ("anderson", "implicit"),
    "shine": ("broyden", "shine"),
    "jfb": ("anderson", "jfb"),
    "phantom_unroll": ("anderson", ij.PhantomUnroll(k=PHANTOM_K, damping=PHANTOM_DAMPING)),
    "phantom_neumann": ("anderson", ij.PhantomNeumann(k=PHANTOM_K, damping=PHANTOM_DAMPING)),
}


def batches(dataset, steps, batch=BATCH):
    n = len(dataset.train_labels)
    for step in range(steps):
        idx = data_lib.batch_indices(step, n, batch, seed=0)
        yield dataset.train_images[idx], dataset.train_labels[idx]


def summarize(times, fwd_steps, losses, skip):
    return dict(
        median_ms=1e3 * float(np.median(times[skip:])),
        mean_forward_steps=float(np.mean(fwd_steps[skip:])),
        final_loss=float(np.mean(losses[-5:])),
    )


def model_config(model: str):
    """The benchmarked configuration: the digits DEQ MLP, or the main job's conv DEQ."""
    if model == "conv":
        spec = importlib.util.spec_from_file_location("config", Path(__file__).parents[1] / "configs" / "fashion_mnist_deq.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.get_config()
    config = base_config()
    config.update(
        dict(
            dataset="digits",
            model="deq_mlp",
            width=HIDDEN,
            normalization="spectral",
            tol=TOL,
            max_steps=MAX_STEPS,
            learning_rate=LR,
            schedule="constant",
            batch_size=BATCH,
        )
    )
    return config


def time_ours(name, model, dataset, steps, skip):
    solver, backward = OURS[name]
    config = model_config(model)
    config.solver = solver
    config.backward = backward if isinstance(backward, str) else "implicit"
    _, (graphdef, rest), optimizer, state = init_state(config, dataset, steps)
    if not isinstance(backward, str):  # a configured estimator object: swap it into the model
        from flax import nnx

        model = nnx.merge(graphdef, state.params, rest)
        model.deq.backward = backward
        graphdef, _, rest = nnx.split(model, nnx.Param, ...)
    mesh = sharding.data_mesh()
    step_fn = jax.jit(make_train_step(graphdef, rest, optimizer, jac_reg_weight=config.jac_reg_weight))
    times, fwd, losses = [], [], []
    for x, y in batches(dataset, steps, config.batch_size):
        x, y = sharding.shard_batch(mesh, x, y)
        tick = time.perf_counter()
        state, metrics = step_fn(state, x, y)
        metrics = jax.device_get(metrics)
        times.append(time.perf_counter() - tick)
        fwd.append(metrics["forward_steps"])
        losses.append(metrics["loss"])
    return summarize(times, fwd, losses, skip)


def time_torchdeq(name, dataset, steps, skip):
    import torch
    from torchdeq import get_deq

    torch.manual_seed(0)
    options = dict(f_solver="anderson", f_max_iter=MAX_STEPS, f_tol=TOL, f_stop_mode="rel")
    if name == "implicit":
        options.update(ift=True, b_solver="anderson", b_max_iter=MAX_STEPS, b_tol=TOL, b_stop_mode="rel")
    elif name == "jfb":
        options.update(grad=1)
    elif name == "phantom_unroll":
        options.update(grad=PHANTOM_K, tau=PHANTOM_DAMPING)
    else:
        return None

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.injection = torch.nn.Linear(64, HIDDEN)
            self.weight = torch.nn.Parameter(torch.randn(HIDDEN, HIDDEN) * 0.5 / HIDDEN**0.5)
            self.norm = torch.nn.LayerNorm(HIDDEN)
            self.head = torch.nn.Linear(HIDDEN, 10)
            self.deq = get_deq(**options)

        def forward(self, x):
            u = self.injection(x)
            w = self.weight * torch.clamp(BOUND / torch.linalg.matrix_norm(self.weight, 2), max=1.0)
            z, info = self.deq(lambda z: torch.tanh(z @ w.T + u), torch.zeros_like(u))
            return self.head(self.norm(z[-1])), info

    model = Model()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    times, fwd, losses = [], [], []
    for x, y in batches(dataset, steps):
        x, y = torch.from_numpy(x.reshape(BATCH, -1)), torch.from_numpy(y.astype(np.int64))
        tick = time.perf_counter()
        logits, info = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - tick)
        fwd.append(float(info["nstep"].float().mean()))
        losses.append(loss.item())
    return summarize(times, fwd, losses, skip)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["mlp", "conv"], default="mlp")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--skip", type=int, default=20)
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/train_step_<model>.json)")
    parser.add_argument(
        "--data_dir",
        default="",
        help="folder of Fashion-MNIST's IDX files for --model=conv (default: Debian's dataset-fashion-mnist)",
    )
    args = parser.parse_args()
    from implicit_jax.train.cli import exit_if_dry_run  # needs the train extra; here so the rest does not

    exit_if_dry_run(f"{Path(__file__).name} with {vars(args)}")
    args.out = args.out or str(Path(__file__).parent / "results" / f"train_step_{args.model}.json")
    if not 0 <= args.skip < args.steps:
        parser.error("--skip must be in [0, --steps)")
    config = model_config(args.model)
    config.data_dir = args.data_dir
    dataset = data_lib.load(config.dataset, data_dir=config.data_dir, seed=config.seed)
    peers = not args.no_peers and args.model == "mlp"
    if peers:
        try:
            import torchdeq  # noqa: F401
        except ImportError:
            print("torchdeq is not installed (pip install torch==2.13.0 && pip install -e '.[bench]'); ours only")
            peers = False
    rows = []
    for name in OURS:
        ours = time_ours(name, args.model, dataset, args.steps, args.skip)
        theirs = time_torchdeq(name, dataset, args.steps, args.skip) if peers else None
        rows.append(dict(backward=name, ours=ours, torchdeq=theirs))
    implicit_ms = rows[0]["ours"]["median_ms"]
    setting = (
        f"DEQ MLP on digits, batch {BATCH}, hidden {HIDDEN}, Anderson tol {TOL} (rel)"
        if args.model == "mlp"
        else f"conv DEQ on Fashion-MNIST, batch {config.batch_size}, width {config.width}, tol {config.tol} (rel), "
        f"max {config.max_steps} steps, Jacobian penalty {config.jac_reg_weight}"
    )
    print(
        f"{setting}, {args.steps} steps, median of the last {args.steps - args.skip}; "
        f"{platform.processor() or platform.machine()}, {jax.devices()[0].platform}"
    )
    print(
        f"{'backward':<16} {'ours ms':>8} {'/implicit':>9} {'fwd steps':>9} {'torchdeq ms':>11} {'fwd steps':>9} "
        f"{'torchdeq/ours':>13}"
    )
    for row in rows:
        ours, theirs = row["ours"], row["torchdeq"]
        row["ratio_to_implicit"] = ours["median_ms"] / implicit_ms
        line = f"{row['backward']:<16} {ours['median_ms']:8.2f} {row['ratio_to_implicit']:9.2f} {ours['mean_forward_steps']:9.1f}"
        if theirs:
            row["torchdeq_over_ours"] = theirs["median_ms"] / ours["median_ms"]
            line += f" {theirs['median_ms']:11.2f} {theirs['mean_forward_steps']:9.1f} {row['torchdeq_over_ours']:13.2f}"
        else:
            line += f" {'n/a':>11} {'':>9} {'':>13}"
        print(line)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(
            dict(
                setting=setting,
                steps=args.steps,
                skip=args.skip,
                rows=rows,
                machine=platform.machine(),
                backend=jax.devices()[0].platform,
            ),
            handle,
            indent=1,
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
