"""Training DEQs: data, configuration, the Optax loop, checkpoints, sharding, metrics.

Needs the ``train`` extra: ``pip install "implicit-jax[train]"``.
"""

try:
    import matplotlib  # noqa: F401
    import ml_collections  # noqa: F401
    import orbax.checkpoint  # noqa: F401
    import sklearn  # noqa: F401
    import tqdm  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"implicit_jax.train needs the 'train' extra ({error.name} is missing): pip install \"implicit-jax[train]\""
    ) from error

from implicit_jax.train.checkpoint import Checkpointer
from implicit_jax.train.config import SCHEMA, base_config, model_from_config, optimizer_from_config, validate_config
from implicit_jax.train.data import DATASETS, Dataset, batch_indices, check_dataset, load
from implicit_jax.train.loop import (
    RunInterrupted,
    RunResult,
    TrainState,
    evaluate,
    fit,
    init_state,
    make_eval_step,
    make_train_step,
)
from implicit_jax.train.metrics import MetricsWriter, plot_metrics, read_metrics
from implicit_jax.train.sharding import data_mesh, initialize_distributed, is_primary, replicate, shard_batch

__all__ = [
    "DATASETS",
    "SCHEMA",
    "Checkpointer",
    "Dataset",
    "MetricsWriter",
    "RunInterrupted",
    "RunResult",
    "TrainState",
    "base_config",
    "batch_indices",
    "check_dataset",
    "data_mesh",
    "evaluate",
    "fit",
    "init_state",
    "initialize_distributed",
    "is_primary",
    "load",
    "make_eval_step",
    "make_train_step",
    "model_from_config",
    "optimizer_from_config",
    "plot_metrics",
    "read_metrics",
    "replicate",
    "shard_batch",
    "validate_config",
]
