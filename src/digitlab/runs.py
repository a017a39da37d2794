"""Run folders: where every training run keeps its config, history, model and status.

A run folder holds:

    config.json      the resolved TrainConfig (enough to re-run it)
    data.json        where the MNIST data came from, and its SHA-256s (so --resume finds it)
    status.json      running | interrupted | complete | failed, with the epoch reached
    history.csv      one row per epoch: loss, accuracy, val_loss, val_accuracy
    history.json     the same, as lists (per seed for multi-seed runs)
    model.keras      the trained Keras model (seed 1 of a multi-seed run)
    seeds/           seed-<k>.keras for multi-seed runs
    checkpoint.npz   weights, optimizer state, epoch and random state, for --resume
    epochs/          epoch-0001.npz, ...: each epoch's weights at float16 (with --record-epochs)
    curves.png       accuracy and loss per epoch
    metrics.json     final metrics, wall time, engine, backend, versions, data hashes
    .lock            while a process writes the run: who it is (`runlock`; gone when it ends)

Every file is written atomically (a temporary file, then a rename), so a run
killed at any instant leaves the previous version or the new one, never a torn
file. `status.json` says "complete" only after everything else is written. One process
writes a run at a time: it holds the run's lock (`digitlab.runlock`) while it does.

    from digitlab import runs
    run = runs.open_run("runs/20261125-101500-shallow-seed0")
    run.status()["status"], run.history(), run.load_model()
    for summary in runs.list_runs("runs"): ...
    print(runs.format_table(runs.list_runs("runs")))

The module runs past 450 lines as one concern: a run folder's layout, and the functions that make,
open, list and check one, all reading the same file names; a split would part `Run` from them.
"""

from __future__ import annotations

import datetime
import errno
import io
import json
import math
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from digitlab import atomic, backends, errors, runlock, system, text
from digitlab.config import TrainConfig

FORMAT_VERSION = 1
STATUSES = ("running", "interrupted", "complete", "failed")
HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")
# The files of a run folder (above); every module names them through these.
CONFIG_FILE = "config.json"
DATA_FILE = "data.json"
STATUS_FILE = "status.json"
HISTORY_CSV = "history.csv"
HISTORY_JSON = "history.json"
MODEL_FILE = "model.keras"
SEEDS_FOLDER = "seeds"
CHECKPOINT_FILE = "checkpoint.npz"
CURVES_FILE = "curves.png"
METRICS_FILE = "metrics.json"
EPOCHS_FOLDER = "epochs"
REPORT_FILE = "report.html"
# The folder that holds the run folders unless a command is told another (--runs-dir).
RUNS_DIR = "runs"


class RunError(errors.DigitlabError):
    """A run folder is missing, unreadable, or cannot be written."""


def resume_command(path: str | Path) -> str:
    """The command that finishes the run in `path` (what an interrupted run prints)."""
    return f"digitlab train --resume {path}"


def history_csv(histories: list[dict]) -> str:
    """The history as CSV: one row per epoch, or per seed and epoch when a run trained several seeds."""
    several = len(histories) > 1
    lines = [history_csv_header(several)]
    for seed, history in enumerate(histories, start=1):
        for epoch, row in enumerate(zip(*(history[key] for key in HISTORY_KEYS), strict=True), start=1):
            lines.append(history_csv_row(seed if several else None, epoch, row))
    return "".join(lines)


def history_csv_header(several: bool) -> str:
    """history.csv's first line (with a seed column when the run trained `several` seeds)."""
    return ",".join(["seed"] * several + ["epoch", *HISTORY_KEYS]) + "\n"


def history_csv_row(seed: int | None, epoch: int, values) -> str:
    """One line of history.csv: the seed (None: a one-seed run's, which has no seed column), the epoch
    and its HISTORY_KEYS values."""
    return ",".join([str(seed)] * (seed is not None) + [str(epoch), *(f"{value:.6f}" for value in values)]) + "\n"


