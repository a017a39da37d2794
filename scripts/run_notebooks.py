"""Runs the chapter notebooks full length and saves them with their outputs, so they read without running.

    python scripts/run_notebooks.py                    # all four, the book's epochs
    python scripts/run_notebooks.py shallow deep       # some of them
    python scripts/run_notebooks.py --check            # only say which saved outputs are out of date

Each notebook runs top to bottom in a fresh Jupyter kernel (the `python3` kernel of this
environment), in a temporary folder, with the book's epochs and all 60,000 training images
(the quick test's DIGITLAB_NOTEBOOK_* variables are removed). LeNet runs on the TensorFlow
backend, whose convolutions are about 3x faster than XLA's on a CPU; the others on JAX.
`--backend` overrides both.

The notebook is then saved with its outputs and, in its metadata under "digitlab", the
SHA-256 of its code cells, the backend, the date, the wall time and the machine.
tests/test_notebooks.py recomputes that hash: a notebook whose code changed after its
outputs were made fails the test until this script runs it again.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
# The notebook of each of the book's nets, and the Keras backend its saved outputs come from.
CHAPTERS = {
    "shallow": ("shallow_net_in_keras.ipynb", "jax"),
    "intermediate": ("intermediate_net_in_keras.ipynb", "jax"),
    "deep": ("deep_net_in_keras.ipynb", "jax"),
    "lenet": ("lenet_in_keras.ipynb", "tensorflow"),
}
METADATA_KEY = "digitlab"
# The quick test's variables; a full-length run must not inherit them.
QUICK_VARIABLES = ("DIGITLAB_NOTEBOOK_EPOCHS", "DIGITLAB_NOTEBOOK_TRAIN_LIMIT")


def code_sha256(notebook: dict) -> str:
    """The SHA-256 of a notebook's code cells' sources, in order (markdown and outputs aside)."""
    sources = []
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            source = cell["source"]
            sources.append(source if isinstance(source, str) else "".join(source))
    return hashlib.sha256(json.dumps(sources).encode("utf-8")).hexdigest()


def is_current(notebook: dict) -> bool:
    """True when the notebook's saved outputs came from the code it holds now."""
    recorded = notebook.get("metadata", {}).get(METADATA_KEY, {}).get("code_sha256")
    return recorded == code_sha256(notebook)


def merge_streams(notebook) -> None:
    """Joins each cell's consecutive outputs to the same stream into one, as Jupyter displays them:
    the per-epoch log becomes one output instead of two per epoch."""
    for cell in notebook.cells:
        merged = []
        for output in cell.get("outputs", []):
            previous = merged[-1] if merged else None
            if (
                output.get("output_type") == "stream"
                and previous is not None
                and previous.get("output_type") == "stream"
                and previous.get("name") == output.get("name")
            ):
                previous["text"] += output["text"]
            else:
                merged.append(output)
        if cell.cell_type == "code":
            cell.outputs = merged


def run_notebook(path: Path, backend: str, timeout_s: int = 4 * 3600) -> dict:
    """Executes the notebook at `path` in place with the book's settings; returns what it recorded."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    for name in QUICK_VARIABLES:
        os.environ.pop(name, None)
    os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter stays out of the log.
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        client = NotebookClient(
            notebook,
            timeout=timeout_s,
            kernel_name="python3",
            record_timing=False,
            resources={"metadata": {"path": workdir}},
        )
        client.execute()
    wall_time_s = time.perf_counter() - started
    merge_streams(notebook)
    record = {
        "code_sha256": code_sha256(notebook),
        "backend": backend,
        "executed": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "wall_time_s": round(wall_time_s, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "command": f"python scripts/run_notebooks.py {path.stem.split('_')[0]}",
    }
    notebook.metadata[METADATA_KEY] = record
    nbformat.write(notebook, path)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "names", nargs="*", metavar="NET", help=f"which notebooks to run ({', '.join(CHAPTERS)}; default: all)"
    )
    parser.add_argument(
        "--backend",
        choices=("jax", "tensorflow", "torch"),
        default=None,
        help="Keras backend for every notebook (default: tensorflow for lenet, jax for the others)",
    )
    parser.add_argument("--check", action="store_true", help="only list notebooks whose outputs are out of date")
    args = parser.parse_args(argv)
    names = args.names or list(CHAPTERS)
    unknown = [name for name in names if name not in CHAPTERS]
    if unknown:
        parser.error(f"unknown net(s) {', '.join(unknown)}; choose from {', '.join(CHAPTERS)}")
    stale = []
    for name in names:
        file_name, backend = CHAPTERS[name]
        path = NOTEBOOKS / file_name
        if args.check:
            current = is_current(json.loads(path.read_text()))
            print(f"{file_name}: {'outputs current' if current else 'OUT OF DATE'}")
            stale += [] if current else [name]
            continue
        print(f"Running {file_name} on {args.backend or backend} ...", flush=True)
        record = run_notebook(path, args.backend or backend)
        print(f"  saved in {record['wall_time_s']:.0f} s", flush=True)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
