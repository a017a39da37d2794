"""A class's runs in the server (serve/classroom.py's state): each student's run, kept epoch by epoch.

    classroom = class_runs.Classroom("runs", class_runs.ClassSettings(cap_bytes=2 * 10**9))
    entry = classroom.open("class-ada-0123456789ab", secret)     # checked against the run's class.json
    await classroom.add_epoch(entry, row, handwriting, weights)  # a line appended; weights now and then

An epoch costs the server one appended line, not rewritten files (measured on the 2-core machine: 0.01
ms against 0.3 ms for each file written beside and renamed over the old one, and a class sends hundreds
of epochs a second). Every epoch kept is a line of the run's journal, `class-epochs.jsonl`, before it is
acknowledged, so a server that stops (or is killed) loses none. history.json, history.csv and class.json
are rewritten from memory at most every FLUSH_SECONDS for each run (a run's board row and its page view
are at most that far behind), when the server stops, and at the run's finish (then with an fsync, and
the journal goes: the folder is an ordinary run folder). A server that starts on a runs folder whose
journals hold epochs past history.json writes them in first (`recover`). An epoch's weights, when the
page sends them (every WEIGHTS_SECONDS), are recorded at float16 as epochs/epoch-NNNN.npz, what the
slider opens.

A finish (model.keras, checkpoint.npz, curves.png: about 0.4 s of Keras and Matplotlib, mostly Python)
runs in one of FINISH_WORKERS worker processes at a lower priority, started at the class's first finish:
in a thread of the server it held the GIL, so every epoch arriving meanwhile waited for it (measured,
under load: a p99 over 600 ms while a class of 100 finished, under 100 ms in the same run before).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import gc
import hashlib
import hmac
import json
import multiprocessing
import os
import re
import threading
import time
from pathlib import Path

import numpy as np
from fastapi import HTTPException

from digitlab import data, runs
from digitlab.browser import page_runs
from digitlab.config import TrainConfig
from digitlab.serve import class_board

CLASS_FILE = class_board.CLASS_FILE
JOURNAL_FILE = "class-epochs.jsonl"
RUN_NAME = re.compile(r"class-[a-z0-9-]{1,40}-[0-9a-f]{12}")
# A student's name: letters (any script), digits, spaces and . ' - _, starting with a letter or digit.
STUDENT_NAME = re.compile(r"[^\W_][\w .'-]{0,39}")
SECRET_HEADER = "X-Run-Secret"
RATE_PER_S = 10.0
BURST = 20
DEFAULT_CAP_BYTES = 2 * 1024**3
FLUSH_SECONDS = 2.0
# How often a page sends its weights with an epoch (GET /api/class says it): the slider and tiles of a class
# run have an epoch about this often; the final weights always come with the finish.
WEIGHTS_SECONDS = 5.0
FINISH_WORKERS = 2
FINISH_NICENESS = 10


@dataclasses.dataclass(frozen=True)
class ClassSettings:
    """A class's limits: the runs folder's cap, whether students see the board, each student's rate."""

    cap_bytes: int = DEFAULT_CAP_BYTES
    board_for_students: bool = False
    rate_per_s: float = RATE_PER_S
    burst: int = BURST


@dataclasses.dataclass
class ClassRun:
    """One class run as the server keeps it between submissions: its folder, config, class.json record
    and history (every epoch kept; `written` of them are in history.json), and whether it is finished."""

    run: runs.Run
    config: TrainConfig
    record: dict
    history: dict
    written: int
    finished: bool
    written_at: float = 0.0  # time.monotonic() of the last `write`
    received_at: float = 0.0  # and of the last epoch.
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)

    @property
    def done(self) -> int:
        """The epochs kept."""
        return len(self.history["val_accuracy"])


