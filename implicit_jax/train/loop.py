"""The training loop: jitted Optax train step, evaluation, checkpoints, metrics, plots.

:func:`fit` trains the model a configuration names and returns a :class:`RunResult`.
The train state is a pytree (:class:`TrainState`): the model's ``nnx.Param`` state, the
optax state, the step and a PRNG key. Everything a step does is a pure function of the
state and the step's batch (the batch itself is a pure function of the step, see
:func:`implicit_jax.train.data.batch_indices`), so a run interrupted and resumed from
its latest checkpoint ends with exactly the parameters of an uninterrupted run.
An interrupted run (Ctrl-C, ``SIGTERM``, or any exception) writes a checkpoint of the
last completed step before it exits; Ctrl-C and ``SIGTERM`` then raise :class:`~implicit_jax.train.RunInterrupted`.
In a multi-process run ``SIGTERM`` to any process stops every process at one agreed step
(JAX's preemption sync point) with a checkpoint; Ctrl-C or an error in one process cannot
checkpoint (that needs every process) and resumes from the last periodic checkpoint.
Checkpoints carry the training seconds spent, so a resumed run's ``time`` continues. ``time``
counts training steps only: the steps are compiled before the clock starts (a record
``{"event": "compiled", "compile_seconds": ...}`` says how long that took) and evaluations are
not timed.

A non-finite loss, gradient or updated state never enters the state (see
:mod:`implicit_jax.train.health`): the configured ``nonfinite_policy`` stops the run with a
:class:`~implicit_jax.train.health.NonFiniteError`, skips the batch, or rolls back to the
latest checkpoint with a lower learning rate. One run at a time holds a workdir
(:mod:`implicit_jax.train.lock`).

Metrics, averaged over the ``log_every`` steps before each record: ``loss`` (with the Jacobian penalty), ``cross_entropy``, ``accuracy``,
``forward_steps`` (mean over samples of the solver iterations), ``forward_residual``
(mean relative residual), ``forward_converged`` (fraction of samples), ``backward_steps``,
``backward_residual``, ``backward_converged`` (fraction of steps whose adjoint solve converged
for every sample; null for estimators without one) and ``backward_fallback`` (from
:func:`implicit_jax.backward_tap`), ``jacobian_penalty``, ``grad_norm``, ``lr_scale``,
``step_seconds``. A record written on an interruption carries ``partial: true``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import time
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.experimental import multihost_utils
from tqdm import tqdm

from implicit_jax.estimators import backward_tap
from implicit_jax.train import data as data_lib
from implicit_jax.train import health, sharding
from implicit_jax.train.checkpoint import Checkpointer
from implicit_jax.train.config import (
    MODEL_FIELDS,
    estimator_from_config,
    model_from_config,
    optimizer_from_config,
    validate_config,
)
from implicit_jax.train.lock import RunLock
from implicit_jax.train.metrics import MetricsWriter, plot_metrics


class TrainState(NamedTuple):
    """Everything a train step reads and writes."""

    step: jax.Array
    params: Any  # nnx.State of the model's nnx.Param variables
    opt_state: optax.OptState
    key: jax.Array  # raw uint32 PRNG key
    lr_scale: jax.Array  # float32 factor on every update: 1, lowered by each rollback


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
        out = model(
            images,
            jacobian_key=key if jac_reg_weight > 0 else None,
            unrolled_steps=unrolled_steps,
            backward_tap=None if unrolled_steps else tap,
        )
        cross_entropy = optax.softmax_cross_entropy_with_integer_labels(out.logits, labels).mean()
        total = cross_entropy + jac_reg_weight * out.jacobian_penalty
        accuracy = jnp.mean(jnp.argmax(out.logits, -1) == labels)
        return total, dict(
            cross_entropy=cross_entropy,
            accuracy=accuracy,
            jacobian_penalty=out.jacobian_penalty,
            forward_steps=_mean(out.info.steps),
            forward_residual=_mean(out.info.rel_residual),
            forward_converged=_mean(out.info.converged),
        )

    return loss


#: keys of a train step's metrics that hold the non-finite check (read by the loop, not logged).
HEALTH_KEYS = ("finite", "finite_loss", "finite_grads", "finite_state")


def make_train_step(
    graphdef,
    rest,
    optimizer: optax.GradientTransformation,
    *,
    jac_reg_weight: float = 0.0,
    unrolled_steps: int | None = None,
    skip_nonfinite: bool = False,
) -> Callable[[TrainState, jax.Array, jax.Array], tuple]:
    """One optimizer step: ``(state, images, labels) -> (state, metrics)`` (not jitted).

    The updates are scaled by ``state.lr_scale`` (the same as scaling the learning rate, for
    every optimizer of :func:`~implicit_jax.train.optimizer_from_config`). Where the loss,
    a gradient or the updated state is non-finite the step returns the previous state
    unchanged, or with only the step counter advanced if ``skip_nonfinite``; ``metrics``
    holds the flags of :func:`~implicit_jax.train.health.finite_report` under ``HEALTH_KEYS``.
    """
    loss_fn = make_loss(graphdef, rest, jac_reg_weight=jac_reg_weight, unrolled_steps=unrolled_steps)

    def train_step(state: TrainState, images, labels):
        key = jax.random.fold_in(state.key, state.step)
        (loss, aux), (grads, bwd) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
            state.params, backward_tap(), images, labels, key
        )
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        updates = jax.tree_util.tree_map(lambda u: u * state.lr_scale.astype(u.dtype), updates)
        params = optax.apply_updates(state.params, updates)
        report = health.finite_report(loss, grads, (params, opt_state))
        updated = TrainState(state.step + 1, params, opt_state, state.key, state.lr_scale)
        kept = state._replace(step=state.step + 1) if skip_nonfinite else state
        metrics = dict(
            loss=loss,
            grad_norm=optax.tree.norm(grads),
            backward_steps=bwd.steps,
            backward_residual=bwd.rel_residual,
            backward_converged=bwd.converged,
            backward_fallback=bwd.fallback_fraction,
            lr_scale=state.lr_scale,
            **aux,
            **report,
        )
        return health.select_state(report["finite"], updated, kept), metrics

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
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)  # type: ignore[misc]
    optimizer = optimizer_from_config(config, total_steps)
    state = TrainState(
        jnp.zeros((), jnp.int32),
        params,
        optimizer.init(params),
        jax.random.key_data(jax.random.key(config.seed + 1)),
        jnp.ones((), jnp.float32),
    )
    return model, (graphdef, rest), optimizer, state


def _model_description(config) -> dict[str, Any]:
    return {field: config[field] for field in MODEL_FIELDS}


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or ``SIGTERM`` stopped :func:`fit`; the last completed step was checkpointed."""

    def __init__(self, message: str, step: int, signum: int):
        super().__init__(message)
        self.step, self.signum = step, signum


