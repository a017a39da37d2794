"""The sparse first layer: C kernels (`_kernels.c`) for images that are mostly zero pixels.

    from digitlab.engine import sparse
    if sparse.available():                         # else sparse.unavailable_reason() says why
        rows = sparse.SparseRows(x)                # CSR of the float32 images, built once
        transpose = sparse.Transpose(rows, batch_size, units)
        sparse.forward(rows, index, kernel, bias, out, transpose=transpose)   # out = x[index] @ kernel + bias
        sparse.weight_gradient(transpose, dz, grad)                           # grad = x[index].T @ dz
        plan = sparse.EpochPlan(kernels, biases, activations, loss, rate, clip)
        loss_sum, correct = sparse.train_epoch(rows, y, labels, order, 128, plan, threads=2)  # a whole epoch

81% of MNIST's pixels are zero, so the first layer's forward product and its
weight gradient need about a fifth of the dense multiply-adds. The kernels are
a plain shared library that `pip install` builds from `_kernels.c` (the sparse
first layer), `_dense.c` (the layers above it) and `_train.c` (whole epochs;
setup.py; the build is optional) and that this module loads with ctypes, which
releases the GIL during each call, so threads over seeds run on every core. For
plain SGD without Dropout, `train_epoch` runs a whole epoch of a dense net in one
call (every batch's layers, loss, backward pass and update), with threads sharing
each batch. A machine where the library could not be built, or a run with
`DIGITLAB_NO_KERNEL=1` in the environment, trains on the NumPy path instead, and
`unavailable_reason` says so. `DIGITLAB_KERNEL_SCALAR=1` keeps the library but
skips its AVX2 versions (the portable ones then run; the tests use it). Where
the CPU has AVX-512, the AVX2 path runs its first layer for 64 units in AVX-512
(the same bits); `DIGITLAB_KERNEL_AVX512=0` keeps it in AVX2.
"""

from __future__ import annotations

import copy
import ctypes
import importlib.machinery
import os
import weakref
from pathlib import Path

import numpy as np

LIBRARY_NAME = "_kernels"
DISABLE_VARIABLE = "DIGITLAB_NO_KERNEL"
SCALAR_VARIABLE = "DIGITLAB_KERNEL_SCALAR"
AVX512_VARIABLE = "DIGITLAB_KERNEL_AVX512"
# Above this fraction of nonzero inputs the dense BLAS product is the faster path.
MAX_DENSITY = 0.5

_library = None
_reason = None