class _Bucket:
    """A token bucket: `rate` submissions a second, `burst` at once."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst, self.tokens, self.stamp = rate, burst, float(burst), time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Classroom:
    """The class's state in the server: the runs folder's size, the students' rates, the runs sending."""

    def __init__(self, runs_dir, settings: ClassSettings):
        self.runs_dir, self.settings = Path(runs_dir), settings
        self.used_bytes: int | None = None
        self.buckets: dict[str, _Bucket] = {}
        self.entries: dict[str, ClassRun] = {}
        self.begin_lock = asyncio.Lock()
        self.flusher: asyncio.Task | None = None
        self.workers: concurrent.futures.ProcessPoolExecutor | None = None
        self.settled = False

    def settle(self) -> None:
        """Once, when the class's first run begins (Keras and JAX are loaded by then): their million objects
        are left out of the garbage collector's full passes, which took 120-215 ms each under load, every
        epoch arriving meanwhile waiting (`gc.freeze`)."""
        if not self.settled:
            gc.freeze()
            self.settled = True

    def measure(self) -> int:
        """The runs folder's size in bytes (walked once, then kept up to date by every write here)."""
        if self.used_bytes is None:
            recover(self.runs_dir)
            self.used_bytes = folder_size(self.runs_dir) if self.runs_dir.is_dir() else 0
        return self.used_bytes

    def check_room(self, incoming: int) -> None:
        """Refuses (413) a submission of `incoming` bytes that the runs folder's cap has no room for."""
        used, cap = self.measure(), self.settings.cap_bytes
        if used + incoming > cap:
            raise HTTPException(
                413,
                f"The runs folder is full: it holds {used / 1e6:.1f} MB of its {cap / 1e6:.1f} MB cap "
                "(digitlab serve --class-cap-mb), so nothing more is kept. Ask the teacher to make room.",
            )

    def take(self, student: str) -> None:
        """Refuses (429) a submission past the student's rate."""
        bucket = self.buckets.setdefault(student.casefold(), _Bucket(self.settings.rate_per_s, self.settings.burst))
        if not bucket.take():
            raise HTTPException(
                429,
                f"{student} sends more than {self.settings.rate_per_s:g} submissions a second; wait a moment and "
                "send again (the page does so by itself).",
                headers={"Retry-After": "1"},
            )

    def open(self, name: str, secret: str | None) -> ClassRun:
        """The class run `name` after checking its name and the secret its page was given (404, 403)."""
        if not RUN_NAME.fullmatch(name):
            raise HTTPException(404, f"No class run {name!r}: a class run's name is class-STUDENT-ID.")
        entry = self.entries.get(name)
        if entry is None:
            try:
                entry = load(runs.Run(self.runs_dir / name))
            except runs.RunError:
                raise HTTPException(404, f"No class run {name!r} here; start one from the page.") from None
            status = entry.run.status()
            if not entry.finished and (status.get("status") != "running" or status.get("pid") != os.getpid()):
                # Sent to by this server from now on (one that stopped had it): "running" again.
                entry.run.set_status("running", epoch=entry.done, source="class")
            self.entries[name] = entry
        if not secret or not hmac.compare_digest(secret_hash(secret), str(entry.record.get("secret_sha256", ""))):
            raise HTTPException(
                403, f"This is not your run: {SECRET_HEADER} must be the secret your page was given when the run began."
            )
        return entry

    async def add_epoch(self, entry: ClassRun, row: dict, handwriting, weights: list[np.ndarray] | None) -> None:
        """Keeps a checked epoch: its journal line at once, its weights (if sent) at float16 (in a thread);
        history.json follows within FLUSH_SECONDS."""
        epoch = entry.done + 1
        line = json.dumps({"epoch": epoch, **{key: row[key][0] for key in runs.HISTORY_KEYS}, "own": handwriting})
        added = 0
        if weights is not None:
            added += await asyncio.to_thread(_write_epoch, entry.run, epoch, weights)
        with open(entry.run.file(JOURNAL_FILE), "a", encoding="utf-8") as journal:
            journal.write(line + "\n")
        for key in runs.HISTORY_KEYS:
            entry.history[key].append(row[key][0])
        entry.record["handwriting"] = [*entry.record.get("handwriting", [])[: epoch - 1], handwriting]
        entry.record["updated"], entry.received_at = time.time(), time.monotonic()
        self.used_bytes = self.measure() + added + len(line) + 1
        if time.monotonic() - entry.written_at >= FLUSH_SECONDS:
            self.flush(entry)  # Here, a ms or two: each run in its turn, not a hundred at once in a thread.
        self._start_flusher()

    def flush(self, entry: ClassRun) -> None:
        """Writes the run's history.json, history.csv and class.json from memory, if they are behind."""
        self.used_bytes = self.measure() + rewrite(entry)

    async def finish(self, entry: ClassRun, status: str, weights: list[np.ndarray], head: dict, loaded) -> None:
        """Ends a run with its checked final weights (`page_runs.finish`, in a worker process): its files
        written from memory first (with an fsync), the journal removed last. A worker that died (killed,
        out of memory) takes its pool with it: the finish is tried once more in a new one."""
        before = await asyncio.to_thread(files_size, entry.run)
        try:
            await asyncio.to_thread(rewrite, entry, True)  # page_runs.finish reads history.json.
            data_path = None if loaded.path is None else str(loaded.path)
            job = functools.partial(finish_run, str(entry.run.path), status, weights, head, data_path, loaded.sha256)
            for attempt in (1, 2):
                try:
                    await asyncio.get_running_loop().run_in_executor(self._workers(), job)
                    break
                except concurrent.futures.process.BrokenProcessPool:
                    self.workers = None
                    if attempt == 2:
                        raise
            entry.finished = True
        finally:
            self.used_bytes = self.measure() + await asyncio.to_thread(files_size, entry.run) - before

    def _workers(self) -> concurrent.futures.ProcessPoolExecutor:
        """The finish workers, started at the first finish."""
        if self.workers is None:
            context = multiprocessing.get_context("spawn")  # Not a fork of a server with threads.
            # At a lower priority (nice 10, set before the worker imports Keras): a finish waits a little
            # longer, the epochs arriving meanwhile do not.
            self.workers = concurrent.futures.ProcessPoolExecutor(
                FINISH_WORKERS, mp_context=context, initializer=os.nice, initargs=(FINISH_NICENESS,)
            )
        return self.workers

    def _start_flusher(self) -> None:
        if self.flusher is None or self.flusher.done():
            self.flusher = asyncio.get_running_loop().create_task(self._flush_every())

    async def _flush_every(self) -> None:
        """Every FLUSH_SECONDS, the runs behind that no epoch came to since (a page closed: the others are
        written as their epochs come, by `add_epoch`); every run behind when the server stops (the task is
        cancelled). Measured under load: the runs of a class written all at once, in a thread, every 2 s,
        made the epochs arriving meanwhile wait up to 600 ms for the GIL, and so did writing here each run
        that had not been written for FLUSH_SECONDS (a hundred of them at once, a few ms each)."""
        try:
            while True:
                await asyncio.sleep(FLUSH_SECONDS)
                for entry in list(self.entries.values()):
                    idle = time.monotonic() - entry.received_at >= FLUSH_SECONDS
                    if entry.written < entry.done and idle and not entry.lock.locked():
                        self.flush(entry)
        finally:
            for entry in list(self.entries.values()):
                if not entry.finished:
                    self.flush(entry)


