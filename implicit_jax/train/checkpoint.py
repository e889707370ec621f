"""Checkpoints with orbax: the train state's leaves plus a JSON description of the run.

A checkpoint holds the leaves of the train state (parameters, optimizer state, step,
PRNG key) and metadata: the configuration fields that fix parameter shapes
(``MODEL_FIELDS`` of :mod:`implicit_jax.train.config`), every leaf's shape and dtype, and the
training seconds spent so far. :meth:`Checkpointer.restore` checks the description and the
shapes against the current run *before* reading any array and raises a ValueError that says
what differs, so an incompatible checkpoint is never half-loaded and nothing is overwritten.
:meth:`Checkpointer.restore_latest` skips, with a warning, a newest checkpoint that cannot be
read (a save cut short, files deleted) and restores the newest one that can.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import warnings
from typing import Any, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp


def _leaf_specs(tree: Any) -> list[list]:
    return [
        [list(np.shape(leaf)), str(np.asarray(leaf).dtype) if not hasattr(leaf, "dtype") else str(leaf.dtype)]
        for leaf in jax.tree_util.tree_leaves(tree)
    ]


@contextlib.contextmanager
def signals_deferred(signums=(signal.SIGINT, signal.SIGTERM)):
    """Hold Ctrl-C and SIGTERM until the block ends, then deliver them: a save is never cut in half.

    Only signals with a Python-level handler are held (in the main thread); a handler installed
    outside Python (JAX's preemption service in a multi-process run) keeps receiving its signal.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in signums}
    previous = {s: h for s, h in previous.items() if h is not None}
    received = []
    for s in previous:
        signal.signal(s, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in received:
            signal.raise_signal(s)


class IncompatibleCheckpointError(ValueError):
    """The checkpoint was written by a different model (other shapes or model fields)."""


class Restored(NamedTuple):
    """What :meth:`Checkpointer.restore_latest` gives back."""

    step: int
    state: Any
    train_seconds: float


class Checkpointer:
    """Save and restore a train-state pytree under ``directory`` (keeps the latest ``max_to_keep``)."""

    def __init__(self, directory: str, model_description: dict[str, Any], *, max_to_keep: int = 2):
        self.directory = os.path.abspath(directory)
        self.description = dict(model_description)
        # cleanup_tmp_directories: a save cut short by a kill leaves a temporary folder that would
        # block the next save of that step.
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, *, train_seconds: float = 0.0) -> None:
        """Write ``state`` as checkpoint ``step``, with the training seconds spent to reach it.

        ``jax.Array`` leaves go to orbax as they are: each process writes the shards it holds
        (replicas once), nothing is gathered to one host. Every process of a multi-process
        run must call this together. Ctrl-C and SIGTERM wait until the save is complete.
        """
        leaves = [leaf if isinstance(leaf, jax.Array) else np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(state)]
        meta = {
            "model": self.description,
            "leaves": _leaf_specs(leaves),
            "step": int(step),
            "train_seconds": float(train_seconds),
        }
        with signals_deferred():
            self.manager.save(
                step, args=ocp.args.Composite(state=ocp.args.StandardSave(leaves), meta=ocp.args.JsonSave(meta)), force=True
            )
            self.manager.wait_until_finished()

    def metadata(self, step: int) -> dict[str, Any]:
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def check_compatible(self, step: int, like: Any) -> dict[str, Any]:
        """The checkpoint's metadata, after checking it describes this model (IncompatibleCheckpointError if not)."""
        meta = self.metadata(step)
        differing = {k: (meta["model"].get(k), v) for k, v in self.description.items() if meta["model"].get(k) != v}
        if differing:
            detail = ", ".join(f"{k}: checkpoint {old!r} vs config {new!r}" for k, (old, new) in differing.items())
            raise IncompatibleCheckpointError(
                f"checkpoint {self.directory} step {step} was written by a different model ({detail}); "
                "use another --workdir or the matching config."
            )
        expected = _leaf_specs(jax.tree_util.tree_leaves(like))
        if meta["leaves"] != expected:
            raise IncompatibleCheckpointError(
                f"checkpoint {self.directory} step {step} holds {len(meta['leaves'])} arrays whose shapes "
                f"do not match this model's {len(expected)}; use another --workdir or the matching config."
            )
        return meta

    def restore(self, step: int, like: Any) -> Any:
        """The state saved at ``step``, with the pytree structure (and shardings) of ``like``."""
        self.check_compatible(step, like)
        return self._read_state(step, like)

    def _read_state(self, step: int, like: Any) -> Any:
        """Read the arrays straight into the shardings of ``like``'s ``jax.Array`` leaves (numpy for the others)."""
        leaves, treedef = jax.tree_util.tree_flatten(like)
        abstract = [
            jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
            if isinstance(leaf, jax.Array)
            else np.zeros(np.shape(leaf), np.asarray(leaf).dtype)
            for leaf in leaves
        ]
        restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]
        return jax.tree_util.tree_unflatten(treedef, list(restored))

    def restore_latest(self, like: Any) -> Restored | None:
        """The newest checkpoint that restores (None if there is none), skipping unreadable ones with a warning.

        A checkpoint of a different model is an error, not skipped: falling back past it
        would silently resume some older, unrelated run.
        """
        self.manager.reload()
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                meta = self.check_compatible(step, like)
                state = self._read_state(step, like)
            except IncompatibleCheckpointError:
                raise
            except Exception as error:
                warnings.warn(
                    f"checkpoint {self.directory}/{step} cannot be read ({type(error).__name__}: "
                    f"{str(error).splitlines()[0][:200] if str(error) else ''}); skipping it and trying an "
                    "older one.",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            return Restored(step, state, float(meta.get("train_seconds", 0.0)))
        return None

    def close(self) -> None:
        self.manager.close()
