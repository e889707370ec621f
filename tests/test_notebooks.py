"""The notebooks run end to end, jitted, in their small setting (IMPLICIT_JAX_SMALL=1)."""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from implicit_jax.train.data import FASHION_MNIST_DIR, FASHION_MNIST_FILES

pytestmark = pytest.mark.slow  # subprocesses and whole runs: the full suite, not the quick tier

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.parametrize("name", ["quickstart", "fashion_mnist_deq"])
def test_notebook_runs(name, monkeypatch):
    if name == "fashion_mnist_deq" and not all(
        os.path.exists(os.path.join(FASHION_MNIST_DIR, f)) for f in FASHION_MNIST_FILES.values()
    ):
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist; .ci/run does)")
    monkeypatch.setenv("IMPLICIT_JAX_SMALL", "1")
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors


@pytest.mark.parametrize("name", ["quickstart", "fashion_mnist_deq"])
def test_committed_outputs_hold_no_machine_paths_or_warnings(name):
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    texts = [
        str(output.get("text", "")) + str(output.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    ]
    for noise in ["/tmp/", "/home/", "/work/", ".venv", "site-packages", "Warning", "Traceback"]:
        assert not any(noise in text for text in texts), f"{name}: committed outputs contain {noise!r}"