class _Terminated(Exception):
    """``SIGTERM`` received (raised by the handler :func:`fit` installs)."""


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
    train_step: Any  # a jax.jit wrapper: callable, and .lower(...) compiles ahead of time
    warmup_step: Any
    eval_step: Callable
    grad_names: list[str]
    state_names: list[str]

    def evaluate(self, params) -> dict[str, float]:
        return evaluate(
            self.eval_step, params, self.dataset.test_images, self.dataset.test_labels, self.config.eval_batch_size, self.mesh
        )

    def batch(self, step: int):
        idx = data_lib.batch_indices(step, len(self.dataset.train_labels), self.config.batch_size, self.config.seed)
        return sharding.shard_batch(self.mesh, self.dataset.train_images[idx], self.dataset.train_labels[idx])


def _load_dataset(config, dataset: data_lib.Dataset | None) -> data_lib.Dataset:
    if dataset is not None:
        return data_lib.check_dataset(dataset)
    return data_lib.load(
        config.dataset,
        data_dir=config.data_dir,
        train_subset=config.train_subset,
        test_subset=config.test_subset,
        seed=config.seed,
    )


def _jitted_steps(config, graphdef, rest, optimizer, mesh, state) -> tuple[Callable, Callable, Callable]:
    """The jitted train step, unrolled warm-up step and evaluation step (state replicated over ``mesh``)."""
    state_sharding = jax.tree_util.tree_map(lambda _: sharding.replicated(mesh), state)

    def jit_step(fn):
        return jax.jit(fn, out_shardings=(state_sharding, sharding.replicated(mesh)), donate_argnums=0)

    skip = config.nonfinite_policy == "skip"
    train_step = jit_step(make_train_step(graphdef, rest, optimizer, jac_reg_weight=config.jac_reg_weight, skip_nonfinite=skip))
    warmup_step = jit_step(
        make_train_step(
            graphdef, rest, optimizer, jac_reg_weight=0.0, unrolled_steps=config.warmup_unrolled_steps, skip_nonfinite=skip
        )
    )
    return train_step, warmup_step, jax.jit(make_eval_step(graphdef, rest))


