"""Shared fixtures: the real MNIST file, small synthetic MNIST-shaped archives, quick configs,
a quick trained model and its server on loopback, headless Chromium, and small helpers.

The tests need the real MNIST. They find it through the DIGITLAB_DATA environment
variable (which .ci/run sets to ../shared/data/mnist.npz), or at that path beside
the project; if it is in neither place the tests fail rather than skip.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

# The sweep tests' shared fixture (reference_sweep) and helpers, in tests/sweep_helpers.py.
pytest_plugins = ["sweep_helpers"]

ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist.npz"

if not os.environ.get("DIGITLAB_DATA") and SHARED_MNIST.is_file():
    os.environ["DIGITLAB_DATA"] = str(SHARED_MNIST)
os.environ.setdefault("KERAS_BACKEND", "jax")

# Debian's chromium package (`make test` installs it); never a browser that Playwright downloads.
CHROMIUM = os.environ.get("DIGITLAB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def mnist_path() -> Path:
    """The real MNIST archive; a test that needs it fails (not skips) when it is missing."""
    path = os.environ.get("DIGITLAB_DATA")
    if not path or not Path(path).is_file():
        pytest.fail(f"The real MNIST is needed: set DIGITLAB_DATA to a mnist.npz (CI uses {SHARED_MNIST}).")
    return Path(path)


@pytest.fixture(scope="session")
def mnist_arrays(mnist_path):
    from digitlab import data

    return data.load_arrays(mnist_path)


@pytest.fixture(scope="session")
def mnist(mnist_path):
    """`(X_train, y_train), (X_valid, y_valid)` as the book loads them."""
    from digitlab import data

    return data.load_mnist(mnist_path)


@pytest.fixture
def small_npz(tmp_path, mnist_arrays) -> Path:
    """A real-MNIST subset (600 training and 100 test images) in Keras's npz layout."""
    path = tmp_path / "small_mnist.npz"
    np.savez(
        path,
        x_train=mnist_arrays["x_train"][:600],
        y_train=mnist_arrays["y_train"][:600],
        x_test=mnist_arrays["x_test"][:100],
        y_test=mnist_arrays["y_test"][:100],
    )
    return path


@pytest.fixture(scope="session")
def quick_model_path(mnist_arrays, tmp_path_factory) -> Path:
    """The book's shallow architecture (784-64 sigmoid-10 softmax) trained for 3 quick epochs
    (Adam and cross-entropy, so it learns in seconds) on 20,000 real images, saved as model.keras."""
    from digitlab import config, data, models

    settings = config.TrainConfig(
        model="shallow", optimizer="adam", learning_rate=0.003, loss="categorical_crossentropy", epochs=3, seed=0
    ).resolved()
    models.set_random_seed(0)
    model = models.create_model(settings)
    model.fit(
        data.to_inputs(mnist_arrays["x_train"][:20000]),
        data.to_targets(mnist_arrays["y_train"][:20000]),
        epochs=3,
        batch_size=128,
        verbose=0,
    )
    path = tmp_path_factory.mktemp("quick_run") / "model.keras"
    model.save(path)
    return path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, mnist_path) -> Path:
    """A complete run folder made by `digitlab train` itself: 2 epochs on 3,000 images.

    Tests that damage a run copy it first; this folder stays as it was trained.
    """
    from digitlab import cli

    runs_dir = tmp_path_factory.mktemp("trained_runs")
    assert (
        cli.main(["train", "--epochs", "2", "--train-limit", "3000", "--seed", "1", "--runs-dir", str(runs_dir)]) == 0
    )
    (path,) = runs_dir.iterdir()
    return path


@pytest.fixture(scope="session")
def quick_model(quick_model_path):
    """The quick shallow net, loaded back as a run's model.keras is."""
    import keras

    return keras.saving.load_model(quick_model_path, safe_mode=True)


@pytest.fixture(scope="session")
def quiet():
    """A print function that prints nothing, for `training.train(print_fn=quiet)`."""
    return lambda *args, **kwargs: None


@functools.cache
def _import_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def load_script():
    """Imports a file of scripts/ as a module: `load_script("load_test").start_server(...)`."""
    return _import_script


@pytest.fixture(scope="module")
def live_server(quick_model_path, load_script):
    """The quick shallow net served by a real uvicorn in a child process on 127.0.0.1; its URL."""
    with load_script("load_test").start_server(str(quick_model_path)) as url:
        yield url


@pytest.fixture(scope="module")
def chromium():
    """Headless Chromium (CHROMIUM) launched through Playwright; fails, never skips, when it is absent."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"Headless Chromium is needed at {CHROMIUM}: install Debian's chromium package "
            "(apt-get install chromium; make test does) or set DIGITLAB_CHROMIUM."
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def running_server(load_script):
    """`with running_server(command, ready_url) as child:` runs a real server process for a test
    (scripts/load_test.py's `run_server`: waits until ready_url answers 200, stops it afterwards)."""
    return load_script("load_test").run_server


@pytest.fixture
def free_port(load_script) -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    return load_script("load_test").free_port()


# The book's full LeNet run (chapter 10, 10 epochs on TensorFlow, about a quarter of an hour on 2 cores)
# is the suite's longest test. When it is selected, its process starts as soon as the session knows
# its tests and trains beside them; its test runs last and waits for it.
LENET_FULL_TEST = "test_lenet_full_ten_epochs_on_its_default_backend"
_lenet_runs: dict = {}


def start_lenet_full_run() -> dict:
    """Starts `digitlab train --model lenet --seed 0` as a user runs it (no KERAS_BACKEND) in a new folder."""
    from digitlab.backends import MARKER

    folder = Path(tempfile.mkdtemp(prefix="digitlab-lenet-"))
    environment = {key: value for key, value in os.environ.items() if key not in ("KERAS_BACKEND", MARKER)}
    log = (folder / "output.txt").open("w")
    command = [
        sys.executable,
        "-m",
        "digitlab",
        "train",
        "--model",
        "lenet",
        "--seed",
        "0",
        "--runs-dir",
        str(folder / "runs"),
    ]
    process = subprocess.Popen(
        command, env=environment, stdout=log, stderr=subprocess.STDOUT, text=True, preexec_fn=_die_with_parent
    )
    return {"process": process, "folder": folder, "log": log, "started": time.perf_counter()}


def _die_with_parent() -> None:
    """In the child, before it runs: Linux kills it when pytest ends, however pytest ends."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@pytest.hookimpl(trylast=True)  # After -m and -k have deselected what they deselect.
def pytest_collection_modifyitems(config, items):
    chosen = [item for item in items if item.name == LENET_FULL_TEST]
    if not chosen or config.option.collectonly:
        return
    items[:] = [item for item in items if item.name != LENET_FULL_TEST] + chosen
    if not os.environ.get("PYTEST_XDIST_WORKER") and len(items) > 1:
        _lenet_runs["full"] = start_lenet_full_run()


def pytest_sessionfinish(session, exitstatus):
    run = _lenet_runs.pop("full", None)
    if run is not None:
        run["process"].kill()
        run["process"].wait()
        run["log"].close()
        shutil.rmtree(run["folder"], ignore_errors=True)


@pytest.fixture
def lenet_full_run() -> dict:
    """The full LeNet run's process, folder and start time: the one started with the session, or a new one."""
    return _lenet_runs.get("full") or _lenet_runs.setdefault("full", start_lenet_full_run())
