"""Start-up: `--seed 0`'s history pinned, the per-process data and sparse-row caches, JAX's compilation cache,
the command's data loaded beside Keras's import, and the history and status files written beside the epochs."""

from __future__ import annotations

import gc
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from digitlab import atomic, config, data, epoch_files, runs, training
from digitlab.engine import sparse

# `digitlab train --seed 0 --train-limit 2000 --epochs 3` (the book's shallow net) as main trained it before
# the start-up work (commit 7d030ba): the history every later start-up change must keep, bit for bit.
PINNED_SEED_0 = {
    "fast-numpy": {
        "loss": [0.10114427307230589, 0.10053969303517024, 0.10000297218858124],
        "accuracy": [0.11, 0.11, 0.11],
        "val_loss": [0.10117228549522755, 0.10060519719800723, 0.10009772312921311],
        "val_accuracy": [0.1135, 0.1135, 0.1135],
    },
    "fit": {
        "loss": [0.10114426165819168, 0.1005396917462349, 0.10000298172235489],
        "accuracy": [0.10999999940395355, 0.10999999940395355, 0.10999999940395355],
        "val_loss": [0.1011722981929779, 0.10060519725084305, 0.10009773075580597],
        "val_accuracy": [0.11349999904632568, 0.11349999904632568, 0.11349999904632568],
    },
}


@pytest.mark.parametrize("engine", ["auto", "fit"])
def test_seed_0_history_is_todays_also_from_the_caches(tmp_path, mnist_path, engine, quiet):
    # Twice in one process: the second run takes the prepared arrays and sparse rows from the caches.
    settings = config.TrainConfig(seed=0, epochs=3, train_limit=2000, engine=engine)
    first = training.train(settings, tmp_path, data_path=mnist_path, print_fn=quiet, verbose=0)
    second = training.train(settings, tmp_path, data_path=mnist_path, print_fn=quiet, verbose=0)
    expected = PINNED_SEED_0["fit" if engine == "fit" else "fast-numpy"]
    assert first.metrics()["engine"] in PINNED_SEED_0
    assert first.history() == expected
    assert second.history() == expected


def test_prepared_data_is_kept_for_the_same_data_and_limit(mnist_path):
    loaded = data.load(mnist_path)
    first = data.prepared(loaded, "test", 3000)
    (x, y), (x_valid, y_valid), test = first
    assert data.prepared(loaded, "test", 3000) is first
    for array in (x, y, x_valid, y_valid):
        assert not array.flags.writeable  # Shared by runs: nobody may change it.
    expected = data.prepare(loaded.arrays, "test", 3000)
    np.testing.assert_array_equal(x, expected[0][0])
    np.testing.assert_array_equal(y_valid, expected[1][1])
    assert test is None
    # The inputs alone (the start builds the engine's rows from them while Keras imports): the same arrays.
    assert all(a is b for a, b in zip(data.prepared_inputs(loaded, "test", 3000), (x, x_valid), strict=True))

    other_limit = data.prepared(loaded, "test", 2000)
    assert other_limit[0][0] is not x and len(other_limit[0][0]) == 2000
    assert data.prepared(loaded, "holdout", 3000)[1][0] is not x_valid

    # The same shapes with one pixel changed: other data (its SHA-256s differ), so prepared afresh.
    arrays = dict(loaded.arrays, x_train=loaded.arrays["x_train"].copy())
    arrays["x_train"][0, 14, 14] ^= 0xFF
    changed = data.Loaded(arrays, None, "test")
    (x_changed, _), _, _ = data.prepared(changed, "test", 3000)
    assert x_changed[0, 14 * 28 + 14] != data.prepared(loaded, "test", 3000)[0][0][0, 14 * 28 + 14]


def test_sparse_rows_are_built_once_for_a_read_only_array():
    rng = np.random.default_rng(0)
    x = np.where(rng.random((300, 784)) < 0.2, rng.random((300, 784)), 0).astype(np.float32)
    x.flags.writeable = False
    rows = sparse.cached_rows(x)
    assert sparse.cached_rows(x) is rows
    fresh = sparse.SparseRows(x)
    for name in ("starts", "cols", "vals"):
        np.testing.assert_array_equal(getattr(rows, name), getattr(fresh, name))
    assert sparse.cached_density(x) == sparse.density(x)

    # Another array with the same values, or one that can still change, gets rows of its own.
    same_values = x.copy()
    assert sparse.cached_rows(same_values) is not rows
    same_values.flags.writeable = False
    assert sparse.cached_rows(same_values) is not rows
    writable = x.copy()
    first = sparse.cached_rows(writable)
    writable[0, :] = 1.0
    assert sparse.cached_rows(writable) is not first
    assert sparse.cached_rows(writable).starts[1] == 784

    # The entry goes with its array (other tests' arrays that only a collection frees go first).
    gc.collect()
    entries = len(sparse._CACHED)
    del x, same_values
    gc.collect()
    assert len(sparse._CACHED) == entries - 2


