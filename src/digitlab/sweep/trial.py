"""One trial of a sweep: training it into its run folder, and settling a run that a killed sweep left.

    from digitlab.sweep import trial as sweep_trial
    sweep_trial.train_trial(trial, "sweeps/x/runs", loaded, report)            # the sweep's folder is here
    sweep_trial.train_trial(trial, "sweeps/x/runs", loaded, report, channel)   # it is on another machine
    sweep_trial.settle_run(sweep, trial)                                      # before a resumed sweep runs it again

A trial is an ordinary run folder, trained by `training.train` or continued by
`training.resume`; whether it is skipped, resumed or started afresh depends only on
what its folder holds, which is what makes a resumed (or retried) sweep exact. Where the
sweep's folder is not on the trial's machine, the trial gets its run's files through a
`Channel` (from `digitlab.sweep.store`, on the driver's machine), trains in a scratch folder,
and sends every file that changed after each epoch and at the end (status.json last), so the
driver's copy is never more than an epoch behind. Nothing here needs Ray.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Protocol

from digitlab import data, runlock, runs, system
from digitlab.config import TrainConfig
from digitlab.sweep import state as sweep_state
from digitlab.sweep.plan import Trial


class Channel(Protocol):
    """The way to the sweep's folder from a machine that does not have it (`digitlab.sweep.raytune`
    gives one backed by the driver's `RunStore`)."""

    def fetch(self) -> dict[str, bytes]:
        """The run's files as the sweep's folder holds them (empty for a new run)."""
        ...

    def send(self, files: list[tuple[str, bytes]]) -> None:
        """Writes these files into the run's folder there, in order; raises AttemptSuperseded if a
        newer attempt has taken the trial over."""
        ...

    def clear(self) -> None:
        """Removes the run's folder there (the trial starts afresh)."""
        ...


# A trial's scratch folder on a machine without the sweep's folder: PREFIX + its process id + a random part.
SCRATCH_PREFIX = "digitlab-trial-"


class AttemptSuperseded(Exception):
    """Tune started this trial again elsewhere (it took this attempt's machine for lost): this one stops."""


def settle_run(sweep: sweep_state.Sweep, trial: Trial, wait_s: float = 60.0) -> None:
    """Before a trial is resumed: waits for a process of the previous sweep still writing its run
    (a killed driver's workers end within seconds), then marks a run left "running" interrupted.
    A run whose writer still holds its lock after `wait_s` is left alone: its trial will be refused
    with a sentence naming that writer."""
    path = sweep.runs_dir / trial["run"]
    if not (path / runs.STATUS_FILE).is_file():
        return
    run = runs.Run(path)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            lock = runlock.RunLock(path).acquire("settling it before its sweep resumes")
            break
        except runlock.RunBusy:
            if time.monotonic() >= deadline:
                return
            time.sleep(0.5)
    with lock:
        _settle_lost_attempt(run, note="its sweep's driver stopped")


def train_trial(
    trial: Trial,
    runs_dir: str | Path,
    loaded: data.Loaded,
    report,
    channel: Channel | None = None,
    metadata: dict | None = None,
    report_every_s: float = 0.0,
) -> str:
    """Trains one trial into its run folder: skips it if complete, resumes it from its checkpoint,
    or starts it afresh; returns "complete", or "stopped" when Tune stopped it early.
    `report(metrics)` gets each epoch's loss, accuracy, val_loss, val_accuracy (with
    `report_every_s`, the first epoch's and then at most one every that many seconds, and always
    the last); `metadata` goes into its metrics.json (see `training.train`).

    Without `channel` the run folder is `runs_dir/RUN`, here; with one, the trial trains in a
    scratch folder of this machine and its files reach the sweep's folder through the channel.

    This is what a Ray Tune trial runs (`raytune`); it needs no Ray itself. When Tune stops
    the trial early, its `report` raises SystemExit in this thread: the run then ends as an
    interrupted run (its checkpoint intact, so `train --resume` could still finish it).
    """
    if report_every_s > 0:
        report = _Throttled(report, report_every_s)
    if channel is None:
        return _train(trial, Path(runs_dir), loaded, report, metadata, mirror=None)
    _remove_stale_scratch()
    scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-"))
    try:
        path = scratch / trial["run"]
        files = channel.fetch()
        for name, payload in files.items():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_bytes(payload)
        mirror = _Mirror(path, channel)
        mirror.seen()  # What came from the sweep's folder is there already.
        return _train(trial, scratch, loaded, report, metadata, mirror)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class _Throttled:
    """A trial's `report` that passes on an epoch's metrics only if `every_s` seconds have gone by since
    the last it passed on (the first always); the run's final metrics come through `final`."""

    def __init__(self, report, every_s: float):
        self.report, self.every_s = report, every_s
        self.last: float | None = None

    def __call__(self, metrics: dict) -> None:
        now = time.monotonic()
        if self.last is not None and now - self.last < self.every_s:
            return
        self.last = now
        self.report(metrics)

    def final(self, metrics: dict) -> None:
        self.report(metrics)