def _write_epoch(run: runs.Run, epoch: int, weights: list[np.ndarray]) -> int:
    """Records an epoch's weights (not fsynced: a record for the slider); the bytes written."""
    run.write_epoch(epoch, weights, durable=False)
    return run.file(runs.EPOCHS_FOLDER).joinpath(f"epoch-{epoch:04d}.npz").stat().st_size


_LOADED: dict[str | None, data.Loaded] = {}


def finish_run(path: str, status: str, weights, head: dict, data_path: str | None, sha256: dict) -> None:
    """`page_runs.finish` for the class run at `path`, in a finish worker: MNIST loaded once per worker
    (from where the server loaded it, and checked to be the same arrays), the journal removed last."""
    if not _LOADED:
        _end_with_the_server()
    if data_path not in _LOADED:
        _LOADED[data_path] = data.load(data_path)
    loaded = _LOADED[data_path]
    if loaded.sha256 != sha256:
        raise data.DataError(f"MNIST at {data_path} changed while the server ran; restart digitlab serve.")
    run = runs.Run(path)
    page_runs.finish(run, run.config(), status, weights, head, loaded, source="class")
    run.file(JOURNAL_FILE).unlink(missing_ok=True)


def _end_with_the_server() -> None:
    """Ends this finish worker when the server that started it is gone: a server ends with `os._exit`
    (digitlab/__main__.py), which shuts no worker down, and a killed one cannot (seen: two workers left
    waiting after the server ended)."""
    server = os.getppid()

    def watch() -> None:
        while os.getppid() == server:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, name="end-with-the-server", daemon=True).start()