def _load():
    global _library, _reason
    if _library is not None or _reason is not None:
        return _library
    if os.environ.get(DISABLE_VARIABLE, "") not in ("", "0"):
        _reason = f"the C kernel is disabled ({DISABLE_VARIABLE} is set)"
        return None
    here = Path(__file__).parent
    candidates = [here / f"{LIBRARY_NAME}{suffix}" for suffix in importlib.machinery.EXTENSION_SUFFIXES]
    path = next((candidate for candidate in candidates if candidate.is_file()), None)
    if path is None:
        _reason = (
            "the C kernel was not built at install time (no compiler, or not x86-64/Linux?); "
            "reinstall with a C compiler to get it"
        )
        return None
    try:
        library = ctypes.CDLL(str(path))
    except OSError as error:
        _reason = f"the C kernel {path.name} could not be loaded ({error})"
        return None
    if not hasattr(library, "digitlab_handover_ns"):  # The newest entry point: a build older than this code.
        _reason = f"the C kernel {path.name} is older than this digitlab; rebuild it (pip install -e . or make setup)"
        return None
    pointer, size = ctypes.c_void_p, ctypes.c_int64
    library.digitlab_kernels_simd.argtypes = [ctypes.c_int]
    library.digitlab_kernels_simd.restype = ctypes.c_int
    library.digitlab_sparse_forward.argtypes = (
        [pointer] * 4 + [size] * 3 + [pointer] * 2 + [size, pointer, size, pointer, pointer]
    )
    library.digitlab_sparse_forward.restype = None
    library.digitlab_sparse_weight_gradient.argtypes = [pointer, pointer, size, pointer, size, pointer, pointer]
    library.digitlab_sparse_weight_gradient.argtypes += [ctypes.c_float]
    library.digitlab_sparse_weight_gradient.restype = None
    library.digitlab_train_epoch_levels.argtypes = (
        [pointer] * 4
        + [size]
        + [pointer] * 3
        + [size] * 3
        + [pointer] * 4
        + [ctypes.c_int32, ctypes.c_float, ctypes.c_float, size, pointer, pointer, pointer]
    )
    library.digitlab_train_epoch_levels.restype = ctypes.c_int
    library.digitlab_profile_phases.argtypes = []
    library.digitlab_profile_phases.restype = ctypes.c_int
    library.digitlab_csr_count.argtypes = [pointer, size, size, pointer]
    library.digitlab_csr_count.restype = size
    library.digitlab_csr_fill.argtypes = [pointer, size, size, pointer, pointer, pointer, pointer]
    library.digitlab_csr_fill.restype = ctypes.c_int32
    library.digitlab_csr_count_u8.argtypes = [pointer, size, size, pointer]
    library.digitlab_csr_count_u8.restype = size
    library.digitlab_csr_fill_u8.argtypes = [pointer, size, size, pointer, pointer, pointer, pointer]
    library.digitlab_csr_fill_u8.restype = ctypes.c_int32
    library.digitlab_read_bandwidth.argtypes = [pointer, size, size]
    library.digitlab_read_bandwidth.restype = ctypes.c_double
    library.digitlab_handover_ns.argtypes = [ctypes.c_int32, size]
    library.digitlab_handover_ns.restype = ctypes.c_double
    library.digitlab_evaluate.argtypes = (
        [pointer] * 6 + [size] * 2 + [pointer] * 4 + [ctypes.c_int32, ctypes.c_float, size, pointer, pointer]
    )
    library.digitlab_evaluate.restype = ctypes.c_int
    library.digitlab_kernels_avx512.argtypes = [ctypes.c_int]
    library.digitlab_kernels_avx512.restype = ctypes.c_int
    library.digitlab_kernels_simd(int(os.environ.get(SCALAR_VARIABLE, "") not in ("", "0")))
    library.digitlab_kernels_avx512(int(os.environ.get(AVX512_VARIABLE, "") != "0"))
    _library = library
    return _library


FUSED_ACTIVATIONS = {"linear": 0, "sigmoid": 1, "relu": 2, "tanh": 3, "softmax": 4}
FUSED_LOSSES = {"mean_squared_error": 0, "categorical_crossentropy": 1}


def reload() -> None:
    """Forgets the loaded library, so that the next call re-reads DIGITLAB_NO_KERNEL and DIGITLAB_KERNEL_SCALAR."""
    global _library, _reason
    _library, _reason = None, None


def available() -> bool:
    """True when the C kernels are built, loadable and not disabled."""
    return _load() is not None


def unavailable_reason() -> str | None:
    """Why the kernels cannot run here, as a phrase; None when they can."""
    _load()
    return _reason


def simd() -> bool:
    """True when the kernels run their AVX2+FMA versions (else the portable C ones)."""
    library = _load()
    return bool(
        library is not None and library.digitlab_kernels_simd(int(os.environ.get(SCALAR_VARIABLE, "") not in ("", "0")))
    )


def avx512() -> bool:
    """True when the AVX2 path runs its first layer in AVX-512 (a CPU with AVX-512F, 64 units; the same bits)."""
    library = _load()
    return bool(
        library is not None
        and simd()
        and library.digitlab_kernels_avx512(int(os.environ.get(AVX512_VARIABLE, "") != "0"))
    )


def density(x: np.ndarray) -> float:
    """The fraction of nonzero entries of `x`."""
    return float(np.count_nonzero(x)) / max(x.size, 1)


