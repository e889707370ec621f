"""The training loop: jitted Optax train step, evaluation, checkpoints, metrics, plots.

:func:`fit` trains the model a configuration names and returns a :class:`RunResult`.
The train state is a pytree (:class:`TrainState`): the model's ``nnx.Param`` state, the
optax state, the step and a PRNG key. Everything a step does is a pure function of the
state and the step's batch (the batch itself is a pure function of the step, see
:func:`implicit_jax.train.data.batch_indices`), so a run interrupted and resumed from
its latest checkpoint ends with exactly the parameters of an uninterrupted run.
An interrupted run (Ctrl-C, ``SIGTERM``, or any exception) writes a checkpoint of the
last completed step before it exits.

Metrics, averaged over the ``log_every`` steps before each record: ``loss`` (with the Jacobian penalty), ``cross_entropy``, ``accuracy``,
``forward_steps`` (mean over samples of the solver iterations), ``forward_residual``
(mean relative residual), ``forward_converged`` (fraction), ``backward_steps`` and
``backward_residual`` (the adjoint solve's, from :func:`implicit_jax.backward_tap`),
``jacobian_penalty``, ``grad_norm``, ``step_seconds``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from implicit_jax.estimators import backward_tap
from implicit_jax.train import data as data_lib
from implicit_jax.train import sharding
from implicit_jax.train.checkpoint import Checkpointer
from implicit_jax.train.config import MODEL_FIELDS, estimator_from_config, model_from_config, optimizer_from_config, validate_config
from implicit_jax.train.metrics import MetricsWriter, plot_metrics


class TrainState(NamedTuple):
    """Everything a train step reads and writes."""

    step: jax.Array
    params: Any  # nnx.State of the model's nnx.Param variables
    opt_state: optax.OptState
    key: jax.Array  # raw uint32 PRNG key


@dataclasses.dataclass
class RunResult:
    """What :func:`fit` returns."""

    state: TrainState
    test_accuracy: float
    test_loss: float
    workdir: str
    metrics_path: str
    plots: list[str]
    train_seconds: float


def _mean(x):
    return jnp.mean(jnp.asarray(x, jnp.float32))


def make_loss(graphdef, rest, *, jac_reg_weight: float, unrolled_steps: int | None):
    """``loss(params, tap, images, labels, key) -> (loss, aux)`` for ``jax.value_and_grad``."""

    def loss(params, tap, images, labels, key):
        model = nnx.merge(graphdef, params, rest)
        out = model(images, jacobian_key=key if jac_reg_weight > 0 else None, unrolled_steps=unrolled_steps,
                    backward_tap=None if unrolled_steps else tap)
        cross_entropy = optax.softmax_cross_entropy_with_integer_labels(out.logits, labels).mean()
        total = cross_entropy + jac_reg_weight * out.jacobian_penalty
        accuracy = jnp.mean(jnp.argmax(out.logits, -1) == labels)
        return total, dict(cross_entropy=cross_entropy, accuracy=accuracy, jacobian_penalty=out.jacobian_penalty,
                           forward_steps=_mean(out.info.steps), forward_residual=_mean(out.info.rel_residual),
                           forward_converged=_mean(out.info.converged))

    return loss


def make_train_step(graphdef, rest, optimizer: optax.GradientTransformation, *, jac_reg_weight: float = 0.0,
                    unrolled_steps: int | None = None) -> Callable[[TrainState, jax.Array, jax.Array], tuple]:
    """One optimizer step: ``(state, images, labels) -> (state, metrics)`` (not jitted)."""
    loss_fn = make_loss(graphdef, rest, jac_reg_weight=jac_reg_weight, unrolled_steps=unrolled_steps)

    def train_step(state: TrainState, images, labels):
        key = jax.random.fold_in(state.key, state.step)
        (loss, aux), (grads, bwd) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
            state.params, backward_tap(), images, labels, key)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(loss=loss, grad_norm=optax.global_norm(grads), backward_steps=bwd.steps,
                       backward_residual=bwd.rel_residual, **aux)
        return TrainState(state.step + 1, params, opt_state, state.key), metrics

    return train_step


def make_eval_step(graphdef, rest):
    """``(params, images, labels, mask) -> (sum of losses, number correct, sum of forward steps)`` over valid rows."""

    def eval_step(params, images, labels, mask):
        out = nnx.merge(graphdef, params, rest)(images)
        losses = optax.softmax_cross_entropy_with_integer_labels(out.logits, labels)
        correct = (jnp.argmax(out.logits, -1) == labels) * mask
        return jnp.sum(losses * mask), jnp.sum(correct), jnp.sum(out.info.steps * mask)

    return eval_step


def evaluate(eval_step, params, images: np.ndarray, labels: np.ndarray, batch_size: int, mesh) -> dict[str, float]:
    """Test loss, accuracy and mean forward steps over every example (padded last batch masked out)."""
    sums = np.zeros(3)
    for x, y, valid in data_lib.eval_batches(images, labels, batch_size):
        mask = (np.arange(batch_size) < valid).astype(np.float32)
        x, y, mask = sharding.shard_batch(mesh, x, y, mask)
        sums += np.array([float(v) for v in eval_step(params, x, y, mask)])
    n = len(labels)
    return dict(test_loss=sums[0] / n, test_accuracy=sums[1] / n, test_forward_steps=sums[2] / n)


def init_state(config: ml_collections.ConfigDict, dataset: data_lib.Dataset, total_steps: int):
    """Model, its ``(graphdef, rest)``, the optimizer and the initial :class:`TrainState`."""
    model = model_from_config(config, dataset.image_shape, dataset.num_classes, nnx.Rngs(config.seed))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    optimizer = optimizer_from_config(config, total_steps)
    state = TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params),
                       jax.random.key_data(jax.random.key(config.seed + 1)))
    return model, (graphdef, rest), optimizer, state


def _model_description(config) -> dict[str, Any]:
    return {field: config[field] for field in MODEL_FIELDS}


class _Interrupted(Exception):
    pass


@dataclasses.dataclass
class _Run:
    """What the steps of one training run share: data, mesh, length, output files and the jitted steps."""

    config: ml_collections.ConfigDict
    workdir: str
    dataset: data_lib.Dataset
    mesh: Any
    total_steps: int
    checkpointer: Checkpointer
    writer: MetricsWriter
    train_step: Callable
    warmup_step: Callable
    eval_step: Callable

    def evaluate(self, params) -> dict[str, float]:
        return evaluate(self.eval_step, params, self.dataset.test_images, self.dataset.test_labels,
                        self.config.eval_batch_size, self.mesh)

    def batch(self, step: int):
        idx = data_lib.batch_indices(step, len(self.dataset.train_labels), self.config.batch_size, self.config.seed)
        return sharding.shard_batch(self.mesh, self.dataset.train_images[idx], self.dataset.train_labels[idx])


def _load_dataset(config, dataset: data_lib.Dataset | None) -> data_lib.Dataset:
    if dataset is not None:
        return data_lib.check_dataset(dataset)
    return data_lib.load(config.dataset, data_dir=config.data_dir, train_subset=config.train_subset,
                         test_subset=config.test_subset, seed=config.seed)


def _jitted_steps(config, graphdef, rest, optimizer, mesh, state) -> tuple[Callable, Callable, Callable]:
    """The jitted train step, unrolled warm-up step and evaluation step (state replicated over ``mesh``)."""
    state_sharding = jax.tree_util.tree_map(lambda _: sharding.replicated(mesh), state)

    def jit_step(fn):
        return jax.jit(fn, out_shardings=(state_sharding, sharding.replicated(mesh)), donate_argnums=0)

    train_step = jit_step(make_train_step(graphdef, rest, optimizer, jac_reg_weight=config.jac_reg_weight))
    warmup_step = jit_step(make_train_step(graphdef, rest, optimizer, jac_reg_weight=0.0,
                                           unrolled_steps=config.warmup_unrolled_steps))
    return train_step, warmup_step, jax.jit(make_eval_step(graphdef, rest))


def _start_run(config, workdir: str, resume: bool, dataset: data_lib.Dataset | None) -> tuple[_Run, TrainState, int]:
    """Check the workdir, load data, build the model and steps, restore the latest checkpoint: ``(run, state, start)``."""
    checkpoint_dir = os.path.join(os.path.abspath(workdir), "checkpoints")
    if not resume and os.path.isdir(checkpoint_dir) and os.listdir(checkpoint_dir):
        raise ValueError(f"{workdir} already holds checkpoints of a run; pass --resume to continue it or choose "
                         "another --workdir.")
    dataset = _load_dataset(config, dataset)
    mesh = sharding.data_mesh()
    sharding.check_batch_size(config.batch_size, mesh)
    sharding.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
    per_epoch = data_lib.steps_per_epoch(len(dataset.train_labels), config.batch_size)
    total_steps = max(1, int(round(config.num_epochs * per_epoch)))

    _, (graphdef, rest), optimizer, state = init_state(config, dataset, total_steps)
    state = sharding.replicate(mesh, state)
    checkpointer = Checkpointer(checkpoint_dir, _model_description(config))
    start = 0
    if resume and checkpointer.latest_step() is not None:
        start = checkpointer.latest_step()
        state = checkpointer.restore(start, state)
    os.makedirs(workdir, exist_ok=True)
    write_config(config, workdir)
    writer = MetricsWriter(os.path.join(workdir, "metrics.jsonl"), resume_step=start if resume else None)
    steps = _jitted_steps(config, graphdef, rest, optimizer, mesh, state)
    return _Run(config, workdir, dataset, mesh, total_steps, checkpointer, writer, *steps), state, start


def write_config(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Save ``config.json``: every field, plus under ``"resolved"`` the solver and backward objects it configures."""
    solver, backward = estimator_from_config(config)
    path = os.path.join(workdir, "config.json")
    with open(path, "w") as handle:
        json.dump(dict(config.to_dict(), resolved=dict(solver=repr(solver), backward=repr(backward))), handle, indent=1)
    return path


