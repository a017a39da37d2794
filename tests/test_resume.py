"""Never lose a run: a real training process killed at chosen moments, resumed, compared.

Each test starts `digitlab train` as a real process, kills it (SIGKILL or SIGINT) right
after a checkpoint chosen at random (by what the run has written, never by the clock),
more than once, resumes it each time, and checks that the finished run has exactly the
history and weights of the same seed trained without interruption. Every kill leaves
at least ROOM epochs still to train, so the signal lands inside training on a machine of
any speed; a kill after the last checkpoint (while the model and metrics are written) is
a case of its own.
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

from digitlab import checkpoint, runs

pytestmark = pytest.mark.heavy

EPOCHS = 32
# The epochs every kill leaves still to train: far more than can pass between a checkpoint and the signal.
ROOM = 20


def _train_command(runs_dir, engine, *extra, epochs=EPOCHS):
    return [
        sys.executable,
        "-m",
        "digitlab",
        "train",
        "--engine",
        engine,
        "--epochs",
        str(epochs),
        "--train-limit",
        "6000",
        "--seed",
        "5",
        "--checkpoint-seconds",  # A checkpoint after every epoch: the kills land right after one.
        "0",
        "--runs-dir",
        str(runs_dir),
        *extra,
    ]


def _status(run_dir):
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _wait_for_checkpoint(process, runs_dir, epoch: int, deadline_s: float = 300.0):
    """The run folder, once `process` has written the run's checkpoint of `epoch` (or a later one).
    Only this process's status counts: a resumed run's folder still holds the status a killed process
    wrote, which may name a later checkpoint than `epoch` before the resumed process has even started."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        folders = [path for path in runs_dir.iterdir() if path.is_dir()] if runs_dir.exists() else []
        if folders:
            status = _status(folders[0])
            ours = status.get("status") == "running" and status.get("pid") == process.pid
            if ours and (status.get("checkpoint_epoch") or 0) >= epoch:
                return folders[0]
        if process.poll() is not None:
            pytest.fail(f"training ended before its checkpoint of epoch {epoch}:\n{process.stdout.read()}")
        time.sleep(0.005)
    pytest.fail(f"no checkpoint of epoch {epoch} appeared within {deadline_s:.0f} s")