class SparseRows:
    """A float32 matrix's rows in CSR form (row starts, column numbers, values), for the kernels.

    `SparseRows(x)` takes the matrix; `SparseRows.from_images(images)` the uint8 images that `data.to_inputs`
    would turn into it (the same rows, bit for bit, without the matrix). The fast engine's `fit` takes either
    kind of rows in place of the matrix where it trains whole epochs in C (`FastEngine.trains_from_rows`). Where
    every value is k / 255 in float32 for a byte k (uint8 images, or the inputs the book makes of them), `levels`
    holds each pixel's k (else None), which the training epochs' forward reads in place of the value."""

    def __init__(self, x: np.ndarray):
        x = np.ascontiguousarray(x, dtype=np.float32)
        self._build(x, "")

    @classmethod
    def from_images(cls, images: np.ndarray) -> SparseRows:
        """The rows of `data.to_inputs(images)` (flat), from the uint8 images: 4 bytes a pixel less new memory
        (188 MB for MNIST's training images, which this 2-core virtual machine's host hands over at 6 ms a MB
        for a process started a few seconds after the last: docs/engine.md, "Start-up")."""
        images = np.ascontiguousarray(images)
        if images.dtype != np.uint8:
            raise ValueError(f"SparseRows.from_images takes uint8 images, got {images.dtype}.")
        rows = cls.__new__(cls)
        rows._build(images.reshape(len(images), -1) if images.ndim > 1 else images, "_u8")
        return rows

    def _build(self, x: np.ndarray, kind: str) -> None:
        if x.ndim != 2 or x.shape[1] > np.iinfo(np.uint16).max:
            raise ValueError(f"SparseRows takes a matrix of at most 65535 columns, got shape {x.shape}.")
        self.shape = x.shape
        # In C, two passes over the matrix (NumPy's nonzero and gather took 0.6 s for MNIST's 60,000 images).
        library = _kernels()
        count, fill = getattr(library, f"digitlab_csr_count{kind}"), getattr(library, f"digitlab_csr_fill{kind}")
        self.starts = np.empty(len(x) + 1, np.int64)
        total = count(x.ctypes.data, len(x), x.shape[1], self.starts.ctypes.data)
        self.cols = np.empty(total, np.uint16)  # Two bytes a pixel: the kernels read less memory.
        self.vals = np.empty(total, np.float32)
        # Each pixel's level too, where every value is one's (vals[j] is levels[j] / 255 in float32: uint8 images,
        # or the inputs the book makes of them): a training batch's forward reads one byte a pixel in place of four
        # (digitlab_sparse_forward_levels).
        levels = np.empty(total, np.uint8)
        pointers = (self.starts.ctypes.data, self.cols.ctypes.data, self.vals.ctypes.data, levels.ctypes.data)
        every_value_a_level = fill(x.ctypes.data, len(x), x.shape[1], *pointers)
        self.levels = levels if every_value_a_level else None
        self._levels_pointer = None if self.levels is None else self.levels.ctypes.data
        self.most_per_row = int(np.diff(self.starts).max()) if len(x) else 0
        self._pointers = (self.starts.ctypes.data, self.cols.ctypes.data, self.vals.ctypes.data)

    def __len__(self) -> int:
        return int(self.shape[0])

    def without_levels(self) -> SparseRows:
        """These rows (the same arrays) with no levels: the kernels read the values (the same results; tests and
        measurements compare the two)."""
        rows = copy.copy(self)
        rows.levels, rows._levels_pointer = None, None
        return rows

    def density(self) -> float:
        """The fraction of the matrix's entries that are nonzero (as `density` counts them)."""
        return float(len(self.vals)) / max(self.shape[0] * self.shape[1], 1)


# The sparse rows of read-only arrays, by the array's identity (`cached_rows`); an entry goes with its array.
_CACHED: dict[int, tuple[weakref.ref, SparseRows]] = {}


def cached_rows(x: np.ndarray) -> SparseRows:
    """`SparseRows(x)`, built once for as long as `x` lives when `x` is a read-only float32 matrix.

    A read-only array cannot change under the rows (its data belongs to it, or to a read-only
    base), so the rows built for it hold for every later run that trains on the same array: the
    arrays `data.prepared` keeps for a process (a sweep's worker trains trial after trial on them,
    the page's server run after run). Any other array gets rows of its own each time.
    """
    own = x.base is None or (isinstance(x.base, np.ndarray) and not x.base.flags.writeable)
    if x.flags.writeable or not own or x.dtype != np.float32 or not x.flags.c_contiguous:
        return SparseRows(x)
    entry = _CACHED.get(id(x))
    if entry is not None and entry[0]() is x:
        return entry[1]
    rows = SparseRows(x)
    key = id(x)

    def forget(_: weakref.ref) -> None:
        _CACHED.pop(key, None)

    _CACHED[key] = (weakref.ref(x, forget), rows)
    return rows


def cached_density(x: np.ndarray) -> float:
    """`density(x)`, from the rows `cached_rows` holds for `x` where it holds some (they count the same)."""
    entry = _CACHED.get(id(x))
    if entry is not None and entry[0]() is x:
        return entry[1].density()
    return density(x)


