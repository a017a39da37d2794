"""One writer per run folder (runlock.py), and unique temporary files (atomic.py).

The fast tests take the lock in real processes (a small Python child that holds it, then is
SIGKILLed) and in this one; the heavy ones run two real `digitlab train --resume` of one run at
once, and a resume beside a sweep trial of the same run, and check
that exactly one writes it, the other is refused with the sentence, and the run ends equal to one
trained without interruption. scripts/writers_stress.py repeats the heavy cases many times.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from digitlab import atomic, runlock, runs

HOLDER = textwrap.dedent(
    """
    import sys, time
    from digitlab import runlock
    lock = runlock.RunLock(sys.argv[1]).acquire("holding it for a test")
    print("held", flush=True)
    time.sleep(600)
    """
)


def _holder(folder: Path) -> subprocess.Popen:
    """A real process that takes the folder's lock and keeps it (until it is killed)."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder), "--marker"], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "held"
    return process


def _end(process: subprocess.Popen, how=signal.SIGKILL) -> None:
    process.send_signal(how)
    process.wait(timeout=30)
    assert process.stdout is not None
    process.stdout.close()


def test_a_second_writer_is_refused_with_the_holders_pid_host_and_command(tmp_path):
    holder = _holder(tmp_path)
    try:
        started = time.monotonic()
        with pytest.raises(runlock.RunBusy) as refused:
            runlock.RunLock(tmp_path).acquire("resuming it")
        assert time.monotonic() - started < 2.0  # At once, not after a wait.
        sentence = str(refused.value)
        assert f"pid {holder.pid} on {socket.gethostname()}" in sentence
        assert "holding it for a test" in sentence and "--marker" in sentence  # What it does, its command line.
        assert f"kill {holder.pid}" in sentence and "wait for that one to finish" in sentence
        assert runlock.is_held(tmp_path) is True
        info = runlock.read_holder(tmp_path)
        assert info is not None and info["pid"] == holder.pid and info["since"]  # Readable while it is held.
    finally:
        _end(holder)


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    holder = _holder(tmp_path)
    _end(holder, signal.SIGKILL)
    assert (tmp_path / runlock.LOCK_FILE).is_file()  # A killed holder cannot remove its file...
    assert runlock.is_held(tmp_path) is False  # ...but the kernel has let its lock go.
    assert runlock.read_holder(tmp_path, wait_s=0) is None  # Its words name a dead process: not a holder.
    with runlock.RunLock(tmp_path).acquire("taking it over") as lock:
        assert lock.holder is not None and lock.holder["pid"] == os.getpid()
        assert json.loads((tmp_path / runlock.LOCK_FILE).read_text())["doing"] == "taking it over"
        with pytest.raises(runlock.RunBusy, match=f"pid {os.getpid()}"):
            runlock.RunLock(tmp_path).acquire("a second lock in the same process")  # flock is per open file.
    assert not (tmp_path / runlock.LOCK_FILE).exists()  # Released: removed, the run folder is as it was.
    assert runlock.is_held(tmp_path) is None


def test_a_running_status_is_alive_exactly_while_its_lock_is_held(tmp_path):
    """`digitlab runs` and the page read "running" as alive by the lock, not by a process id
    (which can be reused): a running run whose writer was SIGKILLed reads as interrupted."""
    (tmp_path / runs.CONFIG_FILE).write_text("{}")
    holder = _holder(tmp_path)
    status = {"status": "running", "epoch": 3, "pid": holder.pid, "host": socket.gethostname()}
    (tmp_path / runs.STATUS_FILE).write_text(json.dumps(status))
    try:
        assert runs.Run(tmp_path).status()["status"] == "running"
    finally:
        _end(holder)
    # A live process's id (this one's parent) in the status changes nothing: the lock says it is gone.
    (tmp_path / runs.STATUS_FILE).write_text(json.dumps(dict(status, pid=os.getppid())))
    assert runs.Run(tmp_path).status()["status"] == "interrupted"


def test_readers_probing_the_lock_never_refuse_a_writer(tmp_path):
    """`is_held` takes a shared lock for an instant; a writer that meets one tries again."""
    stop = threading.Event()

    def probe():
        while not stop.is_set():
            runlock.is_held(tmp_path)

    readers = [threading.Thread(target=probe) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        for _ in range(50):
            runlock.RunLock(tmp_path).acquire("writing").release()
    finally:
        stop.set()
        for reader in readers:
            reader.join()


def test_temporary_names_are_unique_per_writer_and_write(tmp_path):
    target = tmp_path / "model.keras"
    names = {atomic.temporary_path(target).name for _ in range(100)}
    assert len(names) == 100
    for name in names:
        assert name.startswith(".model.tmp-") and name.endswith(".keras")  # Hidden; Keras's suffix last.
        assert atomic.leftover_writer(name) == os.getpid()
    script = f"import pathlib; from digitlab import atomic; print(atomic.temporary_path(pathlib.Path({str(target)!r})))"
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert atomic.leftover_writer(Path(child.stdout.strip()).name) not in (None, os.getpid())
    assert atomic.leftover_writer("history.json") is None and atomic.leftover_writer(".lock") is None


def test_leftovers_of_a_killed_writer_are_removed_and_never_listed(tmp_path):
    """A writer SIGKILLed mid-write leaves its temporary file: readers and listings skip it, and the next
    writer removes it; a live writer's temporary file is left alone."""
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / runs.EPOCHS_FOLDER).mkdir()
    live_leftover = tmp_path / f".history.tmp-{writer.pid}-0123abcd.json"
    dead_leftovers = [
        tmp_path / f".history.tmp-{dead.pid}-89abcdef.json",
        tmp_path / runs.EPOCHS_FOLDER / f".epoch-0002.tmp-{dead.pid}-00ff00ff.npz",
    ]
    try:
        for path in [live_leftover, *dead_leftovers]:
            path.write_bytes(b"half")
        np.savez(tmp_path / runs.EPOCHS_FOLDER / "epoch-0001.npz", np.zeros(2))
        assert runs.Run(tmp_path).recorded_epochs() == [1]
        assert sorted(atomic.remove_leftovers(tmp_path)) == sorted(dead_leftovers)
        assert live_leftover.is_file() and not any(path.exists() for path in dead_leftovers)
    finally:
        writer.kill()
        writer.wait()


