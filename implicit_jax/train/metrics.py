"""Metrics: one JSON object per logged step in ``metrics.jsonl``, and plots of them.

Training records carry ``step``, ``time`` (seconds of training so far) and the train
metrics; evaluation records carry ``step``, ``time`` and ``test_accuracy``/``test_loss``.
On resume, records past the restored step are dropped first, so the file never holds a
step twice. A process killed mid-write can leave a torn last line: readers drop it with a
warning; any other line that is not JSON is an error naming the file and the line.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np


def _plain(value: Any) -> Any:
    if isinstance(value, (np.ndarray, np.generic)) or hasattr(value, "item"):
        value = np.asarray(value).item()
    if isinstance(value, float) and not np.isfinite(value):
        return None if np.isnan(value) else str(value)
    return value


class MetricsWriter:
    """Append-only JSONL writer (``path``), flushed per record; a no-op where ``enabled`` is False.

    In a multi-process run only the primary process writes (``enabled=is_primary()``), so
    each record appears once.
    """

    def __init__(self, path: str, *, resume_step: int | None = None, enabled: bool = True):
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        if resume_step is not None and os.path.exists(path):
            self.truncate(resume_step)
        elif resume_step is None and os.path.exists(path):
            os.remove(path)

    def truncate(self, step: int) -> None:
        """Drop the records past ``step`` (the checkpoint a run continues from), with a warning if any."""
        if not self.enabled or not os.path.exists(self.path):
            return
        records = read_metrics(self.path)
        kept = [r for r in records if r.get("step", 0) <= step]
        if len(kept) < len(records):
            warnings.warn(
                f"{self.path}: dropped {len(records) - len(kept)} record(s) past step {step}, the "
                "checkpoint this run continues from.",
                RuntimeWarning,
                stacklevel=2,
            )
        with open(self.path, "w") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in kept)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as handle:
            handle.write(json.dumps({k: _plain(v) for k, v in record.items()}) + "\n")


def read_metrics(path: str) -> list[dict[str, Any]]:
    """The records of ``path``; a torn last line is dropped with a warning, another bad line is a ValueError."""
    with open(path) as handle:
        lines = handle.read().split("\n")
    numbered = [(number, line) for number, line in enumerate(lines, 1) if line.strip()]
    records = []
    for position, (number, line) in enumerate(numbered):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            if position == len(numbered) - 1:
                warnings.warn(
                    f"{path}:{number}: dropped a torn last record ({error.msg}); the process that wrote it "
                    "probably died mid-write.",
                    RuntimeWarning,
                    stacklevel=2,
                )
                break
            raise ValueError(f"{path}:{number} is not a JSON record ({error.msg}): {line[:80]!r}") from None
    return records


def _series(records: Iterable[dict[str, Any]], key: str):
    rows = [(r["step"], r["time"], r[key]) for r in records if r.get(key) is not None]
    return tuple(np.array(column, float) for column in zip(*rows)) if rows else (np.array([]),) * 3


def plot_metrics(path: str, out_dir: str) -> list[str]:
    """Save ``loss.png`` and ``accuracy.png`` (each vs step and vs time) from ``metrics.jsonl``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(path)
    written = []
    for name, keys in (("loss", ("loss", "test_loss")), ("accuracy", ("accuracy", "test_accuracy"))):
        figure, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        for key in keys:
            steps, times, values = _series(records, key)
            style = "o-" if key.startswith("test") else "-"
            axes[0].plot(steps, values, style, label=key, markersize=3)
            axes[1].plot(times, values, style, label=key, markersize=3)
        axes[0].set_xlabel("step")
        axes[1].set_xlabel("training time (s)")
        for axis in axes:
            axis.set_ylabel(name)
            axis.grid(alpha=0.3)
            axis.legend()
        figure.tight_layout()
        target = os.path.join(out_dir, f"{name}.png")
        figure.savefig(target, dpi=100)
        plt.close(figure)
        written.append(target)
    return written