def status_record(status: str, **details) -> dict:
    """status.json's content: `status` (one of STATUSES), when, which process on which machine, and `details`."""
    if status not in STATUSES:
        raise ValueError(f"Unknown run status {status!r}; one of {', '.join(STATUSES)}.")
    return {
        "status": status,
        "updated": _now(),
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "format_version": FORMAT_VERSION,
        **details,
    }


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (`system.process_alive`)."""
    return system.process_alive(pid)


class Run:
    """One run folder on disk."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def name(self) -> str:
        """The run's folder name."""
        return self.path.name

    def file(self, name: str) -> Path:
        """The path of `name` inside the run folder."""
        return self.path / name

    # Writing.

    def write_json(self, name: str, value, durable: bool = True) -> None:
        """Writes `value` as the run's JSON file `name`, atomically (synced unless `durable` is False)."""
        atomic.write_json(self.file(name), value, durable)

    def write_history(self, histories: list[dict], durable: bool = True) -> None:
        """Writes `history.json` (lists per seed) and `history.csv` (see `history_csv`); `durable`
        as for `atomic.atomic_save` (training's per-epoch writes are not: the checkpoint is)."""
        self.write_json(HISTORY_JSON, {"seeds": histories}, durable)
        atomic.write_text(self.file(HISTORY_CSV), history_csv(histories), durable)

    def write_epoch(self, epoch: int, weights: list[np.ndarray], durable: bool = True) -> None:
        """Records one epoch's weights (`model.get_weights()` order) at float16 in epochs/epoch-NNNN.npz;
        `durable` as for `atomic.atomic_save`."""
        folder = self.file(EPOCHS_FOLDER)
        folder.mkdir(exist_ok=True)
        buffer = io.BytesIO()
        np.savez(buffer, *(np.asarray(weight, dtype=np.float16) for weight in weights))
        atomic.write_bytes(folder / _epoch_file_name(epoch), buffer.getvalue(), durable)

    def set_status(self, status: str, durable: bool = True, **details) -> None:
        """Writes status.json (`status_record`)."""
        self.write_json(STATUS_FILE, status_record(status, **details), durable)

    # Reading.

    def read_json(self, name: str):
        """The run's JSON file `name`, or a RunError saying it is missing or damaged."""
        path = self.file(name)
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise RunError(f"The run {self.path} has no {name}; it may be incomplete.") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise RunError(f"{path} is damaged or not JSON ({error}).") from None

    def config(self) -> TrainConfig:
        """The run's config.json as a resolved TrainConfig, or a RunError saying what is wrong with it."""
        try:
            return TrainConfig.from_dict(self.read_json(CONFIG_FILE)).resolved()
        except RunError:
            raise
        except (TypeError, ValueError) as error:
            raise RunError(f"{self.file(CONFIG_FILE)} is not a valid digitlab config: {error}") from None

    def status(self) -> dict:
        """The run's status; a "running" run whose process is gone reads as "interrupted"."""
        try:
            status = self.read_json(STATUS_FILE)
        except RunError:
            return {"status": "unknown"}
        if not isinstance(status, dict) or status.get("status") not in STATUSES:
            return {"status": "unknown"}
        if status["status"] == "running" and not self._writer_alive(status):
            status = dict(status, status="interrupted", note="the training process is gone")
        return status

    def _writer_alive(self, status: dict) -> bool:
        """Whether the process that says it writes this run still does: by the run's lock (`runlock`),
        which the kernel frees when its holder dies whatever its id becomes; by the process id for a
        run written before run locks, or whose writer let the lock go without a last word."""
        if status.get("pid") == os.getpid() and status.get("host") == socket.gethostname():
            return True
        held = runlock.is_held(self.path)
        if held is not None:
            return held
        if status.get("host") == socket.gethostname() and isinstance(status.get("pid"), int):
            return process_alive(status["pid"])
        return True  # Another machine's process, and no lock to ask: taken at its word.

    def being_written(self) -> bool:
        """Whether a process writes the run now: its run lock is held (taken before config.json is
        written, let go after the last status), or, for a run written before run locks, its status
        says so (`status`: "running" while its writer is alive)."""
        held = runlock.is_held(self.path)
        return held if held is not None else self.status().get("status") == "running"

    def history(self) -> dict:
        """Per-epoch history of the first (or only) seed: {"loss": [...], "val_accuracy": [...], ...}."""
        histories = self.histories()
        return histories[0]

    def histories(self) -> list[dict]:
        """Per-epoch histories, one per seed."""
        value = self.read_json(HISTORY_JSON)
        if not isinstance(value, dict) or not isinstance(value.get("seeds"), list) or not value["seeds"]:
            raise RunError(f"{self.file(HISTORY_JSON)} is not a digitlab history.")
        return value["seeds"]

    def recorded_epochs(self) -> list[int]:
        """The epochs whose weights the run recorded (`write_epoch`), in order."""
        folder = self.file(EPOCHS_FOLDER)
        if not folder.is_dir():
            return []
        found = (_EPOCH_FILE.fullmatch(path.name) for path in folder.iterdir())
        return sorted(int(match.group(1)) for match in found if match)

    def epoch_weights(self, epoch: int) -> list[np.ndarray]:
        """The weights recorded after `epoch`, as float32 arrays in `model.get_weights()` order."""
        path = self.file(EPOCHS_FOLDER) / _epoch_file_name(epoch)
        try:
            with np.load(path, allow_pickle=False) as archive:
                return [np.asarray(archive[f"arr_{index}"], dtype=np.float32) for index in range(len(archive.files))]
        except FileNotFoundError:
            raise RunError(f"The run {self.path} has no record of epoch {epoch}.") from None
        except (OSError, ValueError, KeyError) as error:
            raise RunError(f"{path} is damaged ({error}).") from None

    def metrics(self) -> dict:
        """The run's metrics.json (a RunError if the run never finished)."""
        return self.read_json(METRICS_FILE)

    def model_path(self, seed_index: int = 0) -> Path:
        """Where the model of seed `seed_index` is saved: model.keras for the first, seeds/ for the others."""
        if seed_index == 0:
            return self.file(MODEL_FILE)
        return self.file(SEEDS_FOLDER) / f"seed-{seed_index + 1}.keras"

    def load_model(self, seed_index: int = 0):
        """Loads the trained model with Keras's safe mode (no arbitrary code, no pickles)."""
        import keras

        path = self.model_path(seed_index)
        if not path.is_file():
            status = self.status().get("status")
            raise RunError(
                f"The run {self.path} has no trained model ({path.name} is missing; its status is "
                f"{status}). Finish it with `{resume_command(self.path)}`, or choose a complete run."
            )
        try:
            with backends.saving_without_tensorflow():
                return keras.saving.load_model(path, safe_mode=True)
        except Exception as error:  # Keras raises many kinds for damaged or foreign files.
            raise RunError(
                f"{path} could not be loaded as a Keras model ({type(error).__name__}: {error}). "
                "The file may be damaged or from an incompatible version; train the run again."
            ) from None

    def summary(self) -> dict:
        """One line of `digitlab runs`: model, settings, epochs, best/final val accuracy, time."""
        row = {"run": self.name, "status": self.status().get("status", "unknown")}
        try:
            config = self.config()
            row.update(
                model=config.model,
                optimizer=config.optimizer,
                learning_rate=config.learning_rate,
                loss=config.loss,
                batch_size=config.batch_size,
                epochs_planned=config.epochs,
                seeds=config.seeds,
                validation=config.validation,
            )
        except RunError:
            row.update(model="?")
        # A damaged history or metrics file (wrong types included) leaves its columns empty.
        try:
            history = self.history()
            accuracy = history.get("val_accuracy", []) if isinstance(history, dict) else None
            if not isinstance(accuracy, list) or not all(_is_real(value) for value in accuracy):
                raise RunError(f"{self.file(HISTORY_JSON)} is not a digitlab history.")
            finite = [value for value in accuracy if math.isfinite(value)]  # NaN: a diverged epoch.
            row.update(
                epochs=len(accuracy),
                best_val_accuracy=max(finite) if finite else None,
                final_val_accuracy=accuracy[-1] if accuracy and math.isfinite(accuracy[-1]) else None,
            )
        except RunError:
            row.update(epochs=0, best_val_accuracy=None, final_val_accuracy=None)
        try:
            metrics = self.metrics()
            if not isinstance(metrics, dict):
                raise RunError(f"{self.file(METRICS_FILE)} is not a digitlab metrics file.")
            row.update(
                engine=_text_or_none(metrics.get("engine")),
                wall_time_s=metrics["wall_time_s"] if _is_number(metrics.get("wall_time_s")) else None,
                date=_text_or_none(metrics.get("finished")),
            )
        except RunError:
            row.update(engine=None, wall_time_s=None, date=None)
        return row


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return _is_real(value) and math.isfinite(value)


