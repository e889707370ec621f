"""Writing experiment results: JSON and matplotlib plots (headless)."""

from __future__ import annotations

import json
import os


def write_json(path: str, payload) -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as handle:
        json.dump(payload, handle, indent=2)
    return path


def plot_curves(path: str, curves: dict, *, xlabel: str, ylabel: str, title: str, log_y: bool = False) -> str:
    """One line per entry of ``curves``: ``name -> (x, y)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (x, y) in curves.items():
        ax.plot(x, y, label=name, marker="." if len(x) < 60 else None)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if log_y:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