# The rows of the latest `prepared_rows` call, by its key (one entry: a process keeps one copy, as `data.prepared`).
_PREPARED_ROWS: dict[tuple, tuple[SparseRows, SparseRows]] = {}


def prepared_rows(loaded, validation: str = "test", train_limit: int | None = None) -> tuple[SparseRows, SparseRows]:
    """The rows of `data.prepared`'s flat inputs (training, validation), built from the uint8 images without
    the float32 inputs (`SparseRows.from_images`), kept for the process for the same data and split."""
    from digitlab import data

    key = data.prepared_key(loaded, validation, train_limit, flat=True)
    if key not in _PREPARED_ROWS:
        _PREPARED_ROWS.clear()
        (x_train, _), (x_valid, _), _ = data.split(loaded.arrays, validation, train_limit)
        _PREPARED_ROWS[key] = (SparseRows.from_images(x_train), SparseRows.from_images(x_valid))
    return _PREPARED_ROWS[key]


def forget_cached_rows() -> None:
    """Empties `cached_rows`'s and `prepared_rows`'s caches (the next run builds its rows again: for measuring)."""
    _CACHED.clear()
    _PREPARED_ROWS.clear()


class Transpose:
    """A batch's transpose, built by `forward` and used by `weight_gradient`: one per model in training.

    Pixel p's entries are `offsets[p]` ... `offsets[p + 1] - 1` of `entries`, each the batch row
    it is nonzero in (int32) and its value (float32), in row order.
    """

    ENTRY = np.dtype([("row", np.int32), ("value", np.float32)])

    def __init__(self, data: SparseRows, rows: int, units: int):
        capacity = max(1, data.most_per_row * rows)
        self.capacity, self.inputs = capacity, data.shape[1]
        self.offsets = np.empty(data.shape[1] + 1, np.int32)
        self.entries = np.empty(capacity, self.ENTRY)
        self.gradient_row = np.empty(units, np.float32)  # Scratch for the fused SGD update.
        self._pointers = (self.offsets.ctypes.data, self.entries.ctypes.data)


def _kernels():
    library = _library if _library is not None else _load()
    if library is None:
        raise RuntimeError(f"The sparse C kernel cannot run: {_reason}.")
    return library


def _check(array: np.ndarray, dtype) -> int:
    if array.dtype != dtype or not array.flags.c_contiguous:
        raise ValueError(f"The C kernel needs C-contiguous {np.dtype(dtype).name} arrays, got {array.dtype}.")
    return array.ctypes.data


def forward(
    data: SparseRows,
    index: np.ndarray | None,
    kernel: np.ndarray,
    bias: np.ndarray,
    out: np.ndarray,
    first: int = 0,
    transpose: Transpose | None = None,
) -> None:
    """out = data[index] @ kernel + bias (index None: rows first, first + 1, ..., first + len(out) - 1).

    With `transpose`, also builds the batch's transpose for `weight_gradient`.
    """
    rows, units = out.shape
    inputs = data.shape[1]
    if kernel.shape != (inputs, units) or bias.shape != (units,):
        raise ValueError(f"forward: kernel {kernel.shape} and bias {bias.shape} do not fit out {out.shape}.")
    if index is not None:
        _check(index, np.intp)
        if len(index) != rows:
            raise ValueError("index and out must have the same number of rows.")
    elif not 0 <= first <= data.shape[0] - rows:
        raise ValueError("The rows asked for are outside the data.")
    if transpose is not None and (transpose.inputs != inputs or rows * data.most_per_row > transpose.capacity):
        raise ValueError("forward: the transpose buffers are too small for this batch.")
    _kernels().digitlab_sparse_forward(
        *data._pointers,
        None if index is None else index.ctypes.data,
        first,
        rows,
        inputs,
        _check(kernel, np.float32),
        _check(bias, np.float32),
        units,
        _check(out, np.float32),
        0,
        *(transpose._pointers if transpose is not None else (None, None)),
    )