def _window_means(window: list[dict[str, float]]) -> dict[str, float]:
    return {key: float(np.mean([m[key] for m in window])) for key in window[0]}


def _save_on_interrupt(run: _Run, state: TrainState, start: int) -> None:
    """Checkpoint the last completed step, unless the state was donated to a step that did not finish."""
    if any(getattr(leaf, "is_deleted", lambda: False)() for leaf in jax.tree_util.tree_leaves(state)):
        return
    completed = int(jax.device_get(state.step))
    if completed > start and run.checkpointer.latest_step() != completed:
        run.checkpointer.save(completed, state)


def _train(run: _Run, state: TrainState, start: int, progress: bool, on_step) -> tuple[TrainState, float]:
    """Steps ``start .. total_steps - 1`` with logging, evaluation and checkpoints: ``(state, train seconds)``."""
    config = run.config
    elapsed, window = 0.0, []
    bar = tqdm(total=run.total_steps, initial=start, disable=not progress, dynamic_ncols=True, desc="train")
    try:
        for step in range(start, run.total_steps):
            images, labels = run.batch(step)
            tick = time.perf_counter()
            warmup = step < config.warmup_steps
            state, metrics = (run.warmup_step if warmup else run.train_step)(state, images, labels)
            metrics = jax.device_get(metrics)
            elapsed += time.perf_counter() - tick
            window.append(dict(metrics, step_seconds=time.perf_counter() - tick))
            done = step + 1
            if done % config.log_every == 0 or done == run.total_steps:
                run.writer.write(dict(step=done, time=elapsed, warmup=warmup, **_window_means(window)))
                window = []
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['loss']:.3f}", acc=f"{metrics['accuracy']:.3f}",
                            fwd=f"{metrics['forward_steps']:.1f}", res=f"{metrics['forward_residual']:.1e}")
            if config.eval_every and done % config.eval_every == 0 and done < run.total_steps:
                run.writer.write(dict(step=done, time=elapsed, **run.evaluate(state.params)))
            if config.checkpoint_every and done % config.checkpoint_every == 0:
                run.checkpointer.save(done, state)
            if on_step is not None:
                on_step(done)
    except BaseException:
        _save_on_interrupt(run, state, start)
        run.checkpointer.close()
        raise
    finally:
        bar.close()
    return state, elapsed


