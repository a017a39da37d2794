"""A full disk during training and a read-only runs folder, on real small filesystems.

The filesystems are tmpfs mounts made by the test (root can mount them, as in CI);
where mounting is not permitted the tests skip and say so.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from digitlab import checkpoint, runs

pytestmark = pytest.mark.heavy


@contextlib.contextmanager
def tmpfs(path, options):
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()}); run as root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def last_line(text: str) -> str:
    """The message digitlab printed last (TensorFlow, when installed, may log above it)."""
    return text.strip().splitlines()[-1]


def _train(runs_dir, *extra):
    return [
        sys.executable,
        "-m",
        "digitlab",
        "train",
        "--epochs",
        "30",
        "--train-limit",
        "3000",
        "--seed",
        "9",
        "--checkpoint-seconds",  # A checkpoint after every epoch, so that one meets the full disk.
        "0",
        "--runs-dir",
        str(runs_dir),
        *extra,
    ]


def test_disk_filling_during_training_loses_nothing(tmp_path, mnist_path):
    environment = dict(os.environ, PYTHONUNBUFFERED="1")
    reference = subprocess.run(
        _train(tmp_path / "reference"), env=environment, capture_output=True, text=True, timeout=600
    )
    assert reference.returncode == 0, reference.stderr
    (reference_run,) = [runs.Run(path) for path in (tmp_path / "reference").iterdir()]

    with tmpfs(tmp_path / "disk", "size=8m") as disk:
        process = subprocess.Popen(
            _train(disk / "runs"), env=environment, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 120
        run_dir = None
        while time.monotonic() < deadline and process.poll() is None:
            folders = list((disk / "runs").glob("*")) if (disk / "runs").exists() else []
            if folders:
                run_dir = folders[0]
                with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
                    if (json.loads((run_dir / "status.json").read_text()).get("checkpoint_epoch") or 0) >= 2:
                        break
            time.sleep(0.01)
        assert run_dir is not None and process.poll() is None, "training ended before the disk could be filled"
        # Fill the disk to the last byte while training goes on.
        with open(disk / "filler", "wb") as filler, contextlib.suppress(OSError):
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
        _, error = process.communicate(timeout=120)
        assert process.returncode == 2, error
        assert last_line(error).startswith("error: Could not write") and "disk is full" in error
        assert "Traceback" not in error
        assert not list(run_dir.glob(".*.tmp*")), "a half-written temporary file was left behind"
        json.loads((run_dir / "history.json").read_text())
        saved = checkpoint.load(run_dir / "checkpoint.npz")
        assert saved["epoch"] >= 2
        assert runs.Run(run_dir).status()["status"] in ("interrupted", "failed")

        (disk / "filler").unlink()
        resumed = subprocess.run(
            [sys.executable, "-m", "digitlab", "train", "--resume", str(run_dir)],
            env=environment,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert resumed.returncode == 0, resumed.stderr
        run = runs.Run(run_dir)
        assert run.status()["status"] == "complete"
        assert run.history() == reference_run.history()
        for ours, theirs in zip(run.load_model().get_weights(), reference_run.load_model().get_weights(), strict=True):
            np.testing.assert_array_equal(ours, theirs)


def test_read_only_runs_folder_is_reported_before_training(tmp_path, mnist_path):
    with tmpfs(tmp_path / "readonly", "size=1m,ro") as folder:
        done = subprocess.run(_train(folder / "runs"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert last_line(done.stderr).startswith("error: Could not write") and "not writable" in done.stderr
    assert "Epoch 1/" not in done.stdout and "Traceback" not in done.stderr


def test_resume_into_a_read_only_run_is_reported(tmp_path, mnist_path):
    with tmpfs(tmp_path / "disk", "size=4m") as disk:
        stopped = subprocess.run(_train(disk / "runs", "--engine", "fit"), capture_output=True, text=True, timeout=300)
        assert stopped.returncode == 0, stopped.stderr
        (run_dir,) = (disk / "runs").iterdir()
        status = json.loads((run_dir / "status.json").read_text())
        (run_dir / "status.json").write_text(json.dumps(dict(status, status="interrupted")))
        before = {path.name: path.read_bytes() for path in run_dir.iterdir() if path.is_file()}
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        done = subprocess.run(
            [sys.executable, "-m", "digitlab", "train", "--resume", str(run_dir)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 2 and "not writable" in done.stderr and "Traceback" not in done.stderr
        after = {path.name: path.read_bytes() for path in run_dir.iterdir() if path.is_file()}
        assert before == after