def weight_gradient(transpose: Transpose, dz: np.ndarray, grad: np.ndarray) -> None:
    """grad = x_batch.T @ dz, for the batch whose transpose `forward` built, over its nonzero pixels only."""
    units = dz.shape[1]
    if grad.shape != (transpose.inputs, units):
        raise ValueError(f"weight_gradient: grad {grad.shape} does not fit dz {dz.shape}.")
    _kernels().digitlab_sparse_weight_gradient(
        *transpose._pointers, transpose.inputs, _check(dz, np.float32), units, _check(grad, np.float32), None, 0.0
    )


def sgd_update(transpose: Transpose, dz: np.ndarray, weight: np.ndarray, rate: np.float32) -> None:
    """weight -= (x_batch.T @ dz) * rate, as Keras's plain SGD, on the rows of the pixels the batch touches."""
    units = dz.shape[1]
    if weight.shape != (transpose.inputs, units) or len(transpose.gradient_row) != units:
        raise ValueError(f"sgd_update: weight {weight.shape} does not fit dz {dz.shape}.")
    _kernels().digitlab_sparse_weight_gradient(
        *transpose._pointers,
        transpose.inputs,
        _check(dz, np.float32),
        units,
        transpose.gradient_row.ctypes.data,
        _check(weight, np.float32),
        float(rate),
    )


class EpochPlan:
    """What `train_epoch` needs of one model besides the data: its layers, loss and SGD rate, as C sees them."""

    def __init__(
        self,
        kernels: list[np.ndarray],
        biases: list[np.ndarray],
        activations: list[str],
        loss: str,
        rate: float,
        clip: float,
    ):
        if len(kernels) != len(biases) or len(kernels) != len(activations) or not kernels:
            raise ValueError("train_epoch needs one kernel, bias and activation per layer.")
        widths = [kernels[0].shape[0]] + [kernel.shape[1] for kernel in kernels]
        for number, (kernel, bias) in enumerate(zip(kernels, biases, strict=True)):
            if kernel.shape != (widths[number], widths[number + 1]) or bias.shape != (widths[number + 1],):
                raise ValueError(
                    f"train_epoch: layer {number}'s kernel {kernel.shape} and bias {bias.shape} do not chain."
                )
            _check(kernel, np.float32)
            _check(bias, np.float32)
        self.units = np.array(widths, np.int64)
        self.activations = np.array([FUSED_ACTIVATIONS[name] for name in activations], np.int32)
        self.kernels = (ctypes.c_void_p * len(kernels))(*[kernel.ctypes.data for kernel in kernels])
        self.biases = (ctypes.c_void_p * len(biases))(*[bias.ctypes.data for bias in biases])
        self.loss, self.rate, self.clip = FUSED_LOSSES[loss], float(rate), float(clip)
        self._arrays = (kernels, biases)  # Keeps the arrays the pointers point into alive.


def check_epoch_inputs(data: SparseRows, targets: np.ndarray, labels: np.ndarray, order, units) -> None:
    """Refuses (ValueError) an epoch's targets, labels or order that do not fit `data` and a net of `units`."""
    if targets.shape != (data.shape[0], int(units[-1])) or labels.shape != (data.shape[0],):
        raise ValueError(f"train_epoch: targets {targets.shape} and labels {labels.shape} do not fit the data.")
    if len(order) and not (0 <= order.min() and order.max() < data.shape[0]):
        raise ValueError(f"train_epoch: the order names images outside 0 ... {data.shape[0] - 1}.")
    if data.shape[1] != units[0]:
        raise ValueError(f"train_epoch: the data has {data.shape[1]} inputs, the first layer {units[0]}.")


