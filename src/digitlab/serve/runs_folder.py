"""The runs folder that `digitlab serve` serves, by name: which folders are runs, which of them a URL
can open, and why one cannot be opened.

    folder = RunsFolder("runs")
    folder.listing()          # every run folder, as `digitlab runs` lists it, each with its `problem` or None
    run = folder.open(name)   # a runs.Run, its config.json checked: NotFound (404) or Unusable (409) if not

Any folder of runs_dir that holds a config.json is a run: `listing()` lists each one, and says
why it can't be opened where it can't (a name that is not UTF-8, a damaged config.json);
`open` opens exactly those it lists as openable, by the same rule (`name_problem`).
"""

from __future__ import annotations

import os
import unicodedata

from digitlab import errors, runs

# The longest folder name Linux allows, in bytes.
MAX_NAME_BYTES = 255


class NotFound(runs.RunError):
    """A run, or an epoch of it, that is not there (the API answers 404)."""


class Unusable(runs.RunError):
    """A run whose files cannot be used as they are: a damaged or edited config.json, weights that do
    not fit the network it describes (the API answers 409)."""


def name_problem(name: str) -> str | None:
    """Why a folder of the runs folder cannot be opened by its name in a URL, or None when it can.

    The one rule for `RunsFolder.open` and `RunsFolder.listing`: any name a URL path can carry as one
    segment (UTF-8, no '/', no control characters), except hidden ones ('.', '..', '.x')."""
    if not name:
        return "its name is empty"
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:  # os.listdir's stand-ins for bytes that are not UTF-8.
        return "its name is not UTF-8, so no URL can name it; rename the folder"
    if name.startswith("."):
        return "its name starts with '.' (a hidden folder)"
    if "/" in name or any(unicodedata.category(character) == "Cc" for character in name):
        return "its name holds a '/' or a control character; rename the folder"
    if len(encoded) > MAX_NAME_BYTES:
        return f"its name is over {MAX_NAME_BYTES} bytes"
    return None


def shown_name(name: str) -> str:
    """A folder name as text that JSON can carry: bytes that are not UTF-8 become U+FFFD."""
    return os.fsencode(name).decode("utf-8", errors="replace")


class RunsFolder:
    """The runs directly under `runs_dir`, opened by the name a URL gives (see the module docstring)."""

    def __init__(self, runs_dir):
        self.runs_dir = runs.Path(runs_dir)

    def open(self, name: str) -> runs.Run:
        """The run folder `name` directly under runs_dir, its config.json checked: NotFound if there is
        none (or its name is one `listing` shows as not openable), Unusable if its config is damaged."""
        if name_problem(name) is not None:
            raise NotFound(f"No run named {name!r} here. The page lists the saved runs (GET /api/runs).")
        path = runs.Path(self.runs_dir) / name
        if not (path / runs.CONFIG_FILE).is_file():
            raise NotFound(f"No run named {name!r} in {self.runs_dir}. GET /api/runs lists them.")
        try:
            run = runs.open_run(path)
            run.config()
        except errors.DigitlabError as error:
            raise Unusable(f"The run {name} cannot be opened: {error}") from None
        return run

    def listing(self) -> list[dict]:
        """Every run folder (one holding a config.json) as `digitlab runs` lists it, oldest first, with
        `problem`: why it cannot be opened (None when it can). A damaged run never hides the others."""
        folder = runs.Path(self.runs_dir)
        try:
            names = sorted(os.listdir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as error:
            raise Unusable(f"The runs folder {folder} cannot be read ({error.strerror}).") from None
        rows = []
        for name in names:
            path = folder / name
            try:
                if not (path / runs.CONFIG_FILE).is_file():
                    continue
            except OSError:
                continue
            problem = name_problem(name)
            row: dict = {"run": shown_name(name), "status": "unknown", "model": "?"}
            if problem is None:
                try:
                    self.open(name)
                    row.update(runs.Run(path).summary())
                    row["recorded_epochs"] = len(runs.Run(path).recorded_epochs())
                except errors.DigitlabError as error:
                    problem = str(error)
                except Exception as error:  # A file digitlab did not write: the row says so, the list goes on.
                    problem = f"The run {name} cannot be read ({type(error).__name__}: {error})."
            row.setdefault("recorded_epochs", 0)
            row["problem"] = problem
            rows.append(row)
        return rows
