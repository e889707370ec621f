"""Configuration schemas of the bi-level experiments run by ``scripts/bilevel.py``.

A bi-level config (``configs/bilevel_*.py``) names its ``experiment``; each experiment has
its own schema below, in the format of :data:`implicit_jax.train.config.SCHEMA`
(``field: (type, check, description)``). :func:`validate_bilevel_config` checks a config
against the schema its ``experiment`` names and raises one ValueError listing every
problem, before any data is loaded or anything compiled.
"""

from __future__ import annotations

from typing import Any, Callable

import ml_collections

from implicit_jax.bilevel import ARGMIN_BACKWARDS
from implicit_jax.train.config import raise_on_problems, schema_problems

LOGREG_DATASETS = ("breast_cancer", "fashion_mnist_pair")
REGULARIZATIONS = ("scalar", "per_feature")


def _positive(v):
    return v > 0


def _fraction(v):
    return 0.0 <= v < 1.0


def _comma_list_of(valid: tuple[str, ...]) -> Callable[[str], bool]:
    """A check that accepts a non-empty comma-separated list of names from ``valid``."""

    def check(value: str) -> bool:
        items = value.split(",")
        return bool(value) and all(item in valid for item in items)

    return check


def _positive_int_list(value: str) -> bool:
    try:
        return bool(value) and all(int(item) > 0 for item in value.split(","))
    except ValueError:
        return False


_EXPERIMENT = (str, None, "which experiment the config runs")

SCHEMAS: dict[str, dict[str, tuple[type, Any, str]]] = {
    "logreg_ho": {
        "experiment": _EXPERIMENT,
        "dataset": (str, LOGREG_DATASETS, "dataset of the logistic regression"),
        "num_train": (int, _positive, "training examples (fashion_mnist_pair only)"),
        "num_val": (int, _positive, "validation examples (fashion_mnist_pair only)"),
        "regularizations": (str, _comma_list_of(REGULARIZATIONS), f"comma-separated subset of {list(REGULARIZATIONS)}"),
        "outer_steps": (int, _positive, "hypergradient steps"),
        "outer_lr": (float, _positive, "outer (Adam) learning rate"),
        "inner_tol": (float, _positive, "inner L-BFGS gradient-norm tolerance"),
        "cg_steps": (int, _positive, "CG iteration cap of the implicit backward"),
        "opa_every": (int, _positive, "inner steps between OPA extra secant pairs"),
        "neumann_k": (int, _positive, "Neumann series terms"),
        "neumann_step_size": (float, _positive, "Neumann step size (below 2 / largest Hessian eigenvalue)"),
        "grid_min": (float, None, "smallest log10 strength of the scikit-learn grid"),
        "grid_max": (float, None, "largest log10 strength of the scikit-learn grid"),
        "grid_size": (int, _positive, "points of the scikit-learn grid"),
    },
    "schedule_tuning": {
        "experiment": _EXPERIMENT,
        "num_steps": (int, _positive, "SGD steps T of the inner training run"),
        "num_values": (int, _positive, "values K per schedule (each shared by T/K steps)"),
        "outer_steps": (int, _positive, "hypergradient steps"),
        "outer_lr": (float, _positive, "outer (Adam) learning rate"),
        "fg2u_directions": (int, _positive, "random directions of (FG)2U per hypergradient"),
        "memory_horizons": (str, _positive_int_list, "comma-separated horizons T of the memory table"),
        "memory_budget_mib": (float, _positive, "memory budget flagged in the memory table (MiB)"),
    },
    "hyper_cleaning": {
        "experiment": _EXPERIMENT,
        "num_train": (int, _positive, "training examples (labels partly corrupted)"),
        "num_val": (int, _positive, "clean validation examples"),
        "num_test": (int, _positive, "test examples"),
        "corruption": (float, _fraction, "fraction of training labels replaced at random, in [0, 1)"),
        "backwards": (str, _comma_list_of(tuple(ARGMIN_BACKWARDS)), f"comma-separated subset of {list(ARGMIN_BACKWARDS)}"),
        "outer_steps": (int, _positive, "hypergradient steps"),
        "outer_lr": (float, _positive, "outer (Adam) learning rate"),
        "l2": (float, _positive, "L2 strength of the inner problem (keeps it strongly convex)"),
    },
}
EXPERIMENTS = tuple(SCHEMAS)


def validate_bilevel_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Check a bi-level config against its experiment's schema; raise one ValueError listing all problems."""
    experiment = config.get("experiment")
    if experiment not in SCHEMAS:
        raise ValueError(f"invalid configuration: experiment={experiment!r} is not one of {list(EXPERIMENTS)}")
    problems = schema_problems(config, SCHEMAS[experiment])
    if not problems and experiment == "logreg_ho" and config.grid_min >= config.grid_max:
        problems.append(f"grid_min={config.grid_min} must be below grid_max={config.grid_max}")
    raise_on_problems(problems)
    return config
