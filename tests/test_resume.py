"""Never lose a run: a real training process killed at random moments, resumed, compared.

Each test starts `digitlab train` as a real process, kills it (SIGKILL or SIGINT)
at a random moment after its first checkpoint, more than once, resumes it each
time, and checks that the finished run has exactly the history and weights of
the same seed trained without interruption.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from digitlab import runs

pytestmark = pytest.mark.heavy

EPOCHS = 8


def _train_command(runs_dir, engine, *extra):
    return [
        sys.executable,
        "-m",
        "digitlab",
        "train",
        "--engine",
        engine,
        "--epochs",
        str(EPOCHS),
        "--train-limit",
        "20000",
        "--seed",
        "5",
        "--runs-dir",
        str(runs_dir),
        *extra,
    ]


def _status(run_dir):
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _kill_at_random_moment(process, runs_dir, how, rng):
    """Waits for a checkpoint newer than any before, sleeps a random while, then sends `how`."""
    deadline = time.monotonic() + 120
    run_dir = None
    start_epoch = None
    while time.monotonic() < deadline:
        folders = [path for path in runs_dir.iterdir() if path.is_dir()] if runs_dir.exists() else []
        if folders:
            run_dir = folders[0]
            status = _status(run_dir)
            if start_epoch is None and status.get("status") == "running":
                start_epoch = status.get("epoch", 0)
            if start_epoch is not None and (status.get("checkpoint_epoch") or 0) > start_epoch:
                break
        if process.poll() is not None:
            pytest.fail(f"training ended before it could be killed:\n{process.stdout.read()}")
        time.sleep(0.02)
    else:
        pytest.fail("no checkpoint appeared within two minutes")
    time.sleep(rng.uniform(0.0, 0.4))
    if process.poll() is None:
        process.send_signal(how)
    output, _ = process.communicate(timeout=60)
    return run_dir, process.returncode, output


@pytest.mark.parametrize("engine", ["fast", "fit"])
def test_killed_and_resumed_run_equals_uninterrupted(tmp_path, mnist_path, engine):
    rng = random.Random(os.getpid())
    environment = dict(os.environ, PYTHONUNBUFFERED="1")
    reference_dir, cut_dir = tmp_path / "reference", tmp_path / "cut"
    subprocess.run(
        _train_command(reference_dir, engine),
        check=True,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=600,
    )
    (reference,) = [runs.Run(path) for path in reference_dir.iterdir()]

    process = subprocess.Popen(
        _train_command(cut_dir, engine), env=environment, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    run_dir, code, output = _kill_at_random_moment(process, cut_dir, signal.SIGKILL, rng)
    if code == 0:
        pytest.skip("training finished before the kill arrived; the machine was too fast for this timing")
    assert code == -signal.SIGKILL
    assert runs.Run(run_dir).status()["status"] == "interrupted"

    resume = [sys.executable, "-m", "digitlab", "train", "--resume", str(run_dir)]
    process = subprocess.Popen(resume, env=environment, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _, code, output = _kill_at_random_moment(process, cut_dir, signal.SIGINT, rng)
    if code != 0:
        assert code == 130, output
        assert "Resume it with" in output and "Traceback" not in output
        assert runs.Run(run_dir).status()["status"] == "interrupted"
        finished = subprocess.run(resume, env=environment, text=True, capture_output=True, timeout=600)
        assert finished.returncode == 0, finished.stdout + finished.stderr

    resumed = runs.Run(run_dir)
    assert resumed.status()["status"] == "complete"
    assert resumed.history() == reference.history()
    for ours, theirs in zip(resumed.load_model().get_weights(), reference.load_model().get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert not list(run_dir.glob(".*.tmp*"))


def test_the_printed_resume_command_finds_the_runs_own_data(tmp_path, mnist_path, small_npz):
    """Bug: `--resume` forgot where the run's data came from. Train with a relative `--data`, interrupt,
    then run exactly the printed command in a shell without DIGITLAB_DATA or a Keras cache."""
    rng = random.Random(os.getpid())
    (tmp_path / "data").mkdir()
    shutil.copy(mnist_path, tmp_path / "data" / "mnist.npz")
    environment = {key: value for key, value in os.environ.items() if key != "DIGITLAB_DATA"}
    environment.update(PYTHONUNBUFFERED="1", HOME=str(tmp_path / "home"), KERAS_HOME=str(tmp_path / "keras"))
    script = os.path.join(os.path.dirname(sys.executable), "digitlab")
    train = [
        script,
        "train",
        "--data",
        "data/mnist.npz",
        "--epochs",
        "30",
        "--train-limit",
        "3000",
        "--seed",
        "4",
        "--runs-dir",
        "runs",
    ]
    process = subprocess.Popen(
        train, cwd=tmp_path, env=environment, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    run_dir, code, output = _kill_at_random_moment(process, tmp_path / "runs", signal.SIGINT, rng)
    if code == 0:
        pytest.skip("training finished before the interrupt arrived; the machine was too fast for this timing")
    assert code == 130, output
    printed = output.strip().splitlines()[-1].split()
    assert printed[:3] == ["digitlab", "train", "--resume"] and len(printed) == 4, output
    resume = [script, *printed[1:]]

    def run_resume(**extra):
        return subprocess.run(
            resume, cwd=tmp_path, env=dict(environment, **extra), text=True, capture_output=True, timeout=600
        )

    # Other data at the recorded path is refused, and the run is left as it was.
    os.replace(tmp_path / "data" / "mnist.npz", tmp_path / "elsewhere.npz")
    shutil.copy(small_npz, tmp_path / "data" / "mnist.npz")
    refused = run_resume()
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.startswith("error: ") and "Traceback" not in refused.stderr
    assert "not the data this run was trained on" in refused.stderr
    assert runs.Run(run_dir).status()["status"] == "interrupted"
    # The right data found elsewhere (here through DIGITLAB_DATA) is accepted, and remembered.
    os.replace(tmp_path / "elsewhere.npz", tmp_path / "moved.npz")
    (tmp_path / "data" / "mnist.npz").unlink()
    moved = run_resume(DIGITLAB_DATA=str(tmp_path / "moved.npz"))
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert json.loads((run_dir / "data.json").read_text())["path"] == str(tmp_path / "moved.npz")

    reference = subprocess.run(
        [*train[:3], str(tmp_path / "moved.npz"), *train[4:-1], "reference"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        timeout=600,
    )
    assert reference.returncode == 0
    (reference_dir,) = (tmp_path / "reference").iterdir()
    assert runs.Run(run_dir).history() == runs.Run(reference_dir).history()


def test_the_printed_resume_command_works_as_printed(tmp_path, mnist_path):
    """The plain case: the data stays where it was; the printed command, run as printed, finishes the run."""
    rng = random.Random(os.getpid() + 1)
    shutil.copy(mnist_path, tmp_path / "mnist.npz")
    environment = {key: value for key, value in os.environ.items() if key != "DIGITLAB_DATA"}
    environment.update(PYTHONUNBUFFERED="1", HOME=str(tmp_path / "home"), KERAS_HOME=str(tmp_path / "keras"))
    script = os.path.join(os.path.dirname(sys.executable), "digitlab")
    process = subprocess.Popen(
        [script, "train", "--data", "mnist.npz", "--epochs", "30", "--train-limit", "3000", "--seed", "4"],
        cwd=tmp_path,
        env=environment,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    run_dir, code, output = _kill_at_random_moment(process, tmp_path / "runs", signal.SIGINT, rng)
    if code == 0:
        pytest.skip("training finished before the interrupt arrived; the machine was too fast for this timing")
    printed = output.strip().splitlines()[-1].split()
    finished = subprocess.run(
        [script, *printed[1:]], cwd=tmp_path, env=environment, text=True, capture_output=True, timeout=600
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert runs.Run(run_dir).status()["status"] == "complete"