def load(run: runs.Run) -> ClassRun:
    """A class run read from its folder: history.json and the journal's epochs past it (RunError if it
    is not a class run)."""
    record = run.read_json(CLASS_FILE)
    config = run.config()
    history = run.history()
    written = len(history["val_accuracy"])
    for line in journal_lines(run):
        if line["epoch"] == len(history["val_accuracy"]) + 1:
            for key in runs.HISTORY_KEYS:
                history[key].append(line[key])
            record["handwriting"] = [*record.get("handwriting", [])[: line["epoch"] - 1], line["own"]]
    return ClassRun(run, config, record, history, written, finished=run.file(runs.MODEL_FILE).is_file())


def journal_lines(run: runs.Run) -> list[dict]:
    """The journal's lines, in order; a last line cut short (a power cut while it was written) is left out."""
    try:
        text = run.file(JOURNAL_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    lines = []
    for line in text.split("\n"):
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return lines


def write(entry: ClassRun, durable: bool) -> None:
    """history.json, history.csv and class.json from memory (`durable`: fsynced, as at the finish)."""
    entry.run.write_history([entry.history], durable)
    entry.run.write_json(CLASS_FILE, entry.record, durable)
    entry.written, entry.written_at = entry.done, time.monotonic()


def rewrite(entry: ClassRun, durable: bool = False) -> int:
    """`write` if the run's files are behind (or `durable`); the bytes they grew by."""
    if entry.written == entry.done and not durable:
        return 0
    before = files_size(entry.run)
    write(entry, durable)
    return files_size(entry.run) - before


def recover(runs_dir: Path) -> None:
    """Writes into history.json the epochs that the journals of `runs_dir`'s class runs hold past it (a
    server killed between two flushes): the board and the page's view then show every epoch kept."""
    for path in Path(runs_dir).glob(f"class-*/{JOURNAL_FILE}"):
        run = runs.Run(path.parent)
        try:
            entry = load(run)
        except runs.RunError:
            continue
        if entry.written < entry.done:
            write(entry, durable=True)


def folder_size(folder: Path) -> int:
    """The bytes of every file under `folder`."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def files_size(run: runs.Run) -> int:
    """The bytes of the run folder's own files (not epochs/: a walk of it would cost a stat per epoch)."""
    return sum(entry.stat().st_size for entry in os.scandir(run.path) if entry.is_file())


def secret_hash(secret: str) -> str:
    """What class.json keeps of a run's secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def student_name(value) -> str:
    """The name a student typed, checked (422 with a sentence)."""
    if not isinstance(value, str) or not STUDENT_NAME.fullmatch(value.strip()):
        raise HTTPException(
            422,
            "student must be your name: 1 to 40 letters, digits, spaces or . ' - _, starting with a letter or digit.",
        )
    return value.strip()


def slug(student: str) -> str:
    """The student's name as a run folder's part: lowercase ASCII letters, digits and dashes."""
    text = re.sub(r"[^a-z0-9]+", "-", student.casefold().encode("ascii", "ignore").decode()).strip("-")
    return (text or hashlib.sha256(student.encode()).hexdigest()[:8])[:40]
