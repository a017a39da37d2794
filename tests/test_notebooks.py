"""Executes every chapter notebook in a real Jupyter kernel, shortened, so none of them can rot.

Each notebook reads EPOCHS and TRAIN_LIMIT in its first code cell from the
environment variables set here; the kernel inherits them (and DIGITLAB_DATA).
Any cell that raises fails the test with the cell and its traceback.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from nbclient import NotebookClient

from digitlab import backends

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
# (notebook, training images): the convolutional net gets fewer, since CPUs run it slowly.
CASES = [
    ("shallow_net_in_keras.ipynb", 2000),
    ("intermediate_net_in_keras.ipynb", 2000),
    ("deep_net_in_keras.ipynb", 2000),
    ("lenet_in_keras.ipynb", 512),
]


def test_every_notebook_is_tested():
    assert sorted(path.name for path in NOTEBOOKS.glob("*.ipynb")) == sorted(name for name, _ in CASES)


def _outputs_text(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            parts.append(output.get("text", ""))
        elif "data" in output:
            parts.append(output["data"].get("text/plain", ""))
    return "".join(parts)


@pytest.mark.heavy
@pytest.mark.parametrize("name, train_limit", CASES)
def test_notebook_runs_start_to_finish(name, train_limit, mnist_path, monkeypatch, tmp_path):
    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        pytest.fail("No python3 Jupyter kernel: install ipykernel into this environment "
                    "(pip install ipykernel, or python -m ipykernel install --sys-prefix).")
    monkeypatch.setenv("DIGITLAB_NOTEBOOK_EPOCHS", "2")
    monkeypatch.setenv("DIGITLAB_NOTEBOOK_TRAIN_LIMIT", str(train_limit))
    monkeypatch.setenv("DIGITLAB_DATA", str(mnist_path))
    # A reader's kernel has no KERAS_BACKEND; the notebook must still get JAX through digitlab.
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    first_code = next(cell for cell in notebook.cells if cell.cell_type == "code")
    assert "EPOCHS" in first_code.source and "DIGITLAB_NOTEBOOK_EPOCHS" in first_code.source

    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # Raises CellExecutionError, naming the cell, if any cell fails.

    text = "\n".join(_outputs_text(cell) for cell in notebook.cells if cell.cell_type == "code")
    # LeNet's notebook asks digitlab for its fastest backend (TensorFlow); the dense nets get JAX.
    expected = backends.fastest_for("lenet") if name.startswith("lenet") else "jax"
    assert f"on the {expected} backend" in text
    assert "Epoch 2/2" in text and "Epoch 3/" not in text
    assert "Total params" in text
    assert "predicted" in text and "true label 7" in text
    probability_lines = [line for line in text.splitlines() if line[:2] in {f"{d}:" for d in range(10)}]
    assert len(probability_lines) == 10
    assert sum(float(line.split()[1]) for line in probability_lines) == pytest.approx(1.0, abs=2e-3)
    images = sum(1 for cell in notebook.cells for output in cell.get("outputs", [])
                 if "image/png" in output.get("data", {}))
    assert images >= 3  # Curves, confusion matrix and mistakes at least.
