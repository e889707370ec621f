"""Configuration schemas of the bi-level experiments run by ``scripts/bilevel.py``.

A bi-level config (``configs/bilevel_*.py``) names its ``experiment``; each experiment has
its own schema below, in the format of :data:`implicit_jax.train.config.SCHEMA`
(``field: (type, check, description)``). :func:`validate_bilevel_config` checks a config
against the schema its ``experiment`` names and raises one ValueError listing every
problem, before any data is loaded or anything compiled.

The estimators an experiment compares are a comma-separated list of names, each optionally
with its options as ``NAME:OPTION=VALUE:...`` (the keyword arguments of the class the name
stands for), e.g. ``"implicit:max_steps=100,shine:opa_every=5,neumann:k=20:step_size=1.0"``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ml_collections

from implicit_jax._registry import parse_spec
from implicit_jax.bilevel.argmin import resolve_argmin_backward
from implicit_jax.bilevel.unrolled import resolve_method
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


def configured_list(value: str, resolver: Callable[[str, dict], Any]) -> dict[str, Any]:
    """``"a,b:k=3"`` -> ``{"a": resolver("a", {}), "b:k=3": resolver("b", {"k": 3})}``; ValueError naming the bad entry."""
    configured = {}
    for spec in value.split(","):
        try:
            configured[spec] = resolver(*parse_spec(spec))
        except ValueError as error:
            raise ValueError(f"entry {spec!r}: {error}") from None
    return configured


def argmin_backwards(value: str) -> dict[str, Any]:
    """The configured argmin backwards of a ``backwards`` field, keyed by their entries."""
    return configured_list(value, resolve_argmin_backward)


def unrolled_methods(value: str) -> dict[str, Any]:
    """The configured unrolled-hypergradient methods of a ``methods`` field, keyed by their entries."""
    return configured_list(value, resolve_method)


#: fields whose value is a list of configured estimators, and how to build them.
CONFIGURED_LISTS: dict[str, Callable[[str], dict[str, Any]]] = {"backwards": argmin_backwards, "methods": unrolled_methods}


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
        "backwards": (str, None, "comma-separated argmin backwards to compare, each NAME[:OPTION=VALUE...]"),
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
        "methods": (str, None, "comma-separated unrolled methods to compare, each NAME[:OPTION=VALUE...]"),
        "memory_horizons": (str, _positive_int_list, "comma-separated horizons T of the memory table"),
        "memory_budget_mib": (float, _positive, "memory budget flagged in the memory table (MiB)"),
    },
    "hyper_cleaning": {
        "experiment": _EXPERIMENT,
        "num_train": (int, _positive, "training examples (labels partly corrupted)"),
        "num_val": (int, _positive, "clean validation examples"),
        "num_test": (int, _positive, "test examples"),
        "corruption": (float, _fraction, "fraction of training labels replaced at random, in [0, 1)"),
        "backwards": (str, None, "comma-separated argmin backwards to compare, each NAME[:OPTION=VALUE...]"),
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
    for field, build in CONFIGURED_LISTS.items():
        if field in SCHEMAS[experiment] and isinstance(config.get(field), str):
            try:
                build(config[field])
            except ValueError as error:
                problems.append(f"{field}: {error}")
    raise_on_problems(problems)
    return config