def test_the_sweep_store_holds_the_lock_while_it_writes_a_run(tmp_path):
    from digitlab.sweep import store as sweep_store

    store = sweep_store.RunStore(tmp_path)
    attempt, _ = store.begin("t000", node="here")
    assert store.claim("t000") is None
    assert store.write("t000", attempt, [("history.json", b"{}")])
    with pytest.raises(runlock.RunBusy, match=f"pid {os.getpid()}.*its sweep trial"):
        runlock.RunLock(tmp_path / "t000").acquire("resuming it")
    assert store.clear("t000", attempt) and runlock.is_held(tmp_path / "t000")  # Cleared, its lock kept.
    assert store.finish("t000", attempt, {"status": "complete"})
    assert runlock.is_held(tmp_path / "t000") is None
    # A lost attempt's lock goes with it: the next attempt may train where the sweep's folder is, itself.
    lost, _ = store.begin("t000", node="lost")
    assert store.claim("t000") is None and runlock.is_held(tmp_path / "t000")
    retried, _ = store.begin("t000", node="here")
    runlock.RunLock(tmp_path / "t000").acquire("training sweep trial t000").release()
    assert not store.write("t000", lost, [("history.json", b"{}")])

    (tmp_path / "t001").mkdir()  # A `train --resume` of the sweep's run writes it first.
    holder = _holder(tmp_path / "t001")
    try:
        attempt, _ = store.begin("t001", node="here")
        refusal = store.claim("t001")
        assert refusal is not None and f"pid {holder.pid}" in refusal
        assert not store.write("t001", attempt, [("history.json", b"{}")])
        assert not (tmp_path / "t001" / "history.json").exists()
    finally:
        _end(holder)


# Heavy: real writers at one run at once. The runs (an uninterrupted one, and one stopped after epoch 3)
# and the contenders come from scripts/writers_stress.py, which repeats these cases many times.


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory, mnist_path, load_script):
    """(the stress script, the reference Run, the folder of a run stopped after epoch 3)."""
    stress = load_script("writers_stress")
    reference, stopped = stress.prepare(tmp_path_factory.mktemp("prepared"), str(mnist_path))
    return stress, runs.Run(reference), stopped


@pytest.mark.heavy
def test_two_resumes_at_once_one_trains_the_other_is_refused(stopped_run, tmp_path, mnist_path):
    stress, reference, stopped = stopped_run
    run = tmp_path / stopped.name
    shutil.copytree(stopped, run)
    command = [sys.executable, "-m", "digitlab", "train", "--resume", str(run), "--data", str(mnist_path)]
    both = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [process.communicate(timeout=600) for process in both]
    results = [(process.pid, process.returncode, out, err) for process, (out, err) in zip(both, outputs, strict=True)]
    assert sorted(code for _, code, _, _ in results) == [0, 2], results
    (winner,) = [result for result in results if result[1] == 0]
    (loser,) = [result for result in results if result[1] == 2]
    assert f"resuming {run} after epoch {stress.STOPPED_AFTER} of" in winner[2]
    refusal = loser[3].strip().splitlines()[-1]
    assert refusal.startswith(f"error: The run {run} {stress.REFUSAL} {winner[0]} ") and "Traceback" not in loser[3]
    assert "train --resume" in refusal and "wait for that one to finish" in refusal
    assert "Epoch" not in loser[2]  # Refused before it trained, or wrote, anything.
    finished = runs.Run(run)
    assert finished.status()["status"] == "complete" and finished.history() == reference.history()
    for ours, theirs in zip(finished.load_model().get_weights(), reference.load_model().get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert not list(run.rglob(".*"))  # No lock file, no temporary file left.


@pytest.mark.heavy
@pytest.mark.parametrize("case", ["sweep"])
def test_a_resume_beside_a_sweep_trial(stopped_run, tmp_path, mnist_path, case):
    """`digitlab train --resume` and a sweep trial of the same run, released at the same instant: one
    writes, the other is refused with the sentence that names it, and the run equals the uninterrupted one."""
    stress, reference, stopped = stopped_run
    verdict = stress.one_try(case, stopped, reference, tmp_path, str(mnist_path))
    assert verdict["sentence"] and not verdict["damaged"] and verdict["equal"], verdict