def check_workdir(workdir: str) -> None:
    """A ValueError if ``workdir`` is a file or cannot be created or written."""
    path = os.path.abspath(workdir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"--workdir {workdir} is a file, not a folder; choose a folder for the run's outputs.")
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write-test-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as error:
        raise ValueError(f"--workdir {workdir} cannot be written ({error.strerror}); choose another folder.") from None


def _start_run(config, workdir: str, resume: bool, dataset: data_lib.Dataset | None) -> tuple[_Run, TrainState, int, float]:
    """Check the workdir, load data, build the model and steps, restore the latest readable checkpoint.

    Returns ``(run, state, start step, training seconds already spent)``.
    """
    checkpoint_dir = os.path.join(os.path.abspath(workdir), "checkpoints")
    if not resume and os.path.isdir(checkpoint_dir) and os.listdir(checkpoint_dir):
        raise ValueError(
            f"{workdir} already holds checkpoints of a run; pass --resume to continue it or choose another --workdir."
        )
    mesh = sharding.data_mesh()
    sharding.check_batch_size(config.batch_size, mesh)
    sharding.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
    dataset = _load_dataset(config, dataset)
    per_epoch = data_lib.steps_per_epoch(len(dataset.train_labels), config.batch_size)
    total_steps = max(1, round(config.num_epochs * per_epoch))

    _, (graphdef, rest), optimizer, state = init_state(config, dataset, total_steps)
    state = sharding.replicate(mesh, state)
    checkpointer = Checkpointer(checkpoint_dir, _model_description(config))
    start, seconds = 0, 0.0
    restored = checkpointer.restore_latest(state) if resume else None
    if restored is not None:
        start, state, seconds = restored
    primary = sharding.is_primary()
    if primary:
        write_config(config, workdir)
    writer = MetricsWriter(os.path.join(workdir, "metrics.jsonl"), resume_step=start if resume else None, enabled=primary)
    steps = _jitted_steps(config, graphdef, rest, optimizer, mesh, state)
    names = (
        health.leaf_names(state.params),
        (
            [f"params.{n}" for n in health.leaf_names(state.params)]
            + [f"opt_state.{n}" for n in health.leaf_names(state.opt_state)]
        ),
    )
    run = _Run(config, workdir, dataset, mesh, total_steps, checkpointer, writer, *steps, *names)
    if config.nonfinite_policy == "rollback" and checkpointer.latest_step() is None:
        checkpointer.save(start, state, train_seconds=seconds)  # a rollback needs a checkpoint to return to
    return run, state, start, seconds


