"""The chapter notebooks: the book's own Keras lines build digitlab's nets, their saved outputs
come from the code they hold, and each runs top to bottom in a real Jupyter kernel.

- The fast tests execute only the cells tagged "model" (the imports, the book's
  `Sequential`/`add` lines and its `compile` line) and compare the network with
  `models.build_model`'s, layer by layer, without training it.
- They also check that each notebook carries the outputs of a full-length run made
  from its current code: `scripts/run_notebooks.py` stores the SHA-256 of the code
  cells in the notebook's metadata, and a changed cell no longer matches it.
- The heavy test runs each notebook shortened: its first code cell reads EPOCHS and
  TRAIN_IMAGES from the environment variables set here; the kernel inherits them (and
  DIGITLAB_DATA). Any cell that raises fails the test with the cell and its traceback.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from nbclient import NotebookClient

from digitlab import backends, config, models

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
# (notebook, its net, training images in the shortened run): the convolutional net gets fewer,
# since CPUs run it slowly.
CASES = [
    ("shallow_net_in_keras.ipynb", "shallow", 2000),
    ("intermediate_net_in_keras.ipynb", "intermediate", 2000),
    ("deep_net_in_keras.ipynb", "deep", 2000),
    ("lenet_in_keras.ipynb", "lenet", 512),
]
PARAMETERS = {"shallow": 50_890, "intermediate": 55_050, "deep": 59_978, "lenet": 1_199_882}
# A committed notebook stays small enough to read on a code host.
MAX_NOTEBOOK_BYTES = 1_500_000


def test_every_notebook_is_tested(load_script):
    assert sorted(path.name for path in NOTEBOOKS.glob("*.ipynb")) == sorted(name for name, _, _ in CASES)
    assert {name: file for name, (file, _) in load_script("run_notebooks").CHAPTERS.items()} == {
        net: file for file, net, _ in CASES
    }


def _layer_facts(model) -> list[dict]:
    """What defines each layer: its type, settings, output shape and parameter count (not its name)."""
    facts = []
    for layer in model.layers:
        settings = layer.get_config()
        facts.append(
            {
                "type": type(layer).__name__,
                "activation": settings.get("activation"),
                **{
                    key: settings.get(key)
                    for key in (
                        "units",
                        "filters",
                        "kernel_size",
                        "strides",
                        "padding",
                        "pool_size",
                        "rate",
                        "use_bias",
                        "momentum",
                        "epsilon",
                    )
                    if key in settings
                },
                "output_shape": tuple(layer.output.shape),
                "parameters": layer.count_params(),
            }
        )
    return facts


def _run_model_cells(notebook) -> dict:
    """Executes the cells tagged "model", in order, and returns their namespace."""
    cells = [cell for cell in notebook.cells if cell.cell_type == "code" and "model" in cell.metadata.get("tags", [])]
    assert len(cells) == 3, "expected three cells tagged 'model': imports, architecture, compile"
    # LeNet's output layer uses the book's n_classes, which its preprocessing cell defines.
    namespace = {"n_classes": 10}
    with contextlib.redirect_stdout(io.StringIO()):
        for cell in cells:
            exec(compile(cell.source, "<notebook cell>", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("name, net, train_limit", CASES)
def test_the_books_keras_lines_build_digitlabs_net(name, net, train_limit):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    model = _run_model_cells(notebook)["model"]
    settings = config.TrainConfig(model=net).resolved()
    expected = models.compile_model(models.build_model(settings), settings)
    assert _layer_facts(model) == _layer_facts(expected)
    assert model.count_params() == expected.count_params() == PARAMETERS[net]
    assert tuple(model.inputs[0].shape) == tuple(expected.inputs[0].shape)
    # Compiled as the book does: the same loss, optimizer and learning rate as digitlab's config.
    assert model.loss == settings.loss
    assert type(model.optimizer) is type(expected.optimizer)
    assert float(model.optimizer.learning_rate) == pytest.approx(settings.learning_rate)
    # The book's lines are in the notebook, as Keras 3 spells them.
    code = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    assert "model = Sequential()" in code and "model.add(keras.Input(shape=" in code
    assert "model.fit(X_train, y_train, batch_size=128, epochs=EPOCHS, verbose=2" in code
    assert "build_model" not in code and "compile_model" not in code


@pytest.mark.parametrize("name, net, train_limit", CASES)
def test_saved_outputs_are_a_full_run_of_the_current_code(name, net, train_limit, load_script):
    script = load_script("run_notebooks")
    path = NOTEBOOKS / name
    notebook = json.loads(path.read_text(encoding="utf-8"))
    assert script.is_current(notebook), (
        f"{name}'s code changed after its saved outputs were made: run "
        f"`python scripts/run_notebooks.py {net}` and commit the result."
    )
    record = notebook["metadata"][script.METADATA_KEY]
    assert record["backend"] == script.CHAPTERS[net][1]
    epochs = config.MODEL_DEFAULTS[net]["epochs"]
    code_cells = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert all(cell["execution_count"] for cell in code_cells), "some cells were not run"
    text = "\n".join(_outputs_text(cell) for cell in code_cells)
    assert f"on the {record['backend']} backend" in text
    assert f"Epoch {epochs}/{epochs}" in text and "- val_accuracy:" in text
    assert "━" not in text.split("Epoch 1/")[1], "the saved log has progress bars (use verbose=2)"
    assert "accuracy 0.9" in text or (net == "shallow" and "accuracy 0.8" in text)
    assert "predicted 7 - true label 7" in text
    images = sum(
        1 for cell in code_cells for output in cell.get("outputs", []) if "image/png" in output.get("data", {})
    )
    assert images >= 4  # Curves, confusion matrix, mistakes and the look inside at least.
    assert not any(output.get("output_type") == "error" for cell in code_cells for output in cell["outputs"])
    assert path.stat().st_size < MAX_NOTEBOOK_BYTES


def _outputs_text(cell) -> str:
    """A code cell's printed and displayed text (sources may be strings or lists of lines, as saved)."""

    def text(value) -> str:
        return "".join(value) if isinstance(value, list) else value

    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            parts.append(text(output.get("text", "")))
        elif "data" in output:
            parts.append(text(output["data"].get("text/plain", "")))
    return "".join(parts)