def _text_or_none(value) -> str | None:
    return value if isinstance(value, str) else None


def _epoch_file_name(epoch: int) -> str:
    return f"epoch-{epoch:04d}.npz"


_EPOCH_FILE = re.compile(r"epoch-(\d{4,})\.npz")


def run_names(config: TrainConfig) -> Iterator[str]:
    """The names a new run folder of this config tries, in order: a time stamp, the model and the seed,
    then the same with -2, -3, ... (`new_run` takes the first free one)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = f"{stamp}-{config.model}-{'noseed' if config.seed is None else f'seed{config.seed}'}"
    yield base
    for attempt in range(2, 101):
        yield f"{base}-{attempt}"


def new_run(runs_dir: str | Path, config: TrainConfig, name: str | None = None) -> Run:
    """Creates a fresh, uniquely named run folder, checking first that it can be written.

    With `name`, the folder gets exactly that name (a sweep names its trials' runs in
    advance, so it knows where each one is before it starts); it must not exist yet.
    """
    runs_dir = Path(runs_dir)
    check_folder(runs_dir, "runs folder")
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunError(atomic.describe_write_error(runs_dir, error)) from None
    if not runs_dir.is_dir():
        raise RunError(f"{runs_dir} exists and is not a folder; choose another --runs-dir.")
    for candidate in [name] if name else run_names(config):
        path = runs_dir / candidate
        try:
            path.mkdir()
            break
        except FileExistsError:
            continue
        except OSError as error:
            raise RunError(atomic.describe_write_error(path, error)) from None
    else:
        if name:
            raise RunError(f"The run folder {runs_dir / name} already exists; choose another name.")
        raise RunError(f"Could not find a free run folder name under {runs_dir}.")
    run = Run(path)
    check_writable(run.path)
    return run


def check_writable(folder: str | Path, advice: str | None = None) -> None:
    """Writes and removes a probe file so a read-only folder is reported before anything is written.

    `advice` is what the command that asks can do about it (a flag it really has); the default
    names what every command can do: make the folder writable.
    """
    folder = Path(folder)
    probe = atomic.temporary_path(folder / "write-probe")  # Hidden, as every temporary file.
    try:
        with open(probe, "wb") as handle:
            handle.write(b"digitlab")
    except OSError as error:
        if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise atomic.WriteError(
                f"Could not write in {folder}: the folder is not writable ({error.strerror}). "
                + (
                    advice
                    or f"Make it writable (e.g. `chmod u+w {folder}`), or, on a read-only disk, copy the "
                    "folder to a writable one and use the copy."
                )
            ) from None
        if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise atomic.WriteError(atomic.describe_write_error(folder, error)) from None
        # Any other reason names the folder, not the hidden probe file: no such folder, or one (like /proc)
        # that takes no new files.
        missing = "there is no such folder" if not folder.is_dir() else "it takes no new files"
        raise atomic.WriteError(
            f"Could not write in {folder}: {missing} ({error.strerror or error}). "
            + (advice or "Choose a folder you can write in.")
        ) from None
    finally:
        atomic.remove_quietly(probe)


def check_folder(path: str | Path, what: str = "folder") -> None:
    """Raises RunError with a sentence if `path` is there but cannot be used as a folder:
    a symbolic link that loops, a file, a folder this user may not read."""
    path = Path(path)
    try:
        os.stat(path)
    except FileNotFoundError:
        if path.is_symlink():
            raise RunError(f"{path} is a symbolic link to {os.readlink(path)}, which does not exist.") from None
        return
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise RunError(
                f"{path} is a symbolic link that leads back to itself (a loop), so it is not a usable {what}; "
                f"point the link at a real folder, or give another path."
            ) from None
        if error.errno == errno.ENOTDIR:
            blocker = next((parent for parent in path.parents if parent.exists() and not parent.is_dir()), path)
            raise RunError(
                f"{path} cannot be a {what}: {blocker} is a file, not a folder; give another path."
            ) from None
        raise RunError(f"Could not open {path} ({error.strerror or error}).") from None
    if not path.is_dir():
        raise RunError(f"{path} is a file, not a {what}; give a folder instead.")


def display_name(name: str) -> str:
    """A folder name as text that is always valid UTF-8: bytes that are not UTF-8 (which Python
    reads as lone surrogates) are shown as backslash escapes, `\\xff` (Python's "backslashreplace";
    `printf '%b'` turns the escapes back into the bytes). A UTF-8 name is returned as it is."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def open_run(path: str | Path) -> Run:
    """Opens an existing run folder, with a clear error if it is not one."""
    path = Path(path)
    check_folder(path, "run folder")
    if not path.exists():
        raise RunError(f"No run folder at {path}. List saved runs with `digitlab runs`.")
    if not path.is_dir():
        raise RunError(f"{path} is a file, not a run folder. List saved runs with `digitlab runs`.")
    if not (path / CONFIG_FILE).is_file():
        raise RunError(
            f"{path} is not a digitlab run folder (it has no config.json). List saved runs with `digitlab runs`."
        )
    run = Run(path)
    status = run.status()
    version = status.get("format_version", FORMAT_VERSION)
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise RunError(
            f"{path} was written by a newer digitlab (run format {version}; this one reads "
            f"{FORMAT_VERSION}). Upgrade digitlab to use it."
        )
    return run


