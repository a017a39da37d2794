"""Start-up: `--seed 0`'s history pinned, the per-process data and sparse-row caches, JAX's compilation cache."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from digitlab import config, data, training
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
