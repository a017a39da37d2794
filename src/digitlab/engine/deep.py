"""Whole epochs of nets with BatchNormalization (the book's deep net) in one C call: `_deep.c` through ctypes.

    from digitlab.engine import deep, sparse
    plan = deep.DeepPlan(network, arrays, model=0)       # the NumPy backend's stacked arrays, model 0's slice
    loss_sum, correct = deep.train_epoch(rows, y, labels, order, 128, plan, step=0, threads=2)

`numpy_backend.NumpyBackend` runs it where `supports(network)` is true and the sparse C kernel is
built: a dense net with at least one BatchNormalization, Adam or plain SGD, Dropout anywhere above
the first layer. It trains the state's arrays in place (weights, moving statistics, Adam's slots),
with `threads` threads sharing each batch (the same bits for any number), with the NumPy backend's
formulas (Keras's); `evaluate` validates it in C (`digitlab_infer_deep`, the browser's engine's
validation), the images shared between threads.
Dropout's masks are drawn in C from the network's Dropout seed and the step count (`_deep.c`), so
a resumed run draws the same ones; they are not Keras's, nor the NumPy path's.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np

from digitlab.engine import sparse, spec

OPTIMIZERS = {"sgd": 0, "adam": 1}
_ARRAYS = ("kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance")
_TRAINED = ("kernel", "bias", "gamma", "beta")
_bound = None


def supports(network: spec.NetworkSpec) -> bool:
    """True for the nets `_deep.c` trains: a BatchNormalization somewhere, Adam or plain SGD, activations
    and loss the C code knows, and no Dropout on the first layer's input."""
    optimizer = network.optimizer
    return (
        any(layer.norm for layer in network.dense)
        and (optimizer.name == "adam" or (optimizer.name == "sgd" and not optimizer.momentum))
        and network.loss in sparse.FUSED_LOSSES
        and all(layer.activation in sparse.FUSED_ACTIVATIONS for layer in network.dense)
        and not network.dense[0].dropout
    )


def _library():
    """The kernels' library, with this module's entry point declared (once)."""
    global _bound
    library = sparse._kernels()  # The one shared library that sparse.py loads (and its reason when it cannot).
    if _bound is not library:
        pointer, size = ctypes.c_void_p, ctypes.c_int64
        library.digitlab_train_epoch_deep_timed.argtypes = (
            [pointer] * 4
            + [size]
            + [pointer] * 3
            + [size] * 3
            + [pointer] * 6
            + [ctypes.c_int32, pointer, pointer, size, ctypes.c_uint32, ctypes.c_int32, ctypes.c_float]
            + [pointer, pointer, ctypes.c_int32, pointer]
        )
        library.digitlab_train_epoch_deep_timed.restype = ctypes.c_int
        library.digitlab_infer_deep.argtypes = (
            [pointer] * 6 + [size] * 2 + [pointer] * 4 + [ctypes.c_int32, ctypes.c_float] + [pointer] * 3
        )
        library.digitlab_infer_deep.restype = ctypes.c_int
        library.digitlab_deep_profile_phases.argtypes = []
        library.digitlab_deep_profile_phases.restype = ctypes.c_int
        _bound = library
    return library


class DeepPlan:
    """What `train_epoch` needs of model `model` of the stacked `arrays` (the NumPy backend's state): its
    layers, their BatchNormalization and Dropout settings, its optimizer, as `_deep.c` reads them."""

    def __init__(self, network: spec.NetworkSpec, arrays: dict[str, np.ndarray], model: int):
        if not supports(network):
            raise ValueError("The C deep-net epoch does not train this network; use the NumPy backend's steps.")
        dense, optimizer = network.dense, network.optimizer
        self.optimizer, self.rate = optimizer, np.float32(optimizer.learning_rate)
        self.units = np.array([dense[0].inputs] + [layer.units for layer in dense], np.int64)
        self.activations = np.array([sparse.FUSED_ACTIVATIONS[layer.activation] for layer in dense], np.int32)
        self.dropout = np.array([layer.dropout for layer in dense], np.float32)
        norms = [layer.norm or spec.NormSpec() for layer in dense]
        self.norm = np.array([(norm.momentum, 1.0 - norm.momentum, norm.epsilon) for norm in norms], np.float32)
        self.hyper = np.array([1 - optimizer.beta_1, 1 - optimizer.beta_2, optimizer.epsilon], np.float32)
        views: list[np.ndarray | None] = []
        moments: list[np.ndarray | None] = []
        for number, layer in enumerate(dense):
            for part in _ARRAYS:
                name = f"dense_{number}/{part}"
                views.append(arrays[name][model] if part in ("kernel", "bias") or layer.norm else None)
                if part in _TRAINED:
                    for slot in ("momentum", "velocity"):
                        key = f"{slot}/{name}"
                        moments.append(arrays[key][model] if key in arrays and optimizer.name == "adam" else None)
        for view in views + moments:
            if view is not None and (view.dtype != np.float32 or not view.flags.c_contiguous):
                raise ValueError("The C deep-net epoch needs C-contiguous float32 arrays.")
        self.arrays = (ctypes.c_void_p * len(views))(*[None if view is None else view.ctypes.data for view in views])
        self.slots = (ctypes.c_void_p * len(moments))(*[None if view is None else view.ctypes.data for view in moments])
        self.seed = int(arrays["dropout_seeds"][model]) if "dropout_seeds" in arrays else 0
        self.loss = sparse.FUSED_LOSSES[network.loss]
        self._keep = (views, moments)  # Keeps the arrays the pointers point into alive.

    def step_sizes(self, step: int, batches: int) -> np.ndarray:
        """Each batch's Adam alpha (numpy_backend.py's formula, in float32) or the SGD rate, from step `step`.

        beta ** t is taken in double precision and rounded once to float32, not with float32's `powf`: C
        libraries' `powf` differ in the last bit (glibc's has an FMA variant), a double `pow` rounded to
        float32 does not, so the browser's engine (engine-deep.js: Math.pow) draws the same step sizes."""
        if self.optimizer.name == "sgd":
            return np.full(batches, self.rate, np.float32)
        one, beta_1, beta_2 = np.float32(1), np.float32(self.optimizer.beta_1), np.float32(self.optimizer.beta_2)
        sizes = np.empty(batches, np.float32)
        for number in range(batches):
            count = np.float32(step + number + 1)
            power_1, power_2 = np.float32(float(beta_1) ** float(count)), np.float32(float(beta_2) ** float(count))
            sizes[number] = self.rate * np.sqrt(one - power_2) / (one - power_1)
        return sizes


