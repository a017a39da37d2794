"""One writer per run folder: an exclusive lock that whatever writes a run holds while it writes.

Training, a resume, the page's training, a sweep trial and a sweep's run store all write run
folders. Two of them on one run would interleave their files (two histories, two checkpoints),
so each takes the run's lock first; a second one is refused at once, before it changes anything,
with a sentence that names the holder and what to do.

    from digitlab import runlock
    with runlock.RunLock(run.path).acquire("resuming it"):   # RunBusy if another process writes it
        ...                                                   # write the run
    runlock.is_held(run.path)    # True, False, or None where the folder has no lock file (readers)

The lock is `fcntl.flock` on the file `.lock` inside the run folder. The kernel releases it when
its holder's process ends however it ends (SIGKILL included), so a lock left by a dead process
is simply free: the next writer takes it over, nothing to clean up. flock (not POSIX `lockf`)
because a POSIX lock is lost as soon as its process closes *any* descriptor of the file, which
reading the holder's details would do; a flock belongs to its own open file and nothing else.

After taking the lock the holder writes who it is into the file (pid, host, command line, since
when, what it does), which is what a refused writer reads to name it. A holder that stops writing
empties and removes the file, so a finished run holds no `.lock`; one left behind names a process
that died, and says nothing more to a reader than "the writer is gone". Readers (`digitlab runs`,
serve, evaluate) never take the lock: `is_held` asks for a shared lock for an instant and drops it,
and a writer that meets such an instant tries again a few times before it concludes the run is busy.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path

from digitlab import atomic, errors, system

LOCK_FILE = ".lock"
# A reader's probe holds a shared lock for microseconds; a writer that meets one tries again.
TRIES = 10
RETRY_S = 0.01
# How long a refused writer waits for a holder that has just taken the lock to write who it is.
HOLDER_WAIT_S = 1.0
COMMAND_CHARS = 300


class RunBusy(errors.DigitlabError):
    """Another process writes this run now; the message names it and says what to do."""


class RunLock:
    """The lock of one run folder, held by this process between `acquire` and `release`."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.holder: dict | None = None
        self._descriptor: int | None = None

    def __repr__(self) -> str:
        return f"RunLock({str(self.folder)!r}, held={self.held})"

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._descriptor is not None

    def acquire(self, doing: str) -> RunLock:
        """Takes the lock, or raises RunBusy naming its holder; `doing` says what this process
        does to the run ("resuming it"), for the sentence another writer would get. Returns self."""
        if self.held:
            return self
        while True:
            try:
                descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as error:
                if error.errno == errno.ENOENT:
                    raise atomic.WriteError(f"There is no run folder at {self.folder}.") from None
                raise atomic.WriteError(atomic.describe_write_error(self.path, error)) from None
            if not _lock(descriptor, fcntl.LOCK_EX):
                os.close(descriptor)
                raise RunBusy(refusal(self.folder, read_holder(self.folder)))
            if _same_file(descriptor, self.path):
                break
            # The holder before us removed the file between our open and our lock: ours is a lock on
            # a file no one else will open. Open the file that is there now.
            os.close(descriptor)
        self.holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": _command_line(),
            "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "doing": doing,
        }
        payload = (json.dumps(self.holder) + "\n").encode()
        try:
            # Written in place (never renamed over: the lock belongs to this very file).
            os.pwrite(descriptor, payload, 0)
            os.ftruncate(descriptor, len(payload))
        except OSError as error:
            os.close(descriptor)
            raise atomic.WriteError(atomic.describe_write_error(self.path, error)) from None
        self._descriptor = descriptor
        return self

    def release(self) -> None:
        """Empties and removes the lock file, then lets the lock go; nothing if it is not held."""
        descriptor, self._descriptor = self._descriptor, None
        if descriptor is None:
            return
        try:
            if _same_file(descriptor, self.path):  # Not a newer lock file, if the folder was remade.
                os.ftruncate(descriptor, 0)
                os.unlink(self.path)
        except OSError:
            pass  # A read-only or vanished folder: the kernel still releases the lock below.
        os.close(descriptor)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def is_held(folder: str | os.PathLike) -> bool | None:
    """Whether some process (this one included) holds the folder's lock now; None where the folder
    has no lock file (no writer since it was released, or a run written before run locks)."""
    try:
        descriptor = os.open(Path(folder) / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return None
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        return False
    finally:
        os.close(descriptor)


def read_holder(folder: str | os.PathLike, wait_s: float = HOLDER_WAIT_S) -> dict | None:
    """Who holds the folder's lock, as its holder wrote it; None if it has not said within `wait_s`
    (a holder writes it right after taking the lock; until then the file is empty or names the last,
    dead holder, which is not taken for the live one)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            holder = json.loads((Path(folder) / LOCK_FILE).read_text())
        except (OSError, ValueError):
            holder = None
        if isinstance(holder, dict) and not _gone(holder):
            return holder
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


def refusal(folder: Path, holder: dict | None) -> str:
    """The sentence a second writer gets: who writes the run, since when, and what to do."""
    if holder is None:
        return (
            f"The run {folder} is being written by another process (it has not said which yet). "
            "A run has one writer at a time: wait for that one to finish, or stop it, then try again."
        )
    pid, host = holder.get("pid"), holder.get("host")
    here = host == socket.gethostname()
    doing = f" ({holder['doing']})" if holder.get("doing") else ""
    stop = f"`kill {pid}`" + ("" if here else f" on {host}")
    return (
        f"The run {folder} is being written by another process: pid {pid} on {host}{doing}, "
        f"`{holder.get('command', '?')}`, since {holder.get('since', '?')}. A run has one writer at a time: "
        f"wait for that one to finish, or stop it (Ctrl-C in its terminal, or {stop}; it saves the run, "
        "resumable), then try again."
    )


def _lock(descriptor: int, kind: int) -> bool:
    for attempt in range(TRIES):
        try:
            fcntl.flock(descriptor, kind | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt + 1 < TRIES:
                time.sleep(RETRY_S)
    return False


def _same_file(descriptor: int, path: Path) -> bool:
    try:
        named = os.stat(path)
    except OSError:
        return False
    mine = os.fstat(descriptor)
    return (mine.st_dev, mine.st_ino) == (named.st_dev, named.st_ino)


def _gone(holder: dict) -> bool:
    """Whether the holder a lock file names is a process of this machine that has ended."""
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    return not system.process_alive(pid)


def _command_line() -> str:
    command = shlex.join(getattr(sys, "orig_argv", None) or sys.argv)
    return command if len(command) <= COMMAND_CHARS else command[: COMMAND_CHARS - 1] + "…"
