"""Checkpoints with orbax: the train state's leaves plus a JSON description of the run.

A checkpoint holds the leaves of the train state (parameters, optimizer state, step,
PRNG key) and metadata: the configuration fields that fix parameter shapes
(:data:`~implicit_jax.train.config.MODEL_FIELDS`) and every leaf's shape and dtype.
:meth:`Checkpointer.restore` checks both against the current run *before* reading any
array and raises a ValueError that says what differs, so an incompatible checkpoint is
never half-loaded and nothing is overwritten.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


def _leaf_specs(tree: Any) -> list[list]:
    return [[list(np.shape(leaf)), str(np.asarray(leaf).dtype) if not hasattr(leaf, "dtype") else str(leaf.dtype)]
            for leaf in jax.tree_util.tree_leaves(tree)]


class Checkpointer:
    """Save and restore a train-state pytree under ``directory`` (keeps the latest ``max_to_keep``)."""

    def __init__(self, directory: str, model_description: dict[str, Any], *, max_to_keep: int = 2):
        self.directory = os.path.abspath(directory)
        self.description = dict(model_description)
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "meta"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any) -> None:
        leaves = [np.asarray(jax.device_get(leaf)) for leaf in jax.tree_util.tree_leaves(state)]
        meta = {"model": self.description, "leaves": _leaf_specs(leaves), "step": int(step)}
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(leaves),
                                                        meta=ocp.args.JsonSave(meta)), force=True)
        self.manager.wait_until_finished()

    def check_compatible(self, step: int, like: Any) -> None:
        meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        differing = {k: (meta["model"].get(k), v) for k, v in self.description.items() if meta["model"].get(k) != v}
        if differing:
            detail = ", ".join(f"{k}: checkpoint {old!r} vs config {new!r}" for k, (old, new) in differing.items())
            raise ValueError(f"checkpoint {self.directory} step {step} was written by a different model ({detail}); "
                             "use another --workdir or the matching config.")
        expected = _leaf_specs(jax.tree_util.tree_leaves(like))
        if meta["leaves"] != expected:
            raise ValueError(f"checkpoint {self.directory} step {step} holds {len(meta['leaves'])} arrays whose shapes "
                             f"do not match this model's {len(expected)}; use another --workdir or the matching config.")

    def restore(self, step: int, like: Any) -> Any:
        """The state saved at ``step``, with the pytree structure (and shardings) of ``like``."""
        self.check_compatible(step, like)
        leaves, treedef = jax.tree_util.tree_flatten(like)
        abstract = [np.zeros(np.shape(leaf), leaf.dtype) for leaf in leaves]
        restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]
        placed = [jax.device_put(np.asarray(new), old.sharding) if hasattr(old, "sharding") else new
                  for new, old in zip(restored, leaves)]
        return jax.tree_util.tree_unflatten(treedef, placed)

    def close(self) -> None:
        self.manager.close()