def train_epoch(
    data: sparse.SparseRows,
    targets: np.ndarray,
    labels: np.ndarray,
    order: np.ndarray,
    batch_size: int,
    plan: DeepPlan,
    step: int,
    threads: int = 1,
    profile: np.ndarray | None = None,
) -> tuple[float, int]:
    """One epoch in C, in place on the plan's arrays, its first step numbered `step`: (loss sum, correct answers).
    `threads` threads share each batch (its rows; each sum over the rows runs in one order, so any number of
    threads gives the same bits). With `profile` (float64, at least `threads` x `profile_phases()`), each
    thread's seconds per phase (`timing.DEEP_PHASES`) are added to its row."""
    sparse.check_epoch_inputs(data, targets, labels, order, plan.units)
    threads = max(1, min(int(threads), 64))
    if profile is not None:
        sparse.check_profile(profile, threads, profile_phases())
    order = np.ascontiguousarray(order, np.int64)
    sizes = plan.step_sizes(step, -(-len(order) // batch_size))
    loss_sum, correct = ctypes.c_double(0.0), ctypes.c_int64(0)
    status = _library().digitlab_train_epoch_deep_timed(
        *data._pointers,
        data._levels_pointer,
        data.most_per_row,
        sparse._check(targets, np.float32),
        sparse._check(labels, np.int64),
        order.ctypes.data,
        len(order),
        int(batch_size),
        len(plan.activations),
        plan.units.ctypes.data,
        plan.activations.ctypes.data,
        plan.dropout.ctypes.data,
        plan.norm.ctypes.data,
        ctypes.cast(plan.arrays, ctypes.c_void_p),
        ctypes.cast(plan.slots, ctypes.c_void_p),
        OPTIMIZERS[plan.optimizer.name],
        sizes.ctypes.data,
        plan.hyper.ctypes.data,
        int(step),
        plan.seed % 2**32,
        plan.loss,
        float(spec.CROSSENTROPY_CLIP),
        ctypes.byref(loss_sum),
        ctypes.byref(correct),
        threads,
        None if profile is None else profile.ctypes.data,
    )
    if status != 0:
        raise MemoryError("The C deep-net epoch could not allocate its batch buffers.")
    return loss_sum.value, correct.value


def profile_phases() -> int:
    """How many phases `train_epoch` times for its profile (the C code's count: `timing.DEEP_PHASES`)."""
    return int(_library().digitlab_deep_profile_phases())


def evaluate(
    data: sparse.SparseRows, targets: np.ndarray, labels: np.ndarray, plan: DeepPlan, threads: int = 1
) -> tuple[float, int]:
    """Validation of the plan's net on every row of `data` in C, each BatchNormalization with its moving
    statistics: (the loss sum, the correct answers). `threads` Python threads take a contiguous share of
    the images each (the C call releases the GIL); each image's loss is summed here in image order, so
    the result does not depend on their number."""
    rows, classes = data.shape[0], int(plan.units[-1])
    if targets.shape != (rows, classes) or labels.shape != (rows,) or data.shape[1] != plan.units[0]:
        raise ValueError(f"evaluate: targets {targets.shape}, labels {labels.shape} and the data do not fit the net.")
    target_pointer, label_pointer = sparse._check(targets, np.float32), sparse._check(labels, np.int64)
    index = np.arange(rows, dtype=np.int64)
    row_losses = np.empty(rows, np.float64)
    parts = max(1, min(int(threads), rows))
    bounds = [rows * part // parts for part in range(parts + 1)]
    corrects = [ctypes.c_int64(0) for _ in range(parts)]
    statuses = [0] * parts

    def run(part: int) -> None:
        first, count = bounds[part], bounds[part + 1] - bounds[part]
        statuses[part] = _library().digitlab_infer_deep(
            *data._pointers,
            target_pointer,
            label_pointer,
            index[first:].ctypes.data,
            count,
            len(plan.activations),
            plan.units.ctypes.data,
            plan.activations.ctypes.data,
            plan.norm.ctypes.data,
            ctypes.cast(plan.arrays, ctypes.c_void_p),
            plan.loss,
            float(spec.CROSSENTROPY_CLIP),
            None,
            row_losses[first:].ctypes.data,
            ctypes.byref(corrects[part]),
        )

    helpers = [threading.Thread(target=run, args=(part,)) for part in range(1, parts)]
    for helper in helpers:
        helper.start()
    run(0)
    for helper in helpers:
        helper.join()
    if any(statuses):
        raise MemoryError("The C deep-net validation could not allocate its buffers.")
    return float(row_losses.sum()), sum(correct.value for correct in corrects)