def train_epoch(
    data: SparseRows,
    targets: np.ndarray,
    labels: np.ndarray,
    order: np.ndarray,
    batch_size: int,
    plan: EpochPlan,
    threads: int = 1,
    profile: np.ndarray | None = None,
) -> tuple[float, int]:
    """One epoch of plain SGD in C, in place on the plan's arrays: (the loss sum, the correct answers).

    The batches are `order`'s consecutive slices of `batch_size` images; the formulas are
    the NumPy backend's (Keras's), the first layer on the nonzero pixels only. `threads`
    threads share each batch (its rows for the forward pass, its pixels for the first layer's
    update); every sum runs in the same order, so the results do not depend on their number.
    With `profile` (a float64 array of at least `threads` x `profile_phases()`), each thread's
    seconds in each phase of the epoch are added to its row (`timing.PHASES` names them).
    """
    check_epoch_inputs(data, targets, labels, order, plan.units)
    threads = max(1, min(int(threads), 64))
    if profile is not None:
        check_profile(profile, threads, profile_phases())
    loss_sum, correct = ctypes.c_double(0.0), ctypes.c_int64(0)
    status = _kernels().digitlab_train_epoch_levels(
        *data._pointers,
        data._levels_pointer,
        data.most_per_row,
        _check(targets, np.float32),
        _check(labels, np.int64),
        _check(order, np.int64),
        len(order),
        int(batch_size),
        len(plan.activations),
        plan.units.ctypes.data,
        plan.activations.ctypes.data,
        ctypes.cast(plan.kernels, ctypes.c_void_p),
        ctypes.cast(plan.biases, ctypes.c_void_p),
        plan.loss,
        plan.rate,
        plan.clip,
        threads,
        ctypes.byref(loss_sum),
        ctypes.byref(correct),
        None if profile is None else _check(profile, np.float64),
    )
    if status != 0:
        raise MemoryError("The C training epoch could not allocate its batch buffers.")
    return loss_sum.value, correct.value


def evaluate(
    data: SparseRows, targets: np.ndarray, labels: np.ndarray, plan: EpochPlan, threads: int = 1
) -> tuple[float, int]:
    """Validation of the plan's net on every row of `data`, in C: (the loss sum, the correct answers).

    Each image's loss is computed as Keras computes it and summed here in image order, so
    the result does not depend on the number of `threads` that share the images.
    """
    if targets.shape != (data.shape[0], int(plan.units[-1])) or labels.shape != (data.shape[0],):
        raise ValueError(f"evaluate: targets {targets.shape} and labels {labels.shape} do not fit the data.")
    if data.shape[1] != plan.units[0]:
        raise ValueError(f"evaluate: the data has {data.shape[1]} inputs, the first layer {plan.units[0]}.")
    index = np.arange(data.shape[0], dtype=np.int64)
    row_losses, correct = np.empty(data.shape[0], np.float64), ctypes.c_int64(0)
    status = _kernels().digitlab_evaluate(
        *data._pointers,
        _check(targets, np.float32),
        _check(labels, np.int64),
        index.ctypes.data,
        len(index),
        len(plan.activations),
        plan.units.ctypes.data,
        plan.activations.ctypes.data,
        ctypes.cast(plan.kernels, ctypes.c_void_p),
        ctypes.cast(plan.biases, ctypes.c_void_p),
        plan.loss,
        plan.clip,
        max(1, min(int(threads), 64)),
        row_losses.ctypes.data,
        ctypes.byref(correct),
    )
    if status != 0:
        raise MemoryError("The C validation could not allocate its buffers.")
    return float(row_losses.sum()), correct.value


def check_profile(profile: np.ndarray, threads: int, phases: int) -> None:
    """Raises ValueError unless `profile` is a C-contiguous float64 array of `threads` (or more) x `phases`."""
    if profile.dtype != np.float64 or profile.ndim != 2 or profile.shape[0] < threads or not profile.flags.c_contiguous:
        raise ValueError(f"train_epoch: the profile needs float64 rows for {threads} threads, got {profile.shape}.")
    if profile.shape[1] != phases:
        raise ValueError(f"train_epoch: the profile needs {phases} phases, got {profile.shape[1]}.")


def profile_phases() -> int:
    """How many phases `train_epoch` times for its profile (the C code's count)."""
    return int(_kernels().digitlab_profile_phases())


def handover_ns(chunks: int = 8, limit_s: float = 0.002) -> float | None:
    """How far apart two threads' cores are now: nanoseconds for a cache line to go to another thread and back
    (the least over `chunks` chunks of 16 round trips, `_train.c`'s digitlab_handover_ns), or None when it
    could not be measured (no C kernel, no thread, or no answer within `limit_s`: the other core is busy)."""
    library = _load()
    if library is None:
        return None
    ns = float(library.digitlab_handover_ns(chunks, int(limit_s * 1e9)))
    return ns if ns > 0 else None


def read_bandwidth(size: int, repeats: int = 20) -> float:
    """One core's read bandwidth (bytes per second) on a working set of `size` bytes, with the kernels' loads."""
    size = max(256, size - size % 256)
    data = np.ones(size // 4, np.float32)
    return float(_kernels().digitlab_read_bandwidth(data.ctypes.data, size, repeats))