def write_config(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Save ``config.json``: every field, plus under ``"resolved"`` the solver and backward objects it configures."""
    solver, backward = estimator_from_config(config)
    path = os.path.join(workdir, "config.json")
    with open(path, "w") as handle:
        json.dump(dict(config.to_dict(), resolved=dict(solver=repr(solver), backward=repr(backward))), handle, indent=1)
    return path


def _window_means(window: list[dict[str, float]]) -> dict[str, float]:
    return {key: float(np.mean([m[key] for m in window])) for key in window[0]}


def _save_on_interrupt(run: _Run, state: TrainState, start: int, elapsed: float) -> None:
    """Checkpoint the last completed step, unless the state was donated to a step that did not finish."""
    if any(getattr(leaf, "is_deleted", lambda: False)() for leaf in jax.tree_util.tree_leaves(state)):
        return
    completed = int(jax.device_get(state.step))
    if completed > start and run.checkpointer.latest_step() != completed:
        run.checkpointer.save(completed, state, train_seconds=elapsed)


def _nonfinite_advice(config) -> str:
    if config.nonfinite_policy == "stop":
        return "Lower learning_rate, set grad_clip, or set nonfinite_policy='skip' or 'rollback'."
    return f"Lower learning_rate, set grad_clip, or raise max_nonfinite={config.max_nonfinite}."


def _recover(run: _Run, state: TrainState, report: dict, step: int, recoveries: int) -> tuple[TrainState, int]:
    """Apply the non-finite policy to a bad ``step`` (0-based): ``(state to continue from, next step)``.

    Raises :class:`~implicit_jax.train.health.NonFiniteError` under ``"stop"`` or when the
    recoveries exceed ``max_nonfinite``.
    """
    config = run.config
    what = health.describe_nonfinite(step + 1, report, run.grad_names, run.state_names)
    if config.nonfinite_policy == "stop" or recoveries > config.max_nonfinite:
        limit = "" if config.nonfinite_policy == "stop" else f" after {recoveries - 1} recoveries ({config.nonfinite_policy})"
        raise health.NonFiniteError(
            f"training stopped at {what}{limit}. The state after step {step} is kept (checkpointed "
            f"on exit); nothing non-finite was saved. {_nonfinite_advice(config)}"
        )
    if config.nonfinite_policy == "skip":
        warnings.warn(
            f"skipped the batch of {what} (skip {recoveries} of at most {config.max_nonfinite}).", RuntimeWarning, stacklevel=3
        )
        run.writer.write(dict(step=step + 1, event="skipped_nonfinite"))
        return state, step + 1
    restored = run.checkpointer.restore_latest(state)
    if restored is None:
        raise health.NonFiniteError(
            f"training stopped at {what}: no readable checkpoint to roll back to. {_nonfinite_advice(config)}"
        )
    lr_scale = state.lr_scale * config.rollback_lr_factor
    state = restored.state._replace(lr_scale=jax.device_put(lr_scale, state.lr_scale.sharding))
    run.writer.truncate(restored.step)
    run.writer.write(dict(step=restored.step, event="rollback", lr_scale=lr_scale))
    warnings.warn(
        f"{what}: rolled back to the checkpoint of step {restored.step} with the learning rate scaled by "
        f"{float(lr_scale):g} (rollback {recoveries} of at most {config.max_nonfinite}).",
        RuntimeWarning,
        stacklevel=3,
    )
    return state, restored.step


def _compile_steps(run: _Run, state: TrainState, start: int) -> float:
    """Compile the jitted steps the remaining run takes (ahead of time, into jit's cache); the seconds it took."""
    images, labels = run.batch(start)
    tick = time.perf_counter()
    if start < run.config.warmup_steps:
        run.warmup_step.lower(state, images, labels).compile()
    if run.config.warmup_steps < run.total_steps:
        run.train_step.lower(state, images, labels).compile()
    return time.perf_counter() - tick


def _train(run: _Run, state: TrainState, start: int, elapsed: float, progress: bool, on_step) -> tuple[TrainState, float]:
    """Steps ``start .. total_steps - 1`` with logging, evaluation and checkpoints: ``(state, train seconds)``.

    ``elapsed`` is the training time already spent (restored from the checkpoint).
    """
    config = run.config
    window: list[dict[str, Any]] = []
    recoveries, monitor = 0, health.ConvergenceMonitor()
    multi_process = jax.process_count() > 1
    bar = tqdm(
        total=run.total_steps, initial=start, disable=not (progress and sharding.is_primary()), dynamic_ncols=True, desc="train"
    )
    step = start
    try:
        if start < run.total_steps:
            run.writer.write(dict(step=start, event="compiled", compile_seconds=_compile_steps(run, state, start)))
        while step < run.total_steps:
            images, labels = run.batch(step)
            tick = time.perf_counter()
            warmup = step < config.warmup_steps
            state, metrics = (run.warmup_step if warmup else run.train_step)(state, images, labels)
            metrics = jax.device_get(metrics)
            report = {key: metrics.pop(key) for key in HEALTH_KEYS}
            elapsed += time.perf_counter() - tick
            if not report["finite"]:
                recoveries += 1
                state, step = _recover(run, state, report, step, recoveries)
                window = [] if config.nonfinite_policy == "rollback" else window
                bar.n = step
                bar.refresh()
                continue
            window.append(dict(metrics, step_seconds=time.perf_counter() - tick))
            step += 1
            if step % config.log_every == 0 or step == run.total_steps:
                record = dict(step=step, time=elapsed, warmup=warmup, **_window_means(window))
                run.writer.write(record)
                monitor.update(record)
                window = []
            bar.update(1)
            bar.set_postfix(
                loss=f"{metrics['loss']:.3f}",
                acc=f"{metrics['accuracy']:.3f}",
                fwd=f"{metrics['forward_steps']:.1f}",
                res=f"{metrics['forward_residual']:.1e}",
            )
            if config.eval_every and step % config.eval_every == 0 and step < run.total_steps:
                run.writer.write(dict(step=step, time=elapsed, **run.evaluate(state.params)))
            if config.checkpoint_every and step % config.checkpoint_every == 0:
                run.checkpointer.save(step, state, train_seconds=elapsed)
            if on_step is not None:
                on_step(step)
            if multi_process and multihost_utils.reached_preemption_sync_point(step):
                raise _Terminated()  # every process gets here at the same step: the checkpoint below is collective
    except BaseException as error:
        interrupted = isinstance(error, (KeyboardInterrupt, _Terminated))
        if interrupted and window:
            run.writer.write(
                dict(step=step, time=elapsed, warmup=step <= config.warmup_steps, partial=True, **_window_means(window))
            )
        # A multi-process checkpoint needs every process: save only where they all stop at this step.
        if not multi_process or isinstance(error, (_Terminated, health.NonFiniteError)):
            _save_on_interrupt(run, state, start, elapsed)
        else:
            warnings.warn(
                f"{type(error).__name__} in process {jax.process_index()} of a multi-process run: no checkpoint "
                "on the way out (it needs every process); --resume continues from the last periodic one. "
                "Send SIGTERM to stop with a checkpoint.",
                RuntimeWarning,
                stacklevel=2,
            )
        run.checkpointer.close()
        if interrupted:
            signum = signal.SIGTERM if isinstance(error, _Terminated) else signal.SIGINT
            raise RunInterrupted(
                f"interrupted ({signal.Signals(signum).name}) after step {step}; its state is "
                f"checkpointed in {run.checkpointer.directory}: continue with --resume.",
                step,
                int(signum),
            ) from None
        raise
    finally:
        bar.close()
    return state, elapsed


def fit(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    resume: bool = False,
    dataset: data_lib.Dataset | None = None,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> RunResult:
    """Train the configured model; write ``metrics.jsonl``, plots and checkpoints to ``workdir``.

    Args:
      config: a validated configuration (see :mod:`implicit_jax.train.config`).
      workdir: output folder. Without ``resume`` it must not hold a previous run's
        checkpoints (nothing is overwritten); with ``resume`` training continues from its
        latest readable checkpoint (or starts fresh if there is none). A second live run
        on the same workdir is refused (:class:`~implicit_jax.train.lock.RunLockedError`).
      dataset: use this dataset instead of loading ``config.dataset`` (checked first).
      progress: show a tqdm progress bar.
      on_step: called with the step number after every step (tests use it to interrupt).

    Raises:
      RunInterrupted: on Ctrl-C or ``SIGTERM``, after checkpointing the last completed step.
      NonFiniteError: when a non-finite step is not recoverable under ``nonfinite_policy``.
    """
    validate_config(config)
    check_workdir(workdir)
    lock = RunLock(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
    with lock:
        return _fit_locked(config, workdir, resume, dataset, progress, on_step)


def _fit_locked(config, workdir, resume, dataset, progress, on_step) -> RunResult:
    run, state, start, elapsed = _start_run(config, workdir, resume, dataset)

    def on_sigterm(signum, frame):
        raise _Terminated()

    # Several processes: JAX's preemption service catches SIGTERM and _train stops every process
    # at one agreed step; installing a Python handler here would take SIGTERM away from it.
    single = jax.process_count() == 1
    previous_handler = signal.signal(signal.SIGTERM, on_sigterm) if single else None
    try:
        state, elapsed = _train(run, state, start, elapsed, progress, on_step)
    finally:
        if single:
            signal.signal(signal.SIGTERM, previous_handler)
    if run.checkpointer.latest_step() != run.total_steps:
        run.checkpointer.save(run.total_steps, state, train_seconds=elapsed)
    run.checkpointer.close()
    final = run.evaluate(state.params)
    if start < run.total_steps:  # a resumed, already finished run has its final record
        run.writer.write(dict(step=run.total_steps, time=elapsed, **final))
    plots = plot_metrics(run.writer.path, workdir) if sharding.is_primary() else []
    return RunResult(state, final["test_accuracy"], final["test_loss"], os.path.abspath(workdir), run.writer.path, plots, elapsed)
