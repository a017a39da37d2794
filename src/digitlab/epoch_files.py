"""A training run's history and status files, kept current by a thread beside the epochs.

    files = epoch_files.EpochFiles(run)
    files.update(histories, epoch=3, checkpoint_epoch=2)   # after an epoch: returns at once
    files.flush()                                           # the newest epochs are on disk now
    files.close()                                           # before the run's last status

Training rewrites history.json, history.csv and status.json after every epoch. Done in the
training loop, that cost the book's shallow net 7-9 ms an epoch on a 2-core ext4 machine, where the
engine's epoch is 50 ms: ext4 waits for a new file's blocks to be allocated when it is renamed over
an old one (its `auto_da_alloc`), 1-3 ms a file, and the JSON and CSV of the whole history, made
afresh each epoch, took 1-2 ms more by the 200th (docs/engine.md, "Start-up"). Here the texts grow
by the new epoch's lines only (`HistoryText`, the same bytes as `runs.Run.write_history`), and a
thread writes the files while the next epoch trains: renaming and writing wait in the kernel with
Python's lock let go, so the loop pays for neither.

The thread writes the newest epochs it was given, at most every `interval` seconds (a page that
follows the run reads the folder every 0.1 s: `serve.live.POLL_S`); when epochs come faster, the
files skip to the newest. Each file is renamed into place as before (`atomic`), so a reader, or a
process killed at any moment, finds the old file or the new one, never a torn one; the checkpoint
(written by training itself, flushed to disk) is what a resume reads. A write that fails (a full
disk) is raised in the training thread by the next `update`, `flush` or `close`.
"""

from __future__ import annotations

import json
import threading

from digitlab import atomic, runs

# The least time between two writes of the files (seconds).
INTERVAL_S = 0.1


class HistoryText:
    """history.json's and history.csv's text (as `runs.Run.write_history` writes them), kept epoch by epoch.

    `texts(histories)` formats only the epochs added since its last call; histories that shrank or
    changed their number of seeds are formatted afresh."""

    def __init__(self) -> None:
        self.values: list[dict[str, list[str]]] = []  # Per seed, per key: each epoch's value as JSON.
        self.rows: list[list[str]] = []  # Per seed: each epoch's line of history.csv.

    def texts(self, histories: list[dict]) -> tuple[str, str]:
        """(history.json's text, history.csv's text) for `histories`."""
        if len(histories) != len(self.values):
            self.values, self.rows = [{} for _ in histories], [[] for _ in histories]
        several = len(histories) > 1
        for seed, history in enumerate(histories):
            values, rows = self.values[seed], self.rows[seed]
            if list(values) != list(history) or any(len(values[key]) > len(history[key]) for key in history):
                values.clear()
                rows.clear()
            for key, numbers in history.items():
                known = values.setdefault(key, [])
                known.extend(json.dumps(number) for number in numbers[len(known) :])
            columns = [history[key] for key in runs.HISTORY_KEYS]
            for epoch in range(len(rows), min(map(len, columns))):
                rows.append(runs.history_csv_row(seed + 1 if several else None, epoch + 1, [c[epoch] for c in columns]))
        return self._json(), runs.history_csv_header(several) + "".join(line for rows in self.rows for line in rows)

    def _json(self) -> str:
        # json.dumps({"seeds": histories}, indent=2) + "\n", put together from the values' texts.
        if not self.values:
            return '{\n  "seeds": []\n}\n'
        seeds = []
        for values in self.values:
            keys = [
                f"      {json.dumps(key)}: "
                + ("[\n        " + ",\n        ".join(texts) + "\n      ]" if texts else "[]")
                for key, texts in values.items()
            ]
            seeds.append("    {\n" + ",\n".join(keys) + "\n    }" if keys else "    {}")
        return '{\n  "seeds": [\n' + ",\n".join(seeds) + "\n  ]\n}\n"


class EpochFiles:
    """Writes a run's history.json, history.csv and status.json ("running") from a thread of its own."""

    def __init__(self, run: runs.Run, interval: float = INTERVAL_S):
        self.run, self.interval = run, interval
        self.text = HistoryText()
        self._condition = threading.Condition()
        self._newest: list[tuple[str, bytes]] | None = None  # Given, not yet being written: (file, content).
        self._writing = False
        self._hurry = False  # A flush or close waits: no pause between writes.
        self._closed = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._write_all, name="digitlab-epoch-files", daemon=True)
        self._thread.start()

    def update(self, histories: list[dict], **status) -> None:
        """Hands over the histories as they are now and the "running" status's details, to be written soon."""
        self._raise_error()
        history_json, history_csv = self.text.texts(histories)
        status_json = json.dumps(runs.status_record("running", **status), indent=2) + "\n"
        contents = [(runs.HISTORY_JSON, history_json), (runs.HISTORY_CSV, history_csv), (runs.STATUS_FILE, status_json)]
        with self._condition:
            self._newest = [(name, text.encode("utf-8")) for name, text in contents]
            self._condition.notify_all()

    def flush(self) -> None:
        """Waits until everything given so far is written (raising what failed)."""
        with self._condition:
            self._hurry = True
            self._condition.notify_all()
            self._condition.wait_for(lambda: self._error is not None or not (self._newest or self._writing))
            self._hurry = False
        self._raise_error()

    def close(self, raise_error: bool = True) -> None:
        """Writes what is left, then ends the thread; after it nothing of this object writes the run's files.

        With `raise_error` False, a failed write is not raised (training fails already, for its own error).
        Called again, it only raises (or not) as the first did."""
        with self._condition:
            self._closed = self._hurry = True
            self._condition.notify_all()
        self._thread.join()
        if raise_error:
            self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:  # Kept: once a write failed, every later call says so.
            raise self._error

    def _write_all(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._newest is not None or self._closed)
                if self._newest is None:
                    return  # Closed, with everything written.
                contents, self._newest = self._newest, None
                self._writing = True
            try:
                for name, content in contents:
                    # Renamed into place but not flushed to disk: a kill leaves the old file or the new one.
                    atomic.write_bytes(self.run.file(name), content, durable=False)
            except BaseException as error:  # Handed to the training thread; the next write would fail too.
                with self._condition:
                    self._error, self._writing = error, False
                    self._condition.notify_all()
                return
            with self._condition:
                self._writing = False
                self._condition.notify_all()
                self._condition.wait_for(lambda: self._hurry, timeout=self.interval)
