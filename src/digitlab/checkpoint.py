"""Checkpoints: everything a run needs to continue exactly where it stopped.

A checkpoint is one `.npz` archive of plain arrays (never pickles) holding the
engine's state (weights and optimizer slots), the number of epochs finished, the
random state that decides the next epochs' shuffles, the history so far and the
wall time spent. It is written atomically, so a process killed while writing
leaves the previous checkpoint intact.

    from digitlab import checkpoint
    checkpoint.save(path, engine="fast-numpy", epoch=12, state=..., rngs=[...],
                    histories=[...], wall_time_s=3.1)
    saved = checkpoint.load(path)      # dict with the same fields
"""

from __future__ import annotations

import io
import json
import zipfile
import zlib
from pathlib import Path

import numpy as np

from digitlab import atomic
from digitlab.runs import RunError

FORMAT_VERSION = 1


def save(
    path: Path,
    *,
    engine: str,
    epoch: int,
    state: dict[str, np.ndarray],
    rngs: list[np.random.RandomState],
    histories: list[dict],
    wall_time_s: float,
) -> None:
    """Writes a checkpoint atomically; raises RunError (previous checkpoint kept) on failure."""
    arrays: dict[str, np.ndarray] = {f"state/{name}": np.asarray(value) for name, value in state.items()}
    for index, rng in enumerate(rngs):
        kind, keys, position, has_gauss, cached_gaussian = rng.get_state()
        arrays[f"rng/{index}/keys"] = np.asarray(keys)
        arrays[f"rng/{index}/position"] = np.array([position, has_gauss], dtype=np.int64)
        arrays[f"rng/{index}/gaussian"] = np.array(cached_gaussian, dtype=np.float64)
    meta = {
        "format_version": FORMAT_VERSION,
        "engine": engine,
        "epoch": int(epoch),
        "seeds": len(rngs),
        "histories": histories,
        "wall_time_s": float(wall_time_s),
    }
    arrays["meta"] = np.array(json.dumps(meta))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]  # NumPy's stubs type **kwds as allow_pickle.
    atomic.write_bytes(Path(path), buffer.getvalue())


def load(path: Path) -> dict:
    """Reads a checkpoint written by `save`, with a clear RunError if it is missing or damaged."""
    path = Path(path)
    if not path.is_file():
        raise RunError(
            f"There is no checkpoint at {path}, so the run cannot be resumed; it stopped before "
            "its first epoch ended, or was trained with checkpoints off. Start it again instead."
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        meta = json.loads(str(arrays.pop("meta")))
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise RunError(f"The checkpoint {path} is damaged ({error}); it cannot be resumed.") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise RunError(
            f"The checkpoint {path} is from another digitlab version (format "
            f"{meta.get('format_version') if isinstance(meta, dict) else '?'}, expected {FORMAT_VERSION})."
        )
    rngs = []
    for index in range(meta["seeds"]):
        try:
            keys = arrays.pop(f"rng/{index}/keys")
            position, has_gauss = arrays.pop(f"rng/{index}/position").tolist()
            gaussian = float(arrays.pop(f"rng/{index}/gaussian"))
        except KeyError:
            raise RunError(f"The checkpoint {path} lacks the random state of seed {index + 1}.") from None
        rng = np.random.RandomState()
        rng.set_state(("MT19937", keys, position, has_gauss, gaussian))
        rngs.append(rng)
    state = {name[len("state/") :]: value for name, value in arrays.items() if name.startswith("state/")}
    return dict(meta, state=state, rngs=rngs)
