"""The Keras backend per net: the user's KERAS_BACKEND wins, LeNet gets TensorFlow, TensorFlow stays quiet.

The choice itself is tested on the environment variables alone (this process's
Keras is already imported); real `digitlab train` processes show that the
choice reaches Keras, that the run records it, and that no TensorFlow start-up
line reaches stdout or stderr (heavy: they start processes). Those run with
TF_ENABLE_ONEDNN_OPTS=1, TensorFlow's default on CPUs with AVX-512, where it logs
"oneDNN custom operations are on" through absl before anything can silence it: so
the tests meet on every machine what a user meets on such a CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras  # Imported here, on the JAX backend that importing digitlab (conftest) chose.
import pytest

from digitlab import backends


@pytest.fixture
def environment(monkeypatch):
    """A shell with no KERAS_BACKEND and no digitlab default yet."""
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.delenv(backends.MARKER, raising=False)
    return monkeypatch


def test_each_net_gets_its_fastest_installed_backend(environment):
    assert backends.choose("shallow") == "jax" and backends.choose("deep") == "jax"
    assert backends.choose("lenet") == "tensorflow"  # TensorFlow is a default dependency.
    backends.set_default()
    assert os.environ["KERAS_BACKEND"] == "jax"
    assert backends.user_chosen() is None  # digitlab's own default is not a user's choice...
    assert backends.choose("lenet") == "tensorflow"  # ...so LeNet still gets TensorFlow.


def test_a_backend_the_user_set_always_wins(environment):
    environment.setenv("KERAS_BACKEND", "jax")
    backends.set_default()
    assert backends.user_chosen() == "jax" and backends.choose("lenet") == "jax"
    environment.setenv("KERAS_BACKEND", "torch")
    environment.setenv(backends.MARKER, "jax")  # Inherited from a parent's default, then changed.
    assert backends.choose("shallow") == "torch"


def test_without_tensorflow_lenet_falls_back_to_jax(environment):
    environment.setattr(backends, "installed", lambda backend: backend != "tensorflow")
    assert backends.choose("lenet") == "jax"


def test_once_keras_is_imported_the_mismatch_is_said_not_hidden(environment):
    # Keras is already imported in this process (on JAX): use_for cannot change it and says so.
    assert backends.use_for("lenet") == keras.backend.backend() == "jax"
    note = backends.mismatch_note("lenet", "jax")
    assert "tensorflow" in note and "before importing keras" in note
    assert backends.mismatch_note("shallow", "jax") is None


def _train(tmp_path, mnist_path, *flags) -> tuple[subprocess.CompletedProcess, dict]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("KERAS_BACKEND", backends.MARKER, "TF_CPP_MIN_LOG_LEVEL")
    }
    env["DIGITLAB_DATA"] = str(mnist_path)
    env["TF_ENABLE_ONEDNN_OPTS"] = "1"  # As on an AVX-512 CPU (module docstring).
    runs_dir = tmp_path / "runs"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "digitlab",
            "train",
            "--runs-dir",
            str(runs_dir),
            "--epochs",
            "1",
            "--train-limit",
            "256",
            *flags,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (run_dir,) = runs_dir.iterdir()
    return done, json.loads((run_dir / "metrics.json").read_text()) | {"path": str(run_dir)}


TENSORFLOW_LINES = ("oneDNN", "absl", "I0000", "cpu_feature_guard", "TF_ENABLE_ONEDNN_OPTS", "tensorflow/")


def _assert_quiet(done: subprocess.CompletedProcess) -> None:
    """Nothing on stderr, and none of TensorFlow's start-up lines among digitlab's own on stdout."""
    assert done.stderr == "", done.stderr  # No oneDNN notice, no XLA or CPU-feature line, no absl warning.
    for line in done.stdout.splitlines():
        assert not any(mark in line for mark in TENSORFLOW_LINES), line


@pytest.mark.heavy
def test_lenet_trains_on_tensorflow_by_default_and_tensorflow_says_nothing(tmp_path, mnist_path):
    done, metrics = _train(tmp_path, mnist_path, "--model", "lenet")
    assert metrics["backend"] == "tensorflow"
    assert "on the tensorflow backend" in done.stdout and done.stdout.rstrip().splitlines()[-1].startswith("Done:")
    _assert_quiet(done)


@pytest.mark.heavy
def test_the_shallow_net_stays_on_jax_and_never_imports_tensorflow(tmp_path, mnist_path):
    """Training, predicting and evaluating on JAX never import TensorFlow (Keras would, to save or
    load a model, when it is installed): quiet, and spared its time and memory."""
    done, metrics = _train(tmp_path, mnist_path)
    assert metrics["backend"] == "jax" and done.stdout.rstrip().splitlines()[-1].startswith("Done:")
    _assert_quiet(done)
    env = {key: value for key, value in os.environ.items() if key not in ("KERAS_BACKEND", "TF_CPP_MIN_LOG_LEVEL")}
    env.update(DIGITLAB_DATA=str(mnist_path), TF_ENABLE_ONEDNN_OPTS="1")
    # Loading the saved model with Keras on JAX and TensorFlow installed beside it, as predict and evaluate do;
    # the same process then says whether TensorFlow was imported.
    probe = (
        "import sys\n"
        "from digitlab.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "print('tensorflow imported:', 'tensorflow' in sys.modules)\n"
        "raise SystemExit(code)\n"
    )
    for command in (["predict", metrics["path"], "--index", "0"], ["evaluate", metrics["path"]]):
        finished = subprocess.run(
            [sys.executable, "-c", probe, *command], env=env, capture_output=True, text=True, timeout=600
        )
        assert finished.returncode == 0, finished.stderr[-2000:]
        _assert_quiet(finished)
        assert "tensorflow imported: False" in finished.stdout


def test_a_tensorflow_import_that_fails_shows_what_it_said(tmp_path):
    """The quieted import of TensorFlow hides nothing when it fails: what TensorFlow wrote is written out."""
    package = tmp_path / "tensorflow"
    package.mkdir()
    (package / "__init__.py").write_text(
        "import os\nos.write(2, b'broken tensorflow: libfoo.so not found\\n')\nraise ImportError('no libfoo')\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(tmp_path)
    quiet = "import digitlab\ntry:\n    import tensorflow\nexcept ImportError as error:\n    print('caught', error)\n"
    done = subprocess.run([sys.executable, "-c", quiet], env=env, capture_output=True, text=True, timeout=120)
    assert "caught no libfoo" in done.stdout
    assert "broken tensorflow: libfoo.so not found" in done.stderr
    # A working import with TF_CPP_MIN_LOG_LEVEL below 3 hides nothing either: the user asked to see it.
    (package / "__init__.py").write_text("import os\nos.write(2, b'tensorflow says hello\\n')\n")
    loud = subprocess.run(
        [sys.executable, "-c", "import digitlab, tensorflow"],
        env=dict(env, TF_CPP_MIN_LOG_LEVEL="0"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert loud.stderr == "tensorflow says hello\n"
    hushed = subprocess.run(
        [sys.executable, "-c", "import digitlab, tensorflow"], env=env, capture_output=True, text=True, timeout=120
    )
    assert hushed.returncode == 0 and hushed.stderr == ""


@pytest.mark.heavy
def test_a_users_keras_backend_wins_over_the_nets_choice(tmp_path, mnist_path, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    env = dict(os.environ, DIGITLAB_DATA=str(mnist_path))
    env.pop(backends.MARKER, None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "digitlab",
            "train",
            "--model",
            "lenet",
            "--epochs",
            "1",
            "--train-limit",
            "128",
            "--runs-dir",
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (run_dir,) = tmp_path.iterdir()
    assert json.loads((run_dir / "metrics.json").read_text())["backend"] == "jax"
