"""Atomic file writing: a file is either its previous version or its new one, never torn.

Every file digitlab writes (run files, checkpoints, figures, reports) goes through
`atomic_save`: the content is written to a temporary file beside the target,
flushed to disk, then renamed over it. If the disk fills or the folder is
read-only, the temporary file is removed, the target keeps its previous content,
and `WriteError` says what happened and what to do.

    from digitlab import atomic
    atomic.write_json(path, {"status": "running"})
    atomic.write_text(path, "epoch,loss\\n")
    atomic.atomic_save(path, model.save)        # any function that writes to a path
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
from pathlib import Path

import numpy as np

from digitlab import errors, system


class WriteError(errors.DigitlabError):
    """A file could not be written (full disk, read-only folder); the previous file is intact."""


def atomic_save(path: str | os.PathLike, save, durable: bool = True) -> None:
    """Calls `save(temporary_path)`, flushes it to disk (unless not `durable`), then renames it to `path`.

    A kill leaves the old file or the new one either way; `durable` also waits until the disk has
    the new content, so that a power cut cannot leave an empty file (a checkpoint needs it; a file
    rewritten after every 50-ms epoch, whose content the checkpoint also holds, does not)."""
    path = Path(path)
    temporary = temporary_path(path)
    try:
        save(temporary)
        if durable:
            with open(temporary, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        remove_quietly(temporary)
        raise WriteError(describe_write_error(path, error)) from None
    except BaseException:
        remove_quietly(temporary)
        raise


def temporary_path(path: Path) -> Path:
    """The hidden temporary file `atomic_save` writes before renaming: `.STEM.tmp-PID-RANDOM.SUFFIX`.

    Unique to the writer (its process id) and to the write (a random part), so that two writers
    never share one (one's rename would take the other's file); the suffix stays last, as Keras
    and Matplotlib choose the format by it. The leading dot keeps it out of every listing of run
    files, and `leftover_writer` tells the one a killed process left from one being written."""
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")


_TEMPORARY = re.compile(r"\..*\.tmp-(\d+)-[0-9a-f]{8}(\.[^.]*)?")


def leftover_writer(name: str) -> int | None:
    """The process id in a temporary file's name (`temporary_path`), or None if `name` is not one."""
    match = _TEMPORARY.fullmatch(name)
    return int(match.group(1)) if match else None


def remove_leftovers(folder: str | os.PathLike) -> list[Path]:
    """Removes, anywhere under `folder`, the temporary files of processes that have ended (a writer
    killed mid-write leaves one; the real file beside it is intact); returns what it removed."""
    removed = []
    for path in Path(folder).rglob(".*.tmp-*"):
        pid = leftover_writer(path.name)
        if pid is not None and pid != os.getpid() and not system.process_alive(pid):
            remove_quietly(path)
            removed.append(path)
    return removed


def write_bytes(path: str | os.PathLike, payload: bytes, durable: bool = True) -> None:
    """Writes `payload` to `path` atomically (`durable` as for `atomic_save`)."""

    def write(temporary: Path) -> None:
        with open(temporary, "wb") as handle:
            handle.write(payload)

    atomic_save(path, write, durable)


def write_text(path: str | os.PathLike, text: str, durable: bool = True) -> None:
    """Writes `text` as UTF-8 to `path` atomically."""
    write_bytes(path, text.encode("utf-8"), durable)


def write_json(path: str | os.PathLike, value, durable: bool = True) -> None:
    """Writes `value` as indented JSON to `path` atomically (NumPy values and paths included)."""
    write_text(path, json.dumps(value, indent=2, default=_json_default) + "\n", durable)


def describe_write_error(path: Path, error: OSError) -> str:
    """A sentence saying why `path` could not be written and what to do about it."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return (
            f"Could not write {path}: the disk is full or a size limit was reached ({error.strerror}). "
            "Free some space and resume the run with --resume; the previous files are intact."
        )
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (
            f"Could not write {path}: the folder is not writable ({error.strerror}). "
            "Choose a writable folder with --runs-dir."
        )
    return f"Could not write {path} ({error.strerror or error})."


def remove_quietly(path: str | os.PathLike) -> None:
    """Removes a file if it is there; a file that cannot be removed is left alone."""
    try:
        os.unlink(path)
    except OSError:
        pass


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"Cannot write {type(value).__name__} as JSON.")
