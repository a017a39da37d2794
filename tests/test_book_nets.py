"""The book's later nets learn what the book says: val accuracy within one point of its figure.

Each test trains a net with the book's own settings (the model's defaults, the
engine a user gets with `--engine auto`) on all 60,000 training images and
checks the final validation accuracy against the book: intermediate 0.976
(chapter 8), deep ~0.977 (chapter 9, 0.975-0.979), lenet 0.992 (chapter 10).

LeNet's convolutions are slow on a CPU with Keras's JAX backend (two to ten
minutes an epoch on a 2-core machine, against about a minute with TensorFlow's
oneDNN kernels), so `digitlab train --model lenet` chooses TensorFlow by default
(`digitlab.backends`). The book's full 10-epoch LeNet run is checked once, as a
user runs it (a separate process with no KERAS_BACKEND, since a process has one
Keras backend); conftest starts that process when the session starts, so that its
quarter of an hour passes beside the other tests, and this test, moved last,
waits for it. On the JAX backend LeNet trains on a few hundred images, enough
to show that it runs and learns there too.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from digitlab import config, training

TOLERANCE = 0.01  # One percentage point.
# LeNet on the JAX backend: a few hundred images, a few epochs; a net that learns passes, chance is 0.1.
LENET_QUICK = {"images": 500, "epochs": 3, "val_accuracy_at_least": 0.6}  # Measured: 0.77.


@pytest.mark.slow
@pytest.mark.parametrize("model", ["intermediate", "deep"])
def test_book_net_reaches_the_books_val_accuracy(model, tmp_path, mnist_path, quiet):
    settings = config.TrainConfig(model=model, seed=0)
    started = time.perf_counter()
    run = training.train(settings, runs_dir=tmp_path, print_fn=quiet, verbose=0)
    seconds = time.perf_counter() - started
    metrics = run.metrics()
    book = settings.resolved().book_val_accuracy
    final = metrics["final_val_accuracy"]
    print(
        f"{model}: {metrics['epochs']} epochs, {metrics['engine']} engine, {seconds:.0f} s, "
        f"final val accuracy {final:.4f} (book {book})"
    )
    assert metrics["epochs"] == settings.resolved().epochs
    assert abs(final - book) <= TOLERANCE, (
        f"The {model} net ended at val accuracy {final:.4f}, more than one point from the book's {book}."
    )


@pytest.mark.slow
def test_lenet_learns_on_the_jax_backend(tmp_path, mnist_path, quiet):
    settings = config.TrainConfig(
        model="lenet", epochs=LENET_QUICK["epochs"], train_limit=LENET_QUICK["images"], seed=0
    )
    run = training.train(settings, runs_dir=tmp_path, print_fn=quiet, verbose=0)
    metrics = run.metrics()
    print(
        f"lenet on jax: {metrics['epochs']} epochs on {LENET_QUICK['images']} images, "
        f"{metrics['wall_time_s']:.0f} s, final val accuracy {metrics['final_val_accuracy']:.4f}"
    )
    assert metrics["backend"] == "jax" and metrics["engine"] == "fit"
    assert metrics["final_val_accuracy"] >= LENET_QUICK["val_accuracy_at_least"]


@pytest.mark.slow
def test_lenet_full_ten_epochs_on_its_default_backend(lenet_full_run):
    # Started with the session by conftest (it trains beside the other tests) and waited for here, last.
    process = lenet_full_run["process"]
    try:
        process.wait(timeout=3000)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    output = (lenet_full_run["folder"] / "output.txt").read_text()
    assert process.returncode == 0, output[-2000:]
    (run_dir,) = (lenet_full_run["folder"] / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    print(
        f"lenet on tensorflow: {metrics['epochs']} epochs, {time.perf_counter() - lenet_full_run['started']:.0f} s "
        f"(beside the other tests), final val accuracy {metrics['final_val_accuracy']:.4f} (book 0.992)"
    )
    assert metrics["backend"] == "tensorflow" and metrics["epochs"] == 10
    assert abs(metrics["final_val_accuracy"] - 0.992) <= TOLERANCE
