"""Training configuration: the schema, its validation, and the objects built from it.

A configuration is an ``ml_collections.ConfigDict`` made by :func:`~implicit_jax.train.base_config` and
updated by a file in ``configs/`` (the Flax examples' convention). Every field is listed
in :data:`~implicit_jax.train.config.SCHEMA` with its type and allowed values; :func:`~implicit_jax.train.validate_config` checks a
configuration against it and raises one ValueError listing every problem, before any
data is loaded or anything compiled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ml_collections
import optax
from flax import nnx

from implicit_jax.estimators import BACKWARDS, AbstractBackward, resolve_backward
from implicit_jax.fixed_point import SENSIBLE_TOL
from implicit_jax.nn import DEQMLP, NORMALIZATIONS, ConvDEQ
from implicit_jax.solvers import SOLVERS, AbstractFixedPointSolver, resolve_solver
from implicit_jax.solvers.stopping import STOP_MODES
from implicit_jax.train.data import DATASETS
from implicit_jax.train.health import NONFINITE_POLICIES

MODELS = ("conv_deq", "deq_mlp")
STATE_DTYPES = ("float32", "bfloat16", "float16")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "warmup_cosine")


def _positive(v):
    return v > 0


def _non_negative(v):
    return v >= 0


#: each configuration field, as ``name -> (type, check or tuple of allowed values or None, description)``.
SCHEMA: dict[str, tuple[type, Any, str]] = {
    "dataset": (str, DATASETS, "dataset name"),
    "data_dir": (str, None, "folder of the dataset files ('' = default location)"),
    "train_subset": (int, _non_negative, "keep the first N training examples (0 = all)"),
    "test_subset": (int, _non_negative, "keep the first N test examples (0 = all)"),
    "model": (str, MODELS, "model family"),
    "width": (int, _positive, "channels (conv_deq) or hidden units (deq_mlp)"),
    "groups": (int, _positive, "GroupNorm groups (conv_deq)"),
    "normalization": (str, NORMALIZATIONS, "kernel normalisation of the cell"),
    "dtype": (str, STATE_DTYPES, "equilibrium state and cell compute dtype (deq_mlp; parameters stay float32)"),
    "solver": (str, tuple(sorted(SOLVERS)), "forward solver"),
    "solver_options": (ml_collections.ConfigDict, None, "options of the forward solver, e.g. memory=10 (see its class)"),
    "backward": (str, tuple(sorted(BACKWARDS)), "backward estimator"),
    "backward_options": (ml_collections.ConfigDict, None, "options of the backward estimator, e.g. k=3, damping=0.8"),
    "tol": (float, _positive, "forward tolerance (per sample)"),
    "max_steps": (int, _positive, "forward iteration cap"),
    "stop_mode": (str, STOP_MODES, "residual the tolerance applies to"),
    "atol": (float, _non_negative, "absolute tolerance of stop_mode='mixed'"),
    "jac_reg_weight": (float, _non_negative, "weight of the Jacobian penalty (0 = off)"),
    "warmup_steps": (int, _non_negative, "train steps run as an unrolled weight-tied network first"),
    "warmup_unrolled_steps": (int, _positive, "cell applications in the unrolled warm-up"),
    "optimizer": (str, OPTIMIZERS, "optax optimizer"),
    "learning_rate": (float, _positive, "peak learning rate"),
    "weight_decay": (float, _non_negative, "decoupled weight decay (adamw) or L2 (sgd)"),
    "schedule": (str, SCHEDULES, "learning-rate schedule"),
    "lr_warmup_steps": (int, _non_negative, "linear learning-rate warm-up (warmup_cosine)"),
    "grad_clip": (float, _non_negative, "global gradient-norm clip (0 = off)"),
    "batch_size": (int, _positive, "global batch size (split over devices)"),
    "num_epochs": (float, _positive, "training length in epochs"),
    "eval_every": (int, _non_negative, "steps between evaluations (0 = only at the end)"),
    "log_every": (int, _positive, "steps between metric records"),
    "checkpoint_every": (int, _non_negative, "steps between checkpoints (0 = only at the end)"),
    "eval_batch_size": (int, _positive, "evaluation batch size"),
    "seed": (int, _non_negative, "seed of initialisation, shuffling and probes"),
    "nonfinite_policy": (
        str,
        NONFINITE_POLICIES,
        "on a non-finite loss, gradient or state: stop, skip the batch, "
        "or roll back to the latest checkpoint with a lower learning rate",
    ),
    "max_nonfinite": (int, _non_negative, "skipped batches or rollbacks allowed in a run before it stops"),
    "rollback_lr_factor": (float, lambda v: 0.0 < v < 1.0, "learning-rate factor of each rollback, in (0, 1)"),
}

# Fields that fix the parameters' shapes: a checkpoint is only compatible if they match.
MODEL_FIELDS = ("dataset", "model", "width", "groups", "normalization", "optimizer")  # dtype: parameters stay float32


def base_config() -> ml_collections.ConfigDict:
    """Defaults for every field of :data:`~implicit_jax.train.config.SCHEMA` (a config file overrides some)."""
    return ml_collections.ConfigDict(
        dict(
            dataset="synthetic",
            data_dir="",
            train_subset=0,
            test_subset=0,
            model="deq_mlp",
            width=64,
            groups=8,
            normalization="spectral",
            dtype="float32",
            solver="anderson",
            solver_options={},
            backward="implicit",
            backward_options={},
            tol=1e-3,
            max_steps=30,
            stop_mode="rel",
            atol=0.0,
            jac_reg_weight=0.0,
            warmup_steps=0,
            warmup_unrolled_steps=5,
            optimizer="adam",
            learning_rate=1e-3,
            weight_decay=0.0,
            schedule="cosine",
            lr_warmup_steps=0,
            grad_clip=0.0,
            batch_size=64,
            num_epochs=1.0,
            eval_every=0,
            log_every=10,
            checkpoint_every=0,
            eval_batch_size=500,
            seed=0,
            nonfinite_policy="stop",
            max_nonfinite=3,
            rollback_lr_factor=0.5,
        )
    )


def schema_problems(config: ml_collections.ConfigDict, schema: dict[str, tuple[type, Any, str]]) -> list[str]:
    """Every way ``config`` departs from ``schema``: unknown or missing fields, wrong types, bad values.

    ``schema`` maps a field to ``(type, check, description)``; ``check`` is None, a tuple of
    the allowed values, or a predicate. An int is accepted where a float is expected.
    """
    problems = []
    unknown = sorted(set(config.keys()) - set(schema))
    if unknown:
        problems.append(f"unknown field(s) {unknown}; valid fields are {sorted(schema)}")
    for name, (kind, check, description) in schema.items():
        if name not in config:
            problems.append(f"missing field {name!r} ({description})")
            continue
        value = config[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool):
            problems.append(f"{name}={value!r} must be of type {kind.__name__} ({description})")
        elif isinstance(check, tuple) and value not in check:
            problems.append(f"{name}={value!r} is not one of {list(check)}")
        elif callable(check) and not check(value):
            problems.append(f"{name}={value!r} is out of range ({description})")
    return problems


def raise_on_problems(problems: list[str]) -> None:
    """Raise one ValueError listing every problem (nothing if there are none)."""
    if problems:
        raise ValueError("invalid configuration:\n  - " + "\n  - ".join(problems))


def validate_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Check every field's presence, type and value; raise one ValueError listing all problems."""
    problems = schema_problems(config, SCHEMA)
    if not problems and config.model == "conv_deq" and config.width % config.groups:
        problems.append(f"width={config.width} must be divisible by groups={config.groups}")
    if not problems and config.atol and config.stop_mode != "mixed":
        problems.append(f"atol={config.atol!r} is used by stop_mode='mixed' only, but stop_mode={config.stop_mode!r}")
    if not problems and config.dtype != "float32":
        if config.model != "deq_mlp":
            problems.append(f"dtype={config.dtype!r} is supported by model='deq_mlp' only (got model={config.model!r})")
        reachable = config.stop_mode == "abs" or (config.stop_mode == "mixed" and config.atol > 0)
        if not reachable and config.tol < SENSIBLE_TOL[config.dtype]:
            problems.append(
                f"tol={config.tol:g} is below what a {config.dtype} state can resolve; use tol >= "
                f"{SENSIBLE_TOL[config.dtype]:g} with dtype={config.dtype!r}"
            )
    if not problems:
        try:
            solver, backward = estimator_from_config(config)
        except ValueError as error:
            problems.append(str(error))
        else:
            try:
                backward.check_solver(solver)
            except ValueError as error:
                problems.append(f"backward={config.backward!r} with solver={config.solver!r}: {error}")
    raise_on_problems(problems)
    return config


