"""Data parallelism with ``jax.sharding``: one mesh axis ``"data"`` over every device.

Parameters and optimizer state are replicated, batches are split along their leading
axis; ``jit`` inserts the gradient all-reduce. The same code runs on one CPU, one GPU,
several local devices (``XLA_FLAGS=--xla_force_host_platform_device_count=4`` simulates
four on a CPU) or several hosts. For a multi-host run, start the same command on every
host with ``IMPLICIT_JAX_DISTRIBUTED=1`` (and, off managed clusters, the
``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` variables):
``scripts/train.py`` then calls ``jax.distributed.initialize()`` before anything else, and
each host feeds its own slice of every global batch (:func:`shard_batch`).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def maybe_initialize_distributed() -> None:
    """Call ``jax.distributed.initialize()`` when ``IMPLICIT_JAX_DISTRIBUTED=1`` is set."""
    if os.environ.get("IMPLICIT_JAX_DISTRIBUTED") == "1":
        jax.distributed.initialize()


def data_mesh() -> Mesh:
    """A 1-D mesh over all devices (of all processes)."""
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, option: str = "batch_size") -> None:
    devices = mesh.devices.size
    if batch_size % devices:
        raise ValueError(f"{option}={batch_size} must be divisible by the {devices} devices of the mesh.")


def shard_batch(mesh: Mesh, *arrays: np.ndarray) -> tuple[jax.Array, ...]:
    """Place global numpy batches on the mesh, split along axis 0; each process supplies only its slice."""
    sharding = batch_sharded(mesh)
    count, index = jax.process_count(), jax.process_index()
    out = []
    for array in arrays:
        per_process = array.shape[0] // count
        local = array[index * per_process:(index + 1) * per_process]
        out.append(jax.make_array_from_process_local_data(sharding, local, array.shape))
    return tuple(out)


def replicate(mesh: Mesh, tree: Any) -> Any:
    """Put every leaf of ``tree`` on all devices."""
    return jax.device_put(tree, replicated(mesh))
