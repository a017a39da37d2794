"""A sweep's folder and its record, `sweep.json`: the plan and each trial's run folder and status.

    from digitlab.sweep import state as sweep_state
    sweep = sweep_state.open_sweep("sweeps/x")       # a clear SweepError if it is not a sweep folder
    sweep.update(3, status="running")                # trial 3's record changed, sweep.json rewritten
    left = sweep.unfinished()

`create` makes the folder (which must be new or empty) and writes the plan; every later
change is written atomically, so a sweep killed at any moment leaves a readable record
that `digitlab sweep --resume` continues from.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any, cast

from digitlab import atomic, data, errors
from digitlab.sweep.plan import Trial

FORMAT_VERSION = 1
STATE_FILE = "sweep.json"
# In OUT/runs/: the sweep's id, by which a trial on another machine sees whether OUT is shared with it.
ID_FILE = ".sweep-id"
# A trial in one of these states is not run again by a resumed sweep.
FINISHED = ("complete", "stopped", "failed")


class Sweep:
    """A sweep folder: `sweep.json` (the plan and each trial's status), `runs/`, and the results."""

    def __init__(self, path: str | Path, state: dict):
        self.path = Path(path).absolute()
        self.state = state

    @property
    def trials(self) -> list[Trial]:
        """Every trial of the plan, with its status, as sweep.json records it."""
        return self.state["trials"]

    @property
    def runs_dir(self) -> Path:
        """The folder of the trials' run folders, OUT/runs."""
        return self.path / "runs"

    def file(self, name: str) -> Path:
        """The path of `name` inside the sweep folder."""
        return self.path / name

    def save(self) -> None:
        """Writes sweep.json atomically."""
        atomic.write_json(self.file(STATE_FILE), self.state)

    def update(self, index: int, **values: Any) -> None:
        """Changes a trial's record (some keys of its `Trial`) and writes sweep.json (atomically)."""
        self.trials[index].update(cast(Trial, values))
        self.save()

    def unfinished(self) -> list[Trial]:
        """The trials that are not finished (pending, running, or cut short)."""
        return [trial for trial in self.trials if trial["status"] not in FINISHED]

    def resume_command(self) -> str:
        """The command that resumes this sweep."""
        return resume_command(self.path)

    @property
    def id(self) -> str:
        """A random name of this sweep, written into OUT/runs/.sweep-id (`mark_runs_folder`)."""
        if "id" not in self.state:  # A sweep started by an earlier digitlab.
            self.state["id"] = secrets.token_hex(8)
            self.save()
        return self.state["id"]

    def mark_runs_folder(self) -> None:
        """Writes the sweep's id into its runs folder, where `holds_sweep` looks for it."""
        atomic.write_text(self.runs_dir / ID_FILE, self.id)


def holds_sweep(runs_dir: str | Path, sweep_id: str) -> bool:
    """Whether `runs_dir` on this machine is the runs folder of the sweep `sweep_id`: its own
    machine's, or one shared with it (NFS or the like), rather than missing or another's."""
    try:
        return (Path(runs_dir) / ID_FILE).read_text().strip() == sweep_id
    except (OSError, UnicodeDecodeError):
        return False


def node_counts(trials: list[Trial]) -> str:
    """How many trials each node trained (the node of each trial's last attempt), most first:
    "3 on 10.0.0.5, 1 on 10.0.0.6"; trials that have not started are left out."""
    counts: dict[str, int] = {}
    for trial in trials:
        if trial.get("node"):
            counts[trial["node"]] = counts.get(trial["node"], 0) + 1
    if not counts:
        return "no trial on a node yet"
    return ", ".join(
        f"{count} on {node}" for node, count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    )


def resume_command(out_dir: str | Path) -> str:
    """The command that finishes the sweep in `out_dir` (what an interrupted sweep prints)."""
    return f"digitlab sweep --resume {out_dir}"


def create(out_dir: str | Path, trials: list[Trial], settings: dict, loaded: data.Loaded) -> Sweep:
    """Makes the sweep folder and its sweep.json; the folder must be new, or empty."""
    out_dir = Path(out_dir)
    check_new_folder(out_dir)
    try:
        (out_dir / "runs").mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise errors.SweepError(atomic.describe_write_error(out_dir, error)) from None
    state = {
        "format_version": FORMAT_VERSION,
        "id": secrets.token_hex(8),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "settings": settings,
        "data": loaded.record(),
        "trials": trials,
    }
    sweep = Sweep(out_dir, state)
    sweep.save()
    return sweep


def check_new_folder(out_dir: Path) -> None:
    """Refuses an --out that is a file, a sweep already (resume it instead) or a folder holding other things."""
    if (out_dir / STATE_FILE).is_file():
        raise errors.SweepError(
            f"{out_dir} already holds a sweep. Finish it with `{resume_command(out_dir)}`, or choose another --out."
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise errors.SweepError(f"--out {out_dir} is a file; choose a new or empty folder.")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise errors.SweepError(f"--out {out_dir} already holds other files; choose a new or empty folder.")


def is_sweep_folder(path: str | Path) -> bool:
    """Whether `path` is a sweep's folder (it holds sweep.json), not a run's."""
    return (Path(path) / STATE_FILE).is_file()


def open_sweep(out_dir: str | Path) -> Sweep:
    """Opens a sweep folder, with a clear error if it is not one."""
    out_dir = Path(out_dir)
    path = out_dir / STATE_FILE
    if not path.is_file():
        raise errors.SweepError(f"{out_dir} is not a sweep folder (it has no {STATE_FILE}).")
    try:
        state = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise errors.SweepError(f"{path} is damaged or not JSON ({error}).") from None
    if not isinstance(state, dict) or not isinstance(state.get("trials"), list):
        raise errors.SweepError(f"{path} is not a digitlab sweep record.")
    if state.get("format_version") != FORMAT_VERSION:
        raise errors.SweepError(f"{path} is from another digitlab version (format {state.get('format_version')}).")
    return Sweep(out_dir, state)
