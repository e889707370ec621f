"""Data parallelism with ``jax.sharding``: one mesh axis ``"data"`` over every device.

Parameters and optimizer state are replicated, batches are split along their leading
axis; ``jit`` inserts the gradient all-reduce. The same code runs on one CPU, one GPU,
several local devices (``XLA_FLAGS=--xla_force_host_platform_device_count=4`` simulates
four on a CPU) or several hosts. For a multi-host run, start the same command on every
host with the process flags (``--coordinator_address=HOST:PORT --num_processes=N
--process_id=I``, or ``--distributed`` on a managed cluster, see :func:`initialize_distributed`):
the scripts call ``jax.distributed.initialize`` before anything else, each host feeds its own
slice of every global batch (:func:`shard_batch`), and only the primary process (index 0)
writes metrics, plots and progress bars (:func:`is_primary`).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def initialize_distributed(
    coordinator_address: str | None = None, num_processes: int | None = None, process_id: int | None = None, *, auto: bool = False
) -> bool:
    """Join a multi-process run; True if one was joined.

    Either all three of ``coordinator_address`` (``HOST:PORT`` of process 0), ``num_processes``
    and ``process_id`` (the arguments of ``jax.distributed.initialize``), or ``auto=True`` on a
    managed cluster (SLURM, Cloud TPU, ...), where JAX reads them from the environment. With
    none of them, a single-process run: nothing happens. ``IMPLICIT_JAX_DISTRIBUTED=1`` in the
    environment is the same as ``auto=True``.
    """
    given = {"coordinator_address": coordinator_address, "num_processes": num_processes, "process_id": process_id}
    missing = [name for name, value in given.items() if value is None]
    if len(missing) == 3:
        if auto or os.environ.get("IMPLICIT_JAX_DISTRIBUTED") == "1":
            jax.distributed.initialize()
            return True
        return False
    if missing:
        raise ValueError(
            f"a multi-process run needs coordinator_address, num_processes and process_id together; "
            f"missing {missing} (or pass none of them and use auto detection on a managed cluster)."
        )
    if auto:
        raise ValueError("pass either the three process options or auto detection, not both.")
    if not (
        isinstance(num_processes, int) and num_processes >= 1 and isinstance(process_id, int) and 0 <= process_id < num_processes
    ):
        raise ValueError(
            f"process_id must lie in [0, num_processes), got process_id={process_id} and num_processes={num_processes}."
        )
    if not isinstance(coordinator_address, str) or ":" not in coordinator_address:
        raise ValueError(f"coordinator_address must be HOST:PORT (process 0's address), got {coordinator_address!r}.")
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
    return True


def is_primary() -> bool:
    """True on the process that writes files and prints (process 0; the only one in a single-process run)."""
    return jax.process_index() == 0


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
        local = array[index * per_process : (index + 1) * per_process]
        out.append(jax.make_array_from_process_local_data(sharding, local, array.shape))
    return tuple(out)


def replicate(mesh: Mesh, tree: Any) -> Any:
    """Put every leaf of ``tree`` on all devices."""
    return jax.device_put(tree, replicated(mesh))