def fit(config: ml_collections.ConfigDict, workdir: str, *, resume: bool = False, dataset: data_lib.Dataset | None = None,
        progress: bool = True, on_step: Callable[[int], None] | None = None) -> RunResult:
    """Train the configured model; write ``metrics.jsonl``, plots and checkpoints to ``workdir``.

    Args:
      config: a validated configuration (see :mod:`implicit_jax.train.config`).
      workdir: output folder. Without ``resume`` it must not hold a previous run's
        checkpoints (nothing is overwritten); with ``resume`` training continues from its
        latest checkpoint (or starts fresh if there is none).
      dataset: use this dataset instead of loading ``config.dataset`` (checked first).
      progress: show a tqdm progress bar.
      on_step: called with the step number after every step (tests use it to interrupt).
    """
    validate_config(config)
    run, state, start = _start_run(config, workdir, resume, dataset)

    def on_sigterm(signum, frame):
        raise _Interrupted("SIGTERM")

    previous_handler = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        state, elapsed = _train(run, state, start, progress, on_step)
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    if run.checkpointer.latest_step() != run.total_steps:
        run.checkpointer.save(run.total_steps, state)
    run.checkpointer.close()
    final = run.evaluate(state.params)
    if start < run.total_steps:  # a resumed, already finished run has its final record
        run.writer.write(dict(step=run.total_steps, time=elapsed, **final))
    plots = plot_metrics(run.writer.path, workdir)
    return RunResult(state, final["test_accuracy"], final["test_loss"], os.path.abspath(workdir), run.writer.path, plots,
                     elapsed)