def list_runs(runs_dir: str | Path) -> list[dict]:
    """Summaries of every run folder under `runs_dir`, oldest first; none if the folder does not exist.

    A runs folder that is there but cannot be read (a looping link, a file, no permission) raises
    RunError rather than looking empty. Each row's "run" is its folder's `display_name`.
    """
    runs_dir = Path(runs_dir)
    check_folder(runs_dir, "runs folder")
    if not runs_dir.is_dir():
        return []
    try:
        paths = sorted(runs_dir.iterdir())
    except OSError as error:
        raise RunError(f"Could not list the runs in {runs_dir} ({error.strerror or error}).") from None
    rows = []
    for path in paths:
        if path.is_dir() and (path / CONFIG_FILE).is_file():
            row = Run(path).summary()
            row["run"] = display_name(path.name)
            rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    """`list_runs`'s rows as the aligned plain-text table `digitlab runs` prints."""
    header = (
        "run",
        "status",
        "model",
        "optimizer",
        "lr",
        "epochs",
        "best val",
        "final val",
        "engine",
        "time s",
        "date",
    )
    return text.aligned_table(
        header,
        (
            (
                row["run"],
                row["status"],
                row.get("model", "?"),
                row.get("optimizer", "?"),
                text.value_text(row.get("learning_rate"), missing="-"),
                f"{row.get('epochs', 0)}/{row.get('epochs_planned', '?')}",
                text.value_text(row.get("best_val_accuracy"), ".4f", missing="-"),
                text.value_text(row.get("final_val_accuracy"), ".4f", missing="-"),
                row.get("engine") or "-",
                text.value_text(row.get("wall_time_s"), ".1f", missing="-"),
                row.get("date") or "-",
            )
            for row in rows
        ),
    )


def model_to_resume(path: str | Path) -> str:
    """The model a run to resume was started with, read from its config.json without Keras (so that the
    Keras backend can be chosen for it first). A missing or damaged run folder gives the default model:
    `training.resume` then reports it properly."""
    try:
        return TrainConfig.load(Path(path) / CONFIG_FILE).model
    except (OSError, errors.DigitlabError):
        return TrainConfig().model
