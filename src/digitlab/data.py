"""MNIST, loaded as the book loads it, checked, and turned into network inputs.

    from digitlab import data
    (X_train, y_train), (X_valid, y_valid) = data.load_mnist()   # uint8, as Keras gives it
    x = data.to_inputs(X_valid, flat=True)                        # (10000, 784) float32 in 0-1
    y = data.to_targets(y_valid)                                  # (10000, 10) one-hot

`load_mnist` looks for the data in this order: an explicit path (the `path`
argument, `--data` on the command line, or the `DIGITLAB_DATA` environment
variable), Keras's own cache (`~/.keras/datasets/mnist.npz`), then a download
through `keras.datasets.mnist.load_data()`, which verifies the file's checksum.
A path may be a Keras-style `.npz` or a folder of the four MNIST IDX files
(gzipped or not). Every source is checked (keys, shapes, dtypes, label range)
before use, and archives are opened without pickle.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import io
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from digitlab import errors

ENV_VAR = "DIGITLAB_DATA"
NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28)
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
# An IDX header's magic number gives the element type (0x08 = unsigned byte) and the rank.
_IDX_MAGIC = {1: 0x00000801, 3: 0x00000803}


class DataError(errors.DigitlabError):
    """The MNIST data could not be found or is not what it should be."""


def keras_cache_path() -> Path:
    """Where `keras.datasets.mnist.load_data()` keeps its download."""
    keras_home = os.environ.get("KERAS_HOME", str(Path.home() / ".keras"))
    return Path(keras_home) / "datasets" / "mnist.npz"


def load_mnist(path: str | os.PathLike | None = None):
    """Returns `(X_train, y_train), (X_valid, y_valid)` exactly as Keras's MNIST loader does.

    The "validation" pair is MNIST's 10,000 test images, as in the book.
    """
    arrays = {key: np.array(value) for key, value in load_arrays(path).items()}  # Writable, the caller's own.
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


@dataclasses.dataclass
class Loaded:
    """MNIST's four checked arrays and where they came from, as a run records it."""

    arrays: dict[str, np.ndarray]
    path: Path | None  # The file or folder read (Keras's cache after a download).
    origin: str  # How it was found: "--data", "DIGITLAB_DATA", "Keras's cache", "download", "the run's record".

    @functools.cached_property
    def sha256(self) -> dict[str, str]:
        """The SHA-256 of each array (`fingerprint`), computed once."""
        return fingerprint(self.arrays)

    def record(self) -> dict:
        """What a run keeps in data.json so that `--resume` finds the same data again."""
        return {"path": None if self.path is None else str(self.path), "origin": self.origin, "sha256": self.sha256}