def estimator_from_config(config: ml_collections.ConfigDict) -> tuple[AbstractFixedPointSolver, AbstractBackward]:
    """The forward solver and backward estimator a configuration names, configured with its ``*_options``.

    ``solver_options`` and ``backward_options`` are the keyword arguments of the chosen
    classes (:class:`~implicit_jax.Anderson`, :class:`~implicit_jax.PhantomUnroll`, ...):
    ``--config.backward_options.k=3`` on the command line. An option the chosen class does
    not take, or a value of the wrong type, raises a ValueError listing its options.
    """
    solver = resolve_solver(config.solver, "solver", config.solver_options.to_dict())
    backward = resolve_backward(config.backward, config.backward_options.to_dict())
    return solver, backward


def model_from_config(
    config: ml_collections.ConfigDict, image_shape: tuple[int, ...], num_classes: int, rngs: nnx.Rngs
) -> nnx.Module:
    """The DEQ model the configuration names, for inputs of ``image_shape`` (h, w, c)."""
    solver, backward = estimator_from_config(config)
    deq_options = dict(
        solver=solver, backward=backward, tol=config.tol, max_steps=config.max_steps, stop_mode=config.stop_mode, atol=config.atol
    )
    if config.model == "conv_deq":
        height, width, channels = image_shape
        if height != width:
            raise ValueError(f"conv_deq expects square images, got {image_shape}.")
        return ConvDEQ(
            channels,
            num_classes,
            image_size=height,
            channels=config.width,
            groups=config.groups,
            normalization=config.normalization,
            rngs=rngs,
            **deq_options,
        )
    features = 1
    for size in image_shape:
        features *= size
    return DEQMLP(
        features,
        num_classes,
        hidden=config.width,
        normalization=config.normalization,
        dtype=config.dtype,
        rngs=rngs,
        **deq_options,
    )


def schedule_from_config(config: ml_collections.ConfigDict, total_steps: int) -> Callable[[Any], Any]:
    if config.schedule == "constant":
        return optax.constant_schedule(config.learning_rate)
    if config.schedule == "cosine":
        return optax.cosine_decay_schedule(config.learning_rate, max(total_steps, 1))
    return optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, config.lr_warmup_steps, max(total_steps, config.lr_warmup_steps + 1)
    )


def optimizer_from_config(config: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
    """Optax optimizer with the configured schedule, weight decay and clipping."""
    schedule = schedule_from_config(config, total_steps)
    if config.optimizer == "adam":
        optimizer = optax.adam(schedule)
    elif config.optimizer == "adamw":
        optimizer = optax.adamw(schedule, weight_decay=config.weight_decay)
    else:
        optimizer = optax.chain(optax.add_decayed_weights(config.weight_decay), optax.sgd(schedule, momentum=0.9))
    if config.grad_clip > 0:
        optimizer = optax.chain(optax.clip_by_global_norm(config.grad_clip), optimizer)
    return optimizer
