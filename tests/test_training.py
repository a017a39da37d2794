"""Training on shrunken configurations: run folders, repeatability, re-running a saved config."""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pytest

from digitlab import config, interrupts, runs, training

QUICK = dict(epochs=3, train_limit=2000, seed=11)


@pytest.fixture(params=["fit", "fast"])
def engine(request):
    return request.param


def test_a_run_folder_holds_everything(tmp_path, mnist_path, engine, quiet):
    run = training.train(config.TrainConfig(engine=engine, **QUICK), runs_dir=tmp_path, print_fn=quiet, verbose=0)
    names = {path.name for path in run.path.iterdir()}
    assert {
        "config.json",
        "status.json",
        "history.csv",
        "history.json",
        "model.keras",
        "checkpoint.npz",
        "curves.png",
        "metrics.json",
        "data.json",
    } <= names
    assert not [name for name in names if ".tmp" in name]
    assert run.status()["status"] == "complete"
    history = run.history()
    assert set(history) == set(runs.HISTORY_KEYS) and len(history["val_accuracy"]) == 3
    csv_lines = run.file("history.csv").read_text().splitlines()
    assert csv_lines[0] == "epoch,loss,accuracy,val_loss,val_accuracy" and len(csv_lines) == 4
    metrics = run.metrics()
    assert metrics["final_val_accuracy"] == pytest.approx(history["val_accuracy"][-1])
    assert metrics["backend"] == "jax" and metrics["wall_time_s"] > 0
    # The fast engine runs its NumPy backend on a CPU (JAX here is the CPU build).
    assert metrics["engine"] == {"fit": "fit", "fast": "fast-numpy"}[engine]
    assert "keras" in metrics["versions"] and len(metrics["data_sha256"]) == 4
    recorded = run.read_json("data.json")
    assert recorded == {"path": str(mnist_path.absolute()), "origin": "DIGITLAB_DATA", "sha256": metrics["data_sha256"]}
    saved = run.config()
    assert saved == config.TrainConfig(engine=engine, **QUICK).resolved()
    model = run.load_model()
    assert model.count_params() == 50_890


# Keras fit's repeatability (two fit trainings) is in make test; the fast tier keeps the engine's.
@pytest.mark.parametrize("engine", [pytest.param("fit", marks=pytest.mark.heavy), "fast"])
def test_same_seed_same_history(tmp_path, mnist_path, engine, quiet):
    first = training.train(config.TrainConfig(engine=engine, **QUICK), runs_dir=tmp_path, print_fn=quiet, verbose=0)
    second = training.train(
        config.TrainConfig.load(first.file("config.json")), runs_dir=tmp_path, print_fn=quiet, verbose=0
    )
    assert first.path != second.path
    assert first.history() == second.history()
    for a, b in zip(first.load_model().get_weights(), second.load_model().get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_run_without_seed_records_the_one_it_drew(tmp_path, mnist_path, quiet):
    run = training.train(
        config.TrainConfig(engine="fit", epochs=1, train_limit=500), runs_dir=tmp_path, print_fn=quiet, verbose=0
    )
    assert isinstance(run.config().seed, int)


def test_holdout_validation_touches_the_test_set_once(tmp_path, mnist_path, quiet):
    run = training.train(
        config.TrainConfig(engine="fit", validation="holdout", **QUICK), runs_dir=tmp_path, print_fn=quiet, verbose=0
    )
    metrics = run.metrics()
    assert 0.0 < metrics["test_accuracy"] <= 1.0 and metrics["validation"] == "holdout"


def test_failure_marks_the_run_failed(tmp_path, mnist_path):
    def explode(line, *args, **kwargs):
        if line.startswith("Engine:"):
            raise RuntimeError("simulated failure")

    with pytest.raises(RuntimeError):
        training.train(config.TrainConfig(engine="fit", **QUICK), runs_dir=tmp_path, print_fn=explode, verbose=0)
    (run_path,) = tmp_path.iterdir()
    status = json.loads((run_path / "status.json").read_text())
    assert status["status"] == "failed" and "simulated failure" in status["message"]
    assert not (run_path / "model.keras").exists()


def test_interrupt_saves_and_marks_interrupted(tmp_path, mnist_path):
    calls = []

    def interrupt_on_second_epoch(line, *args, **kwargs):
        if line.startswith("Epoch 2/"):
            calls.append(line)
            raise KeyboardInterrupt

    with pytest.raises(training.TrainingInterrupted) as stop:
        training.train(
            config.TrainConfig(engine="fast", **QUICK), runs_dir=tmp_path, print_fn=interrupt_on_second_epoch, verbose=0
        )
    run = stop.value.run
    assert run.status()["status"] == "interrupted"
    assert not run.file("model.keras").exists()
    assert calls


@pytest.fixture
def python_ctrl_c():
    """Ctrl-C as Python sets it up in a terminal (a test process may have inherited it ignored)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_ctrl_c_during_training_stops_it_between_batches(tmp_path, mnist_path, engine, quiet, python_ctrl_c):
    """A real SIGINT, sent from inside training, is only a request there: training goes on to the
    next safe point (the next batch of Keras fit, the next epoch of the fast engine) and stops there,
    with the epochs before it saved. Afterwards Ctrl-C is Python's KeyboardInterrupt again."""
    after_the_signal = []

    def press_ctrl_c(epochs_done, histories, wall_time_s):
        if epochs_done == 1:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
            after_the_signal.append(epochs_done)  # Reached: the signal did not raise here.

    with pytest.raises(training.TrainingInterrupted) as stop:
        training.train(
            config.TrainConfig(engine=engine, **QUICK),
            runs_dir=tmp_path,
            print_fn=quiet,
            verbose=0,
            on_epoch_end=press_ctrl_c,
        )
    assert after_the_signal == [1]
    assert stop.value.epoch == 1
    run = stop.value.run
    assert run.status() | {"status": "interrupted", "epoch": 1, "checkpoint_epoch": 1} == run.status()
    assert len(run.history()["val_accuracy"]) == 1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)


def test_a_second_ctrl_c_stops_at_once(python_ctrl_c):
    with pytest.raises(KeyboardInterrupt):
        with interrupts.requests_stop():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)  # The first is a request: nothing is raised yet.
            reached = True
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
            reached = False
    assert reached
    interrupts.check()  # The request ended with the block.


def test_an_ignored_ctrl_c_stays_ignored():
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupts.requests_stop():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
            interrupts.check()
    finally:
        signal.signal(signal.SIGINT, before)


def test_unwritable_runs_dir_is_reported_before_training(tmp_path, mnist_path, quiet):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(runs.RunError, match="not a folder|not writable|Could not write"):
        training.train(config.TrainConfig(engine="fit", **QUICK), runs_dir=blocker / "runs", print_fn=quiet)
