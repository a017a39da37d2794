"""The driver's side of a sweep's run files: where trials on other machines deliver them, and where
each trial's attempts and outcome are kept.

    from digitlab.sweep import store as sweep_store
    store = sweep_store.RunStore("sweeps/x/runs")        # on the driver's machine (raytune makes it a Ray actor)
    attempt, files = store.begin("t003-0.5-seed4", node="10.0.0.2", want_files=True)
    store.write("t003-0.5-seed4", attempt, [("history.json", b"..."), ("status.json", b"...")])
    store.finish("t003-0.5-seed4", attempt, {"status": "complete"})
    store.outcome("t003-0.5-seed4")                      # {"status": "complete", "node": "10.0.0.2", ...}

A trial trains where Ray puts it. Where the sweep's folder is not there (no shared folder: each
machine has its own disk), the trial trains in a scratch folder of its machine and sends its run
files here after every epoch (`digitlab.sweep.trial`); the store writes each one into
`OUT/runs/NAME` atomically, as every run file is written, in the order given (status.json last),
so OUT always holds a readable run, one epoch behind at most. When a machine is lost, Tune starts
the trial again elsewhere: `begin` hands the new attempt the run's files (its last checkpoint
among them), and from then on refuses the old attempt's writes, should it still be running.

Every trial, wherever it trains, records its outcome here (complete, stopped, failed with its
error), so the driver never takes a trial whose files are missing for a result. Nothing here
needs Ray; `digitlab.sweep.raytune` runs it as an actor on the driver's node.

While a trial on another machine writes a run through it, the store holds that run's lock
(`digitlab.runlock`), from `claim` (or its first write) to `finish`, as any writer of a run does: a
`digitlab train --resume` of the same run meanwhile is refused, and `claim` refuses the trial, with
a sentence, if such a process writes the run first.
"""

from __future__ import annotations

import shutil
from pathlib import Path, PurePosixPath
from typing import TypedDict

from digitlab import atomic, errors, runlock


class Outcome(TypedDict, total=False):
    """How a trial's attempt ended, as it told the store: status "complete", "stopped" (by the
    scheduler) or "failed" (its own error, in `error`), and where it ran."""

    status: str
    error: str
    node: str
    attempt: int


class RunStore:
    """The run files, attempts and outcomes of a sweep's trials, kept in its `runs` folder."""

    def __init__(self, runs_dir: str | Path):
        self.runs_dir = Path(runs_dir)
        self.attempts: dict[str, list[str]] = {}  # Each run's attempts so far: the node of each.
        self.outcomes: dict[str, Outcome] = {}
        self.locks: dict[str, runlock.RunLock] = {}  # The runs it writes now, through their trials.

    def begin(self, run: str, node: str, want_files: bool = False) -> tuple[int, dict[str, bytes]]:
        """A new attempt at `run` starts on `node`: its number (1, 2, ...), and, if asked, the run's
        files as OUT holds them (empty for a new run). Earlier attempts can no longer write."""
        nodes = self.attempts.setdefault(run, [])
        nodes.append(node)
        self.outcomes.pop(run, None)
        lock = self.locks.pop(run, None)  # The lost attempt's: the new one may train where the folder is.
        if lock is not None:
            lock.release()
        return len(nodes), (self.read(run) if want_files else {})

    def claim(self, run: str) -> str | None:
        """Takes the run's lock for the writes of its trial's attempts (kept until `finish`): None
        when the store holds it, else the sentence naming the process that writes the run now."""
        if run in self.locks:
            return None
        folder = self._folder(run)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            self.locks[run] = runlock.RunLock(folder).acquire("writing the files of its sweep trial")
        except runlock.RunBusy as busy:
            return str(busy)
        return None

    def read(self, run: str) -> dict[str, bytes]:
        """The run's files, by their names inside its folder (temporary files left out)."""
        folder = self._folder(run)
        if not folder.is_dir():
            return {}
        return {
            path.relative_to(folder).as_posix(): path.read_bytes()
            for path in sorted(folder.rglob("*"))
            if path.is_file() and not _is_temporary(path.name)
        }

    def write(self, run: str, attempt: int, files: list[tuple[str, bytes]]) -> bool:
        """Writes the files into OUT/runs/`run`, each atomically, in order. False (nothing written)
        if `attempt` is no longer the run's latest: a newer attempt has taken the run over."""
        if not self._current(run, attempt) or self.claim(run) is not None:
            return False
        folder = self._folder(run)
        for name, payload in files:
            path = folder / _checked_name(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_bytes(path, payload)
        return True

    def clear(self, run: str, attempt: int) -> bool:
        """Removes OUT/runs/`run` (an attempt that starts the run afresh); False for a stale attempt."""
        if not self._current(run, attempt) or self.claim(run) is not None:
            return False
        for path in self._folder(run).iterdir():  # All but the lock file, which the store holds.
            if path.name == runlock.LOCK_FILE:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                atomic.remove_quietly(path)
        return True

    def finish(self, run: str, attempt: int, outcome: Outcome) -> bool:
        """Records how the attempt ended; False for a stale attempt, whose word no longer counts."""
        if not self._current(run, attempt):
            return False
        self.outcomes[run] = {**outcome, "node": self.attempts[run][-1], "attempt": attempt}
        lock = self.locks.pop(run, None)
        if lock is not None:
            lock.release()
        return True

    def outcome(self, run: str) -> Outcome | None:
        """How the run's latest attempt ended, or None if it has not said (it is running, or was cut)."""
        return self.outcomes.get(run)

    def nodes(self, run: str) -> list[str]:
        """The node of each attempt at the run, in order."""
        return list(self.attempts.get(run, []))

    def _current(self, run: str, attempt: int) -> bool:
        return len(self.attempts.get(run, [])) == attempt

    def _folder(self, run: str) -> Path:
        return self.runs_dir / _checked_name(run)


def _checked_name(name: str) -> str:
    """A path inside a run folder, refused if it could leave it (absolute, or with `..`)."""
    parts = PurePosixPath(name).parts
    if not parts or PurePosixPath(name).is_absolute() or any(part in ("", ".", "..") for part in parts):
        raise errors.SweepError(f"A trial sent a file named {name!r}, which is not a path inside its run folder.")
    return name


def _is_temporary(name: str) -> bool:
    """atomic's temporary files (`.name.tmp-PID-RANDOM.suffix`), the write probe and the lock file
    (all named with a leading dot) are not run files."""
    return name.startswith(".")