def test_a_changed_code_cell_makes_the_saved_outputs_stale(load_script):
    script = load_script("run_notebooks")
    notebook = json.loads((NOTEBOOKS / "shallow_net_in_keras.ipynb").read_text(encoding="utf-8"))
    code_cell = next(
        cell for cell in notebook["cells"] if cell["cell_type"] == "code" and "Dense(64" in "".join(cell["source"])
    )
    code_cell["source"] = "".join(code_cell["source"]).replace("Dense(64", "Dense(32")
    assert not script.is_current(notebook)
    # Markdown is not code: rewording the text keeps the outputs current.
    notebook = json.loads((NOTEBOOKS / "shallow_net_in_keras.ipynb").read_text(encoding="utf-8"))
    markdown = next(cell for cell in notebook["cells"] if cell["cell_type"] == "markdown")
    markdown["source"] = "# Reworded"
    assert script.is_current(notebook)


@pytest.mark.heavy
@pytest.mark.parametrize("name, net, train_limit", CASES)
def test_notebook_runs_start_to_finish(name, net, train_limit, mnist_path, monkeypatch, tmp_path):
    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        pytest.fail(
            "No python3 Jupyter kernel: install ipykernel into this environment "
            "(pip install ipykernel, or python -m ipykernel install --sys-prefix)."
        )
    monkeypatch.setenv("DIGITLAB_NOTEBOOK_EPOCHS", "2")
    monkeypatch.setenv("DIGITLAB_NOTEBOOK_TRAIN_LIMIT", str(train_limit))
    monkeypatch.setenv("DIGITLAB_DATA", str(mnist_path))
    # A reader's kernel has no KERAS_BACKEND; the notebook must still get JAX through digitlab.
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    first_code = next(cell for cell in notebook.cells if cell.cell_type == "code")
    assert "EPOCHS" in first_code.source and "DIGITLAB_NOTEBOOK_EPOCHS" in first_code.source

    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
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
    images = sum(
        1 for cell in notebook.cells for output in cell.get("outputs", []) if "image/png" in output.get("data", {})
    )
    assert images >= 4  # Curves, confusion matrix, mistakes and the look inside at least.