def load_arrays(path: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """Finds MNIST (see the module docstring for the order) and returns its four checked arrays."""
    return load(path).arrays


def load(path: str | os.PathLike | None = None, origin: str = "--data") -> Loaded:
    """Finds MNIST as `load_arrays` does, and says where: the arrays, the absolute path, the origin."""
    if path is None and os.environ.get(ENV_VAR):
        path, origin = os.environ[ENV_VAR], ENV_VAR
    if path is not None:
        path = Path(path).expanduser().absolute()
        if not path.exists():
            source = f"the {ENV_VAR} environment variable" if origin == ENV_VAR else "the given path"
            raise DataError(
                f"No MNIST data at {path} (from {source}). Give the path of a Keras-style "
                "mnist.npz or of a folder holding the four MNIST IDX files."
            )
        return Loaded(read_path(path), path, origin)
    cache = keras_cache_path()
    if cache.exists():
        return Loaded(read_npz(cache), cache.absolute(), "Keras's cache")
    return Loaded(_download(), keras_cache_path().absolute(), "download")


def load_recorded(record: dict, path: str | os.PathLike | None = None, loaded: Loaded | None = None) -> Loaded:
    """The data a run was trained on, found again from its `Loaded.record()` (data.json).

    With `loaded` given (data already in memory, as a sweep's workers get it from Ray's
    object store), nothing is read: only its SHA-256s are checked against the record.

    With `path` given, that data is read. Otherwise the recorded path is tried first,
    and used if it still holds the same arrays; else the usual search order
    (`DIGITLAB_DATA`, Keras's cache, a download). Whatever is found must have the
    recorded SHA-256s: different data raises DataError, never a silent resume on it.
    """
    expected = record.get("sha256")
    recorded = record.get("path")
    if loaded is not None:
        if expected and loaded.sha256 != expected:
            raise _not_the_runs_data(loaded, expected, recorded)
        return loaded
    replaced = None  # Data at the recorded path that is not the run's.
    if path is None and recorded and Path(recorded).exists():
        try:
            loaded = load(recorded, origin="the run's record")
        except DataError:
            loaded = None  # Damaged since: look elsewhere, as for a moved file.
        if loaded is not None and loaded.sha256 == expected:
            return loaded
        replaced = loaded
    try:
        loaded = load(path)
    except DataError as error:
        if replaced is not None:
            raise _not_the_runs_data(replaced, expected or {}, recorded) from None
        if path is None and recorded:
            raise DataError(
                f"This run was trained on the MNIST at {recorded}, which is no longer there or has changed. {error}"
            ) from None
        raise
    if expected and loaded.sha256 != expected:
        raise _not_the_runs_data(loaded, expected, recorded)
    return loaded


def _not_the_runs_data(loaded: Loaded, expected: dict, recorded: str | None) -> DataError:
    where = f" (at {recorded})" if recorded else ""
    return DataError(
        f"The MNIST data at {loaded.path} (from {loaded.origin}) is not the data this run was "
        f"trained on{where}: their SHA-256s differ (x_train {loaded.sha256['x_train'][:12]}..., "
        f"recorded {expected.get('x_train', '?')[:12]}...). Resume with --data PATH pointing at "
        "the run's data, or start a new run."
    )


def read_path(path: Path) -> dict[str, np.ndarray]:
    """Reads MNIST from a `.npz` archive or from a folder of IDX files."""
    if path.is_dir():
        return read_idx_folder(path)
    return read_npz(path)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Reads and checks a Keras-style `mnist.npz`, never unpickling anything."""
    try:
        with open(path, "rb") as handle:
            start = handle.read(4)
    except OSError as error:
        raise DataError(f"{path} could not be read ({error.strerror}).") from None
    if start != b"PK\x03\x04":
        raise DataError(
            f"{path} is not a readable .npz archive (it is {'empty' if not start else 'not a zip file'}). "
            "Give Keras's mnist.npz or a folder of the four MNIST IDX files."
        )
    try:
        with zipfile.ZipFile(path) as archive:
            members = {name.removesuffix(".npy"): name for name in archive.namelist()}
            missing = [key for key in NPZ_KEYS if key not in members]
            if missing:
                raise DataError(
                    f"{path} is not an MNIST archive: it lacks the array(s) {', '.join(missing)} "
                    f"(it holds {', '.join(members) or 'nothing'}). Expected the keys "
                    f"{', '.join(NPZ_KEYS)}, as in Keras's mnist.npz."
                )
            arrays = {key: _read_member(archive, members[key], path) for key in NPZ_KEYS}
    except DataError:
        raise
    except ValueError as error:  # A member that is not a .npy array.
        raise DataError(
            f"{path} is not a readable .npz archive ({error}). "
            "Give Keras's mnist.npz or a folder of the four MNIST IDX files."
        ) from None
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, zlib.error) as error:
        raise DataError(
            f"{path} is not a readable .npz archive; it may be truncated or corrupt ({error}). "
            "Download it again or point digitlab at another copy."
        ) from None
    check_arrays(arrays, str(path))
    return arrays


def _read_member(archive: zipfile.ZipFile, name: str, path: Path) -> np.ndarray:
    """One .npy member of an archive, read-only over its bytes, never unpickled.

    The member is inflated in one call, with Python's lock let go (as `archive.read` does). `np.load` reads a
    member 256 KB at a time, letting the lock go a few times for each piece; in `digitlab train` it runs in a
    thread beside Keras's import, and each time it took the lock back it waited for the import's turn to end:
    reading mnist.npz took 0.9-1.3 s there against 0.25 alone, and the start waited for it (docs/engine.md,
    "The fourth round")."""
    raw = archive.read(name)
    stream = io.BytesIO(raw)
    version = np.lib.format.read_magic(stream)
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        raise DataError(
            f"{path}: {name} is in .npy format version {version[0]}.{version[1]}, which digitlab does not read. "
            "Save the arrays with numpy.savez, as Keras's mnist.npz is."
        )
    shape, fortran_order, dtype = readers[version](stream)
    if dtype.hasobject:
        raise DataError(
            f"{path} holds pickled Python objects, which digitlab never loads. "
            "Use an archive of plain uint8 arrays, like Keras's mnist.npz."
        )
    count, offset = int(np.prod(shape, dtype=np.int64)), stream.tell()
    if len(raw) - offset != count * dtype.itemsize:
        raise DataError(
            f"{path}: {name} holds {len(raw) - offset} bytes of data where its header promises "
            f"{count * dtype.itemsize} (shape {shape}, {dtype}); the archive may be truncated or corrupt. "
            "Download it again or point digitlab at another copy."
        )
    array = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
    return array.reshape(shape, order="F" if fortran_order else "C")


def read_idx_folder(folder: Path) -> dict[str, np.ndarray]:
    """Reads the four MNIST IDX files (plain or `.gz`) from a folder."""
    arrays = {}
    for key, stem in IDX_FILES.items():
        candidates = [folder / stem, folder / f"{stem}.gz"]
        found = next((candidate for candidate in candidates if candidate.is_file()), None)
        if found is None:
            raise DataError(
                f"{folder} holds no {stem} (or {stem}.gz). A folder of MNIST IDX files needs all "
                f"four: {', '.join(IDX_FILES.values())}."
            )
        arrays[key] = read_idx(found)
    check_arrays(arrays, str(folder))
    return arrays


def read_idx(path: Path) -> np.ndarray:
    """Parses one IDX file of unsigned bytes (MNIST's original format)."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise DataError(f"{path} could not be read or unzipped ({error}).") from None
    if len(raw) < 8:
        raise DataError(f"{path} is too short to be an IDX file ({len(raw)} bytes).")
    magic = struct.unpack(">I", raw[:4])[0]
    rank = magic & 0xFF
    if rank not in _IDX_MAGIC or magic != _IDX_MAGIC[rank]:
        raise DataError(
            f"{path} is not an MNIST IDX file of unsigned bytes (magic number {magic:#010x}, "
            "expected 0x00000801 for labels or 0x00000803 for images)."
        )
    header = 4 + 4 * rank
    shape = struct.unpack(f">{rank}I", raw[4:header])
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise DataError(
            f"{path} is truncated or has extra bytes: its header promises shape {shape} "
            f"({expected} bytes) but the file has {len(raw)}."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def check_arrays(arrays: dict[str, np.ndarray], source: str) -> None:
    """Raises DataError unless the arrays have MNIST's shapes, dtype and label range."""
    for split in ("train", "test"):
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
            raise DataError(f"{source}: x_{split} has shape {images.shape}; MNIST images are (N, 28, 28).")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise DataError(
                f"{source}: y_{split} has shape {labels.shape} but there are "
                f"{images.shape[0]} images; expected one label per image."
            )
        if images.shape[0] == 0:
            raise DataError(f"{source}: x_{split} holds no images.")
        for name, array in ((f"x_{split}", images), (f"y_{split}", labels)):
            if array.dtype != np.uint8:
                raise DataError(f"{source}: {name} has dtype {array.dtype}; MNIST is uint8.")
        if labels.max() >= NUM_CLASSES:
            raise DataError(f"{source}: y_{split} holds the label {int(labels.max())}; digits are 0 to 9.")


def _download() -> dict[str, np.ndarray]:
    """Downloads MNIST through Keras (which checks the file hash) into Keras's cache."""
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    except Exception as error:  # Keras raises several kinds for network and hash failures.
        raise DataError(
            "MNIST is not on this machine and could not be downloaded "
            f"({type(error).__name__}: {error}). Give it in one of three ways: "
            f"pass --data PATH (a mnist.npz or a folder of the four IDX files), set the "
            f"{ENV_VAR} environment variable to that path, or put Keras's mnist.npz at "
            f"{keras_cache_path()}."
        ) from None
    arrays = dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    check_arrays(arrays, "the downloaded mnist.npz")
    return arrays


def fingerprint(arrays: dict[str, np.ndarray]) -> dict[str, str]:
    """SHA-256 of each array's raw bytes, as listed in the data's README, to record in runs."""
    # hashlib reads the array's own bytes (no copy) with Python's lock let go.
    return {key: hashlib.sha256(np.ascontiguousarray(arrays[key]).data).hexdigest() for key in NPZ_KEYS}


def to_inputs(images: np.ndarray, flat: bool = True) -> np.ndarray:
    """Turns uint8 images into network inputs: float32 in 0-1, as 784 vectors or 28x28x1."""
    images = np.asarray(images)
    inputs: np.ndarray
    if flat:
        inputs = images.reshape(len(images), 784).astype("float32")
    else:
        inputs = images.reshape(len(images), 28, 28, 1).astype("float32")
    inputs /= 255
    return inputs


def to_targets(labels: np.ndarray) -> np.ndarray:
    """One-hot labels, with Keras's own `to_categorical` as in the book."""
    import keras

    return keras.utils.to_categorical(labels, NUM_CLASSES).astype("float32")


def class_counts(labels: np.ndarray) -> np.ndarray:
    """The number of images of each digit 0-9."""
    return np.bincount(labels, minlength=NUM_CLASSES)


def prepare(arrays: dict[str, np.ndarray], validation: str = "test", train_limit: int | None = None, flat: bool = True):
    """`split`, then network inputs and one-hot targets: `(x, y), (x_valid, y_valid), test`.

    `test` stays raw uint8 images and labels (None unless `validation="holdout"`).
    """
    (x_train, y_train), (x_valid, y_valid), test = split(arrays, validation, train_limit)
    return ((to_inputs(x_train, flat), to_targets(y_train)), (to_inputs(x_valid, flat), to_targets(y_valid)), test)


# The prepared data of the latest `prepared` call, the inputs of the latest `prepared_inputs` call and the
# targets of the latest `prepared_targets` call, by their key: one entry each, so a process keeps one copy
# (`prepared` takes its inputs and targets from the other two).
_PREPARED: dict[tuple, tuple] = {}
_INPUTS: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
_TARGETS: dict[tuple, tuple] = {}


def prepared_key(loaded: Loaded, validation: str = "test", train_limit: int | None = None, flat: bool = True) -> tuple:
    """What `prepared` keeps its arrays by: the data's SHA-256s, the validation split, the limit and the shape."""
    return (tuple(sorted(loaded.sha256.items())), validation, train_limit, flat)


def prepared_inputs(loaded: Loaded, validation: str = "test", train_limit: int | None = None, flat: bool = True):
    """The network inputs of `prepared` (training, validation): the same read-only arrays, kept for the process."""
    key = prepared_key(loaded, validation, train_limit, flat)
    if key not in _INPUTS:
        _INPUTS.clear()
        (x_train, _), (x_valid, _), _ = split(loaded.arrays, validation, train_limit)
        inputs = (to_inputs(x_train, flat), to_inputs(x_valid, flat))
        for array in inputs:
            array.flags.writeable = False
        _INPUTS[key] = inputs
    return _INPUTS[key]


def prepared(loaded: Loaded, validation: str = "test", train_limit: int | None = None, flat: bool = True):
    """`prepare(loaded.arrays, ...)`, kept for the process and given again for the same data and split.

    The key is the data's SHA-256s, the validation split, the training limit and the shape, so
    changing any of them prepares afresh. The arrays are made read-only: runs share them, and the
    engine keeps the sparse rows it builds from them (`engine.sparse.cached_rows`) for as long as
    they live. A sweep's worker trains trial after trial on one copy; `digitlab serve` run after run.
    """
    key = prepared_key(loaded, validation, train_limit, flat)
    if key not in _PREPARED:
        _PREPARED.clear()  # The earlier data's arrays (and their sparse rows) go once no run holds them.
        x, x_valid = prepared_inputs(loaded, validation, train_limit, flat)
        (y, y_valid), test = prepared_targets(loaded, validation, train_limit)
        _PREPARED[key] = ((x, y), (x_valid, y_valid), test)
    return _PREPARED[key]


def prepared_targets(loaded: Loaded, validation: str = "test", train_limit: int | None = None):
    """The one-hot targets of `prepared` (training, validation) and its test pair: `((y, y_valid), test)`, the same
    read-only arrays, kept for the process. With `engine.sparse.prepared_rows` they are what the fast engine
    trains on where it takes rows in place of the float32 inputs (training.Session)."""
    key = prepared_key(loaded, validation, train_limit)
    if key not in _TARGETS:
        _TARGETS.clear()
        (_, y_train), (_, y_valid), test = split(loaded.arrays, validation, train_limit)
        y, y_valid = to_targets(y_train), to_targets(y_valid)  # As `prepare` makes them.
        for array in (y, y_valid):
            array.flags.writeable = False
        _TARGETS[key] = ((y, y_valid), test)
    return _TARGETS[key]


def split(arrays: dict[str, np.ndarray], validation: str = "test", train_limit: int | None = None):
    """Chooses the training, validation and test images for a run.

    `validation="test"` validates on MNIST's test images, as the book does (then
    there is no untouched test set). `validation="holdout"` keeps the last 10,000
    training images for validation and leaves the test images for one final check.
    Returns `(x_train, y_train), (x_valid, y_valid), test` with `test` None or a pair.
    """
    from digitlab.config import HOLDOUT_SIZE

    x_train, y_train = arrays["x_train"], arrays["y_train"]
    if validation == "test":
        valid, test = (arrays["x_test"], arrays["y_test"]), None
    elif validation == "holdout":
        if len(x_train) <= HOLDOUT_SIZE:
            raise DataError(
                f"--validation holdout needs more than {HOLDOUT_SIZE} training images; this data has {len(x_train)}."
            )
        valid = (x_train[-HOLDOUT_SIZE:], y_train[-HOLDOUT_SIZE:])
        x_train, y_train = x_train[:-HOLDOUT_SIZE], y_train[:-HOLDOUT_SIZE]
        test = (arrays["x_test"], arrays["y_test"])
    else:
        raise ValueError(f"Unknown validation {validation!r}; choose test or holdout.")
    if train_limit is not None:
        x_train, y_train = x_train[:train_limit], y_train[:train_limit]
    return (x_train, y_train), valid, test