def _remove_stale_scratch() -> None:
    """Removes the scratch folders of trial processes that are gone: a worker that Tune ended
    (an early stop) or a machine that died and came back cannot remove its own."""
    for folder in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"):
        pid = folder.name[len(SCRATCH_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not system.process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _train(trial: Trial, runs_dir: Path, loaded: data.Loaded, report, metadata, mirror: _Mirror | None) -> str:
    from digitlab import training

    path = runs_dir / trial["run"]
    last_epoch, final = trial["config"]["epochs"], {}

    def sync() -> None:
        if mirror is not None:
            mirror.sync()

    def on_epoch_end(epoch, histories, wall_time_s):
        sync()  # The sweep's folder has the epoch (and its checkpoint) before Tune hears of it.
        history = histories[0]
        metrics = {"epoch": epoch, "wall_time_s": wall_time_s, **{key: history[key][-1] for key in runs.HISTORY_KEYS}}
        if epoch == last_epoch:
            final.update(metrics)  # Reported once the run is complete, so no stop can cut its saving.
            return
        try:
            report(metrics)
        except SystemExit:
            raise KeyboardInterrupt from None  # Training's own way to stop cleanly and resumably.

    def report_final() -> str:
        try:
            getattr(report, "final", report)(final)
        except SystemExit:
            pass  # A stop after the last epoch: the run is complete anyway.
        return "complete"

    lock = None
    try:
        if path.is_dir():
            # Refused here (RunBusy, naming the writer) if another process writes the run.
            lock = runlock.RunLock(path).acquire(f"training sweep trial {trial['run']}")
        if (path / runs.CONFIG_FILE).is_file():
            run = runs.Run(path)
            _settle_lost_attempt(run)
            if run.status().get("status") == "complete":
                history = run.history()
                getattr(report, "final", report)(
                    {
                        "epoch": len(history["val_accuracy"]),
                        "wall_time_s": run.metrics().get("wall_time_s"),
                        **{key: history[key][-1] for key in runs.HISTORY_KEYS},
                    }
                )
                return "complete"
            if run.file(runs.CHECKPOINT_FILE).is_file():
                # metrics.json says where the run was taken up again (after a lost machine, a killed sweep).
                resumed = dict(metadata or {}, resumed_after_epoch=run.status().get("checkpoint_epoch"))
                training.resume(
                    path,
                    loaded=loaded,
                    print_fn=training.quiet,
                    verbose=0,
                    on_epoch_end=on_epoch_end,
                    metadata=resumed,
                    lock=lock,
                )
                sync()
                return report_final()
        if path.exists():
            shutil.rmtree(path)  # Killed before its first checkpoint: nothing to keep (its lock file gone too).
            if mirror is not None:
                mirror.clear()
        if lock is not None:
            lock.release()  # `train` makes the folder again, and takes its lock.
            lock = None
        training.train(
            TrainConfig.from_dict(trial["config"]),
            runs_dir,
            loaded=loaded,
            run_name=trial["run"],
            print_fn=training.quiet,
            verbose=0,
            on_epoch_end=on_epoch_end,
            metadata=metadata,
        )
        sync()
        return report_final()
    except training.TrainingInterrupted as stop:
        # A new run's `train` has let its lock go by now: the note is written under the lock again
        # (and not at all if another writer has taken the run meanwhile: the run is its now).
        try:
            noting = lock or runlock.RunLock(stop.run.path).acquire("noting the scheduler's stop")
        except runlock.RunBusy:
            return "stopped"
        with noting:
            status = stop.run.status()
            stop.run.set_status(
                "interrupted",
                epoch=stop.epoch,
                checkpoint_epoch=status.get("checkpoint_epoch"),
                note="stopped early by the sweep's scheduler",
            )
        sync()
        return "stopped"
    finally:
        if lock is not None:
            lock.release()


def _settle_lost_attempt(run: runs.Run, note: str | None = None) -> None:
    """A run that says "running" when its trial starts (the caller holds its lock, so no process
    writes it) was being trained by an earlier attempt that is gone: Tune gave up on it (its machine
    or worker was lost), or the sweep's driver stopped. Mark it interrupted, so that it resumes from
    its checkpoint."""
    try:
        status = json.loads(run.file(runs.STATUS_FILE).read_text())
    except (OSError, ValueError):
        return
    if isinstance(status, dict) and status.get("status") == "running":
        details = {key: status[key] for key in ("epoch", "checkpoint_epoch") if key in status}
        run.set_status("interrupted", note=note or f"its attempt on {status.get('host', '?')} was lost", **details)


class _Mirror:
    """Sends a scratch run folder's new and changed files through a channel, status.json last."""

    def __init__(self, folder: Path, channel: Channel):
        self.folder, self.channel = folder, channel
        self.sent: dict[str, tuple[int, int, int]] = {}

    def _files(self) -> dict[str, tuple[int, int, int]]:
        if not self.folder.is_dir():
            return {}
        found = {}
        for path in self.folder.rglob("*"):
            if path.is_file() and not path.name.startswith("."):  # Not atomic's temporary files.
                stat = path.stat()
                # Every write is a new file renamed into place (`atomic`), so a changed file has a new inode.
                found[path.relative_to(self.folder).as_posix()] = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        return found

    def seen(self) -> None:
        self.sent = self._files()

    def sync(self) -> None:
        files = self._files()
        changed = sorted(
            (name for name, stamp in files.items() if self.sent.get(name) != stamp),
            key=lambda name: (name == runs.STATUS_FILE, name),
        )
        if changed:
            self.channel.send([(name, (self.folder / name).read_bytes()) for name in changed])
            self.sent.update({name: files[name] for name in changed})

    def clear(self) -> None:
        self.channel.clear()
        self.sent = {}