def test_rows_from_the_images_are_the_inputs_rows_without_the_inputs(mnist_path):
    """`SparseRows.from_images` gives the rows of `data.to_inputs(images)`, bit for bit (every value 0-255, and
    MNIST's images); `prepared_rows` keeps them for the same data and split, as `data.prepared` its arrays."""
    every_value = np.resize(np.arange(256, dtype=np.uint8), 2 * 784).reshape(2, 28, 28)
    loaded = data.load(mnist_path)
    for images in (every_value, loaded.arrays["x_train"][:3000]):
        from_images, from_inputs = sparse.SparseRows.from_images(images), sparse.SparseRows(data.to_inputs(images))
        for name in ("starts", "cols", "vals"):
            assert getattr(from_images, name).tobytes() == getattr(from_inputs, name).tobytes(), name
        assert from_images.most_per_row == from_inputs.most_per_row and len(from_images) == len(images)
    with pytest.raises(ValueError, match="uint8"):
        sparse.SparseRows.from_images(data.to_inputs(every_value))

    rows, valid_rows = sparse.prepared_rows(loaded, "test", 3000)
    assert sparse.prepared_rows(loaded, "test", 3000)[0] is rows
    assert rows.shape == (3000, 784) and valid_rows.shape == (10000, 784)
    assert rows.density() == sparse.density(data.prepared_inputs(loaded, "test", 3000)[0])
    assert sparse.prepared_rows(loaded, "holdout", 3000)[1].shape == (10000, 784)
    assert sparse.prepared_rows(loaded, "test", 2000)[0].shape == (2000, 784)
    (y, y_valid), test = data.prepared_targets(loaded, "holdout", 3000)
    assert not y.flags.writeable and y.shape == (3000, 10) and test is not None and len(test[0]) == 10000
    assert data.prepared(loaded, "holdout", 3000)[0][1] is y  # `prepared` takes the same targets.


def _jax_cache_settings(environment: dict) -> str:
    code = "import digitlab, jax; print(jax.config.jax_compilation_cache_dir)"
    return subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_importing_digitlab_turns_on_jaxs_compilation_cache(tmp_path):
    base = {key: value for key, value in os.environ.items() if not key.startswith("JAX_")}
    folder = Path(_jax_cache_settings(dict(base, XDG_CACHE_HOME=str(tmp_path))))
    assert folder.parent == tmp_path / "digitlab" / "jax" and folder.is_dir()  # One folder per kind of processor.
    assert _jax_cache_settings(dict(base, XDG_CACHE_HOME=str(tmp_path))) == str(folder)
    own = tmp_path / "mine"
    assert _jax_cache_settings(dict(base, JAX_COMPILATION_CACHE_DIR=str(own))) == str(own)
    off = dict(base, XDG_CACHE_HOME=str(tmp_path / "off"), JAX_ENABLE_COMPILATION_CACHE="false")
    assert _jax_cache_settings(off) == "None"
    assert not (tmp_path / "off").exists()


def test_python_m_digitlab_ends_with_the_commands_status_and_all_its_output(tmp_path):
    # It ends with os._exit after its work: what it printed to a pipe must still arrive, with its status.
    bad = subprocess.run(
        [sys.executable, "-m", "digitlab", "train", "--epochs", "0", "--runs-dir", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "epochs" in bad.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "digitlab", "runs", "--runs-dir", str(tmp_path)], capture_output=True, text=True
    )
    assert listed.returncode == 0 and listed.stdout.strip()


