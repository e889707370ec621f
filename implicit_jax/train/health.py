"""Run health: non-finite values caught inside the jitted step, and DEQ solves that stop converging.

:func:`finite_report` runs inside the train step. It checks the loss, every gradient array
and every array of the updated state (parameters and optimizer state) for NaN/inf with one
reduction per array, a pass over the parameters that costs little next to a DEQ's forward
solve. The step then keeps the previous state where anything is non-finite
(:func:`select_state`), so a non-finite value never reaches the state, a checkpoint or the
next step. The host reads the flags with the step's other metrics (no extra device sync)
and applies the configured policy (``NONFINITE_POLICIES``):

* ``"stop"``: raise :class:`NonFiniteError` naming the step and what went non-finite; the
  state of the last good step is checkpointed on the way out.
* ``"skip"``: drop the batch (the step counter advances, the parameters do not), at most
  ``max_nonfinite`` times in a run.
* ``"rollback"``: restore the latest checkpoint and multiply the learning rate by
  ``rollback_lr_factor``, at most ``max_nonfinite`` times in a run.

:class:`ConvergenceMonitor` watches the logged fractions of converged forward and backward
solves and warns once when they stay low.
"""

from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

NONFINITE_POLICIES = ("stop", "skip", "rollback")


class NonFiniteError(RuntimeError):
    """A train step produced a non-finite loss, gradient or state and the policy allows no more recovery."""


def leaf_finite(tree: Any) -> jax.Array:
    """One bool per array leaf of ``tree``: every entry finite (integer leaves are always finite)."""
    flags = [
        jnp.all(jnp.isfinite(leaf)) if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact) else jnp.array(True)
        for leaf in jax.tree_util.tree_leaves(tree)
    ]
    return jnp.stack(flags) if flags else jnp.ones((0,), bool)


def finite_report(loss: jax.Array, grads: Any, new_state: Any) -> dict[str, jax.Array]:
    """Flags of the step: ``finite`` (all good), ``finite_loss``, ``finite_grads``/``finite_state`` per array."""
    finite_grads, finite_state = leaf_finite(grads), leaf_finite(new_state)
    finite_loss = jnp.all(jnp.isfinite(loss))
    finite = finite_loss & jnp.all(finite_grads) & jnp.all(finite_state)
    return dict(finite=finite, finite_loss=finite_loss, finite_grads=finite_grads, finite_state=finite_state)


def select_state(finite: jax.Array, new_state: Any, old_state: Any) -> Any:
    """``new_state`` where the step was finite, else ``old_state`` (leaf by leaf, inside jit)."""
    return jax.tree_util.tree_map(lambda new, old: jnp.where(finite, new, old), new_state, old_state)


def leaf_names(tree: Any) -> list[str]:
    """Readable paths of the array leaves of ``tree`` (``cell.linear.kernel``), in leaf order."""
    paths = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [".".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path) for path, _ in paths]


def _listed(flags: np.ndarray, names: list[str], what: str, limit: int = 3) -> str | None:
    bad = [name for name, ok in zip(names, flags) if not ok]
    if not bad:
        return None
    shown = ", ".join(bad[:limit]) + (", ..." if len(bad) > limit else "")
    return f"{what} in {len(bad)} of {len(flags)} arrays ({shown})"


def describe_nonfinite(step: int, report: dict[str, Any], grad_names: list[str], state_names: list[str]) -> str:
    """``"step 4: non-finite loss, gradient in 14 of 17 arrays (...)"``: what went wrong at ``step`` (1-based)."""
    parts = []
    if not bool(report["finite_loss"]):
        parts.append("loss")
    for text in (
        _listed(np.asarray(report["finite_grads"]), grad_names, "gradient"),
        _listed(np.asarray(report["finite_state"]), state_names, "updated state"),
    ):
        if text:
            parts.append(text)
    return f"step {step}: non-finite (NaN or inf) " + "; ".join(parts)


class ConvergenceMonitor:
    """Warn once when the converged fraction of forward or backward solves stays below ``threshold``.

    ``update`` takes each logged record; a warning is issued when ``patience`` consecutive
    records show ``forward_converged`` (or ``backward_converged``) below ``threshold``.
    """

    def __init__(self, threshold: float = 0.5, patience: int = 3):
        self.threshold, self.patience = threshold, patience
        self.low: dict[str, list[tuple[int, float]]] = {"forward_converged": [], "backward_converged": []}
        self.warned: set[str] = set()

    def update(self, record: dict[str, Any]) -> str | None:
        message = None
        for key, run in self.low.items():
            value = record.get(key)
            if value is None or not np.isfinite(value):
                continue
            if value < self.threshold:
                run.append((record["step"], value))
            else:
                run.clear()
            if len(run) >= self.patience and key not in self.warned:
                self.warned.add(key)
                solve = key.split("_")[0]
                steps = f"steps {run[-self.patience][0]}..{run[-1][0]}"
                mean = np.mean([v for _, v in run[-self.patience :]])
                message = (
                    f"the {solve} solves converged in only {100 * mean:.0f}% of cases over the last {self.patience} "
                    f"logged windows ({steps}): the {solve} gradient may be inaccurate. Raise max_steps, loosen tol, "
                    "or lower the cell's Lipschitz bound (spectral normalisation)."
                )
                warnings.warn(message, RuntimeWarning, stacklevel=2)
        return message