def _wait_for_last_checkpoint(process, runs_dir, epochs: int):
    """The run folder as soon as its checkpoint file holds epoch `epochs` (status.json names a checkpoint
    only at the next epoch's end, which the last epoch has not), or None if the run ended first."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        folders = [path for path in runs_dir.iterdir() if path.is_dir()] if runs_dir.exists() else []
        if folders and (folders[0] / runs.CHECKPOINT_FILE).is_file():
            try:
                if checkpoint.load(folders[0] / runs.CHECKPOINT_FILE)["epoch"] == epochs:
                    return folders[0]
            except runs.RunError:
                pass  # Replaced while it was read: read the new one.
        time.sleep(0.002)
    return None


def _stop_after_checkpoint(process, runs_dir, epoch: int, how, rng):
    """Sends `how` a random moment (up to 20 ms) after the run's checkpoint of `epoch`; the run must
    still have been training (it had ROOM epochs left), so it must not have ended by itself."""
    run_dir = _wait_for_checkpoint(process, runs_dir, epoch)
    time.sleep(rng.uniform(0.0, 0.02))
    finished_first = process.poll() is not None
    if not finished_first:
        process.send_signal(how)
    output, _ = process.communicate(timeout=120)
    assert not finished_first and process.returncode != 0, f"the run ended before the signal:\n{output}"
    return run_dir, process.returncode, output


def _assert_same_run(run_dir, reference: runs.Run) -> None:
    resumed = runs.Run(run_dir)
    assert resumed.status()["status"] == "complete"
    assert resumed.history() == reference.history()
    for ours, theirs in zip(resumed.load_model().get_weights(), reference.load_model().get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert not list(run_dir.glob(".*.tmp*"))


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
        timeout=900,
    )
    (reference,) = [runs.Run(path) for path in reference_dir.iterdir()]
    killed_after = rng.randint(2, (EPOCHS - ROOM) // 2)
    interrupted_after = rng.randint(killed_after + 1, EPOCHS - ROOM)

    process = subprocess.Popen(
        _train_command(cut_dir, engine), env=environment, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    run_dir, code, output = _stop_after_checkpoint(process, cut_dir, killed_after, signal.SIGKILL, rng)
    assert code == -signal.SIGKILL
    assert runs.Run(run_dir).status()["status"] == "interrupted"

    resume = [sys.executable, "-m", "digitlab", "train", "--resume", str(run_dir)]
    process = subprocess.Popen(resume, env=environment, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _, code, output = _stop_after_checkpoint(process, cut_dir, interrupted_after, signal.SIGINT, rng)
    assert code == 130, output
    assert "Resume it with" in output and "Traceback" not in output
    assert runs.Run(run_dir).status()["status"] == "interrupted"
    finished = subprocess.run(resume, env=environment, text=True, capture_output=True, timeout=900)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    _assert_same_run(run_dir, reference)


def test_a_run_killed_after_its_last_checkpoint_finishes_on_resume(tmp_path, mnist_path):
    """Killed after the checkpoint of its last epoch, while the model, curves and metrics are written:
    the run reads as interrupted, and `--resume` trains nothing more and completes it as it would have."""
    environment = dict(os.environ, PYTHONUNBUFFERED="1")
    epochs = 3
    subprocess.run(
        _train_command(tmp_path / "reference", "fast", epochs=epochs),
        check=True,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=900,
    )
    (reference,) = [runs.Run(path) for path in (tmp_path / "reference").iterdir()]
    # The window after the last checkpoint (saving the model, drawing the curves) is short but not
    # timed: a run that completes before the kill lands is tried again, a few times at most.
    for attempt in range(5):
        cut_dir = tmp_path / f"cut-{attempt}"
        process = subprocess.Popen(
            _train_command(cut_dir, "fast", epochs=epochs),
            env=environment,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        run_dir = _wait_for_last_checkpoint(process, cut_dir, epochs)
        if run_dir is not None:
            process.send_signal(signal.SIGKILL)
        process.communicate(timeout=120)
        if run_dir is not None and process.returncode == -signal.SIGKILL:
            if runs.Run(run_dir).status()["status"] == "interrupted":
                break
    else:
        pytest.fail("five runs in a row completed before a kill after their last checkpoint could land")
    assert checkpoint.load(run_dir / runs.CHECKPOINT_FILE)["epoch"] == epochs
    finished = subprocess.run(
        [sys.executable, "-m", "digitlab", "train", "--resume", str(run_dir)],
        env=environment,
        text=True,
        capture_output=True,
        timeout=900,
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert f"after epoch {epochs} of {epochs}" in finished.stdout
    _assert_same_run(run_dir, reference)
    assert runs.Run(run_dir).metrics()["epochs"] == epochs


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
        "--checkpoint-seconds",  # A checkpoint after every epoch: the Ctrl-C lands right after one.
        "0",
        "--runs-dir",
        "runs",
    ]
    process = subprocess.Popen(
        train, cwd=tmp_path, env=environment, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    run_dir, code, output = _stop_after_checkpoint(process, tmp_path / "runs", rng.randint(1, 5), signal.SIGINT, rng)
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
        [script, "train", "--data", "mnist.npz", "--epochs", "30", "--train-limit", "3000", "--seed", "4"]
        + ["--checkpoint-seconds", "0"],  # A checkpoint after every epoch: the Ctrl-C lands right after one.
        cwd=tmp_path,
        env=environment,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    run_dir, code, output = _stop_after_checkpoint(process, tmp_path / "runs", rng.randint(1, 5), signal.SIGINT, rng)
    assert code == 130, output
    printed = output.strip().splitlines()[-1].split()
    finished = subprocess.run(
        [script, *printed[1:]], cwd=tmp_path, env=environment, text=True, capture_output=True, timeout=600
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert runs.Run(run_dir).status()["status"] == "complete"


def test_a_run_killed_between_two_checkpoints_resumes_exactly(tmp_path, mnist_path):
    """Checkpoints by time (`--checkpoint-seconds`): SIGKILLed several epochs after its last checkpoint, the
    run loses those epochs (its history.json had them; the checkpoint did not) and `--resume` trains them
    again from the checkpoint, to exactly the uninterrupted run's history and weights."""
    environment = dict(os.environ, PYTHONUNBUFFERED="1")
    epochs, every_s = 400, "0.5"
    subprocess.run(
        _train_command(tmp_path / "reference", "fast", "--checkpoint-seconds", every_s, epochs=epochs),
        check=True,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=900,
    )
    (reference,) = [runs.Run(path) for path in (tmp_path / "reference").iterdir()]
    cut_dir = tmp_path / "cut"
    process = subprocess.Popen(
        _train_command(cut_dir, "fast", "--checkpoint-seconds", every_s, epochs=epochs),
        env=environment,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 300
    run_dir = None
    while run_dir is None and time.monotonic() < deadline and process.poll() is None:
        folders = [path for path in cut_dir.iterdir() if path.is_dir()] if cut_dir.exists() else []
        status = _status(folders[0]) if folders else {}
        checkpointed = status.get("checkpoint_epoch") or 0
        # Between two checkpoints: one written, 3 epochs past it, and ROOM epochs still to train.
        if status.get("status") == "running" and checkpointed and checkpointed + 3 <= status["epoch"] < epochs - ROOM:
            process.send_signal(signal.SIGKILL)
            run_dir = folders[0]
        time.sleep(0.002)
    output, _ = process.communicate(timeout=120)
    assert run_dir is not None and process.returncode == -signal.SIGKILL, output
    saved = checkpoint.load(run_dir / runs.CHECKPOINT_FILE)["epoch"]
    written = len(runs.Run(run_dir).history()["val_accuracy"])
    assert 1 <= saved < written < epochs, (saved, written)  # Killed between two checkpoints.
    assert runs.Run(run_dir).status()["status"] == "interrupted"
    finished = subprocess.run(
        [sys.executable, "-m", "digitlab", "train", "--resume", str(run_dir)],
        env=environment,
        text=True,
        capture_output=True,
        timeout=900,
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert f"after epoch {saved} of {epochs}" in finished.stdout
    _assert_same_run(run_dir, reference)