def test_python_m_digitlab_train_keeps_seed_0s_history_and_imports_no_pandas(tmp_path, mnist_path):
    # The command's own start: the data loads in a thread while Keras is imported without pandas and Matplotlib.
    # The fast engine trains from the images' rows: the float32 inputs are never made (data._INPUTS stays empty).
    code = (
        "import sys; from digitlab.cli import main; from digitlab import data; code = main(); "
        "print('pandas' in sys.modules, 'matplotlib.pyplot' in sys.modules, bool(data._INPUTS)); sys.exit(code)"
    )
    arguments = ["--seed", "0", "--train-limit", "2000", "--epochs", "3", "--runs-dir", str(tmp_path), "--data"]
    done = subprocess.run(
        [sys.executable, "-c", code, "train", *arguments, str(mnist_path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False False False"  # Matplotlib itself is imported for the curves.
    (run_folder,) = tmp_path.iterdir()
    run = runs.Run(run_folder)
    assert run.status()["status"] == "complete" and run.history() == PINNED_SEED_0["fast-numpy"]
    assert run.file(runs.CURVES_FILE).stat().st_size > 0


def test_loading_beside_keras_leaves_the_prepared_data_and_rows_in_the_caches(mnist_path):
    code = f"""
import sys
from digitlab import config, data, startup
settings = config.TrainConfig(seed=0, train_limit=3000)
import gc
loading = startup.keras_beside_data(settings, {str(mnist_path)!r})
assert not gc.isenabled()  # Off while Keras is imported...
loaded = loading.loaded()
assert gc.isenabled() and gc.get_freeze_count() > 100_000  # ...and what the start made is frozen.
assert "keras" in sys.modules and all(name not in sys.modules for name in startup.UNUSED_BY_TRAINING)
assert sys.meta_path[0].__class__.__name__ != "_Hidden"
from digitlab.engine import sparse
# The thread built the images' rows and the targets, not the float32 inputs (the fast engine trains from rows).
assert len(sparse._PREPARED_ROWS) == 1 and len(data._TARGETS) == 1 and not data._INPUTS
rows, valid_rows = sparse.prepared_rows(loaded, "test", 3000)
assert len(sparse._PREPARED_ROWS) == 1 and rows.shape == (3000, 784) and valid_rows.shape == (10000, 784)
(x, y), (x_valid, y_valid), _ = data.prepared(loaded, "test", 3000)
expected = data.prepare(loaded.arrays, "test", 3000)
assert (x == expected[0][0]).all() and (y_valid == expected[1][1]).all()
assert y is data.prepared_targets(loaded, "test", 3000)[0][0]
import pandas  # Still there for whoever imports it.
try:
    startup.Loading(settings, "/no/such/mnist.npz").loaded()
except data.DataError as error:
    print("DataError:", error)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("DataError: No MNIST data at /no/such/mnist.npz")


def test_the_inputs_and_their_sparse_rows_need_no_keras(mnist_path):
    """The start's thread builds the engine's rows before the one-hot targets, which wait for Keras's import:
    the rows (from the images or from the inputs) import no Keras (nor JAX) of their own."""
    code = f"""
import sys
from digitlab import data
from digitlab.engine import sparse
loaded = data.load({str(mnist_path)!r})
rows, _ = sparse.prepared_rows(loaded, "test", 3000)
x, x_valid = data.prepared_inputs(loaded, "test", 3000)
assert sparse.cached_rows(x) is sparse.cached_rows(x) and len(x) == len(rows) == 3000 and not x.flags.writeable
assert "keras" not in sys.modules and "jax" not in sys.modules, sorted(sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("seeds", [1, 3])
def test_history_text_is_what_write_history_writes_as_it_grows(seeds):
    text = epoch_files.HistoryText()
    rng = np.random.default_rng(seeds)
    histories = [{key: [] for key in runs.HISTORY_KEYS} for _ in range(seeds)]
    for epoch in range(5):
        history_json, history_csv = text.texts(histories)
        assert history_json == json.dumps({"seeds": histories}, indent=2) + "\n"
        assert history_csv == runs.history_csv(histories)
        for history in histories:
            for key in history:
                history[key].append(float(rng.random()) if epoch != 2 else math.nan)
    shorter = [{key: values[:2] for key, values in history.items()} for history in histories]  # A resume's.
    assert text.texts(shorter) == (json.dumps({"seeds": shorter}, indent=2) + "\n", runs.history_csv(shorter))


def test_epoch_files_write_the_newest_epochs_and_say_when_they_cannot(tmp_path):
    run = runs.Run(tmp_path / "run")
    run.path.mkdir()
    files = epoch_files.EpochFiles(run, interval=10.0)  # A long pause: each flush must cut it short.
    histories = [{key: [] for key in runs.HISTORY_KEYS}]
    for epoch in range(1, 4):
        for key in runs.HISTORY_KEYS:
            histories[0][key].append(epoch / 10)
        files.update(histories, epoch=epoch, checkpoint_epoch=epoch - 1)
    files.flush()
    assert run.histories() == histories and run.status()["epoch"] == 3 and run.status()["checkpoint_epoch"] == 2
    assert run.file(runs.HISTORY_CSV).read_text() == runs.history_csv(histories)
    assert not list(run.path.glob(".*"))  # No temporary file left.

    shutil.rmtree(run.path)  # The folder gone: the next write fails, and the training thread hears of it.
    files.update(histories, epoch=4, checkpoint_epoch=3)
    with pytest.raises(atomic.WriteError, match="Could not write"):
        files.flush()
    with pytest.raises(atomic.WriteError):
        files.update(histories, epoch=5, checkpoint_epoch=3)
    files.close(raise_error=False)
