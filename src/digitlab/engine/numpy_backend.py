"""The NumPy backend of `FastEngine` (name `fast-numpy`): the layers at BLAS level, the CPU path.

`FastEngine(models, config, backend="numpy")` (or `backend="auto"` without a GPU)
builds a `NumpyBackend` here; nothing else should need it. It keeps the N models'
weights and optimizer slots stacked in float32 arrays, updated in place, and runs
each step as batched matrix products over the N models, on buffers allocated once
per batch size (`_Workspace`), with Keras's own formulas (JAX backend) for the
activations, the loss and the optimizer update. All its products run inside
`blas.BlasThreads(threads)`.

Where the C kernel is built (`sparse.py`), the first layer runs on the images'
nonzero pixels only: its forward product, and its weight gradient through each
batch's transpose (with plain SGD, the C kernel also applies the update, to the
weight rows the batch touches). With plain SGD and no Dropout the C kernel runs
whole epochs instead (`sparse.train_epoch`: no Python between batches), one call
per model, with `epoch_threads` threads sharing each batch; nets with
BatchNormalization run whole epochs in `_deep.c` (`deep.train_epoch`, the same
threads sharing each batch); `DIGITLAB_NO_FUSED=1` keeps the per-batch steps. BatchNormalization's
per-batch steps and its evaluation (moving statistics) are `norm.py`'s. (The module
is over 450 lines: the steps, the loss, the optimizers and evaluation share one
workspace and its views, which a split would pass around whole.) `seeds.SeedThreads` runs N seeds as one `NumpyBackend`
per core, in threads.

It runs past 450 lines as one numeric concern: a step's forward and backward passes read the
same stacked arrays and workspace, each beside the other as llm.c keeps them, and a split would
part a layer's gradient from its forward product.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import time
from typing import Any

import numpy as np

from digitlab.engine import activations, blas, cores, deep, norm, sparse, spec, timing

# Set to 1 to keep the per-batch NumPy steps even where the C kernel could run whole epochs.
NO_FUSED_VARIABLE = "DIGITLAB_NO_FUSED"


@dataclasses.dataclass(frozen=True)
class FirstLayerPlan:
    """How the first layer runs, decided once for the data (`NumpyBackend.plan_first_layer`).

    `kernel` names the sparse C kernel's version ("AVX-512", "AVX2" or "portable C"), or is None where
    NumPy's dense product runs it, for `reason`. `whole_epochs`: plain SGD without Dropout runs
    whole epochs in one C call, on up to `threads` threads per network. `rows` holds the (train,
    validation) images in CSR form for the kernel, once the data is known. `sentence()` says it all
    in words, as the engine prints it.
    """

    kernel: str | None
    reason: str = ""
    density: float | None = None
    whole_epochs: bool = False
    threads: int = 1
    rows: tuple[sparse.SparseRows, sparse.SparseRows | None] | None = dataclasses.field(
        default=None, repr=False, compare=False
    )

    def sentence(self) -> str:
        """How the first layer runs, in words (the engine prints it)."""
        if self.kernel is None:
            return f"NumPy only: {self.reason}"
        what = "whole epochs in C, sparse first layer" if self.whole_epochs else "sparse first layer in C"
        share = "" if self.density is None else f"; {self.density:.0%} of the inputs are nonzero"
        sentence = f"{what} ({self.kernel}{share})"
        if self.whole_epochs and self.threads > 1:
            sentence += f"; up to {self.threads} threads per network, as many as cores are free"
        return sentence


class _Workspace:
    """Preallocated float32 buffers for one step over `rows` examples of each of the models."""

    def __init__(self, network: spec.NetworkSpec, lead: tuple, rows: int, training: bool = True):
        def buffer(width, dtype=np.float32):
            return np.empty(lead + (rows, width), dtype)

        classes = network.dense[-1].units
        self.rows = rows
        self.inputs: Any = buffer(network.dense[0].inputs) if training else None
        self.targets = buffer(classes)
        self.labels = np.empty(lead + (rows,), np.intp)
        self.predicted = np.empty(lead + (rows,), np.intp)
        self.hits = np.empty(lead + (rows,), bool)
        self.outputs = [buffer(layer.units) for layer in network.dense]
        self.gradients = [buffer(layer.units) for layer in network.dense]
        self.scratch = [buffer(layer.units) for layer in network.dense]
        self.row = buffer(1)
        self.row_sums = buffer(1)
        self.classes = [buffer(classes) for _ in range(2)]
        self.layer_inputs: list[Any] = [None] * len(network.dense)
        dropout = [training and layer.dropout for layer in network.dense]
        self.dropped: list[Any] = [
            buffer(layer.inputs) if rate else None for layer, rate in zip(network.dense, dropout, strict=True)
        ]
        self.uniform: list[Any] = [
            buffer(layer.inputs) if rate else None for layer, rate in zip(network.dense, dropout, strict=True)
        ]
        self.masks: list[Any] = [
            buffer(layer.inputs, bool) if rate else None for layer, rate in zip(network.dense, dropout, strict=True)
        ]
        # A BatchNormalization after a layer: its buffers for a step (norm.Buffers), else None.
        self.norm_buffers: list[Any] = [
            norm.Buffers(lead, rows, layer.units) if training and layer.norm else None for layer in network.dense
        ]


PAGE = 4096


def page_aligned(value) -> np.ndarray:
    """A copy of `value` whose data starts on a 4096-byte boundary. The C epochs stream the weights and Adam's
    slots side by side, 32 or 64 bytes at a time; NumPy's own copies start wherever its allocator puts them (16,
    32 or 48 bytes into a 64-byte line in the processes looked at). Measured on the deep net, process by process
    (two threads): the first layer's Adam update took 9-10 ms an epoch where the arrays were 32-byte aligned,
    15-16 ms where one was 16 or 48 bytes off, 71 ms in one process (its weights 16 bytes short of a page
    boundary); page-aligned, 9-10 ms in every process."""
    value = np.asarray(value)
    raw = np.empty(value.nbytes + PAGE, np.uint8)
    start = -raw.ctypes.data % PAGE
    copy = raw[start : start + value.nbytes].view(value.dtype).reshape(value.shape)
    copy[...] = value
    return copy


class NumpyBackend:
    """Trains the stacked models with NumPy over OpenBLAS; weights live in `self.arrays`."""

    def __init__(
        self,
        network: spec.NetworkSpec,
        batch_size: int,
        state: dict,
        threads: int | None,
        copy: bool = True,
        epoch_threads: int = 1,
        follow_speed: bool = True,
    ):
        # threads: OpenBLAS's, for the NumPy products; epoch_threads: the C kernel's, within one model's epoch.
        self.network, self.batch_size, self.threads, self.epoch_threads = network, batch_size, threads, epoch_threads
        # copy=False: train the given arrays in place (SeedThreads hands each thread views of its models).
        self.arrays = {name: page_aligned(value) if copy else value for name, value in state.items()}
        self.count = len(self.arrays["dense_0/kernel"])
        # With one model the 2-D views skip NumPy's stacked-matmul loop; they share memory.
        self.lead = () if self.count == 1 else (self.count,)
        self.names = spec.trained_names(network)
        self.grads = {name: np.zeros_like(self.arrays[name]) for name in self.names}
        self.temps = {name: np.zeros_like(self.arrays[name]) for name in self.names}
        self.workspaces: dict[int, _Workspace] = {}
        self.sparse_rows: tuple[sparse.SparseRows, sparse.SparseRows | None] | None = None
        self.transposes: list[sparse.Transpose] = []  # Per batch, one per model (sparse per-batch path).
        # Plain SGD on a sparse first layer: the C kernel updates the touched weight rows itself.
        self.fused_sgd = network.optimizer.name == "sgd" and not network.optimizer.momentum
        # follow_speed: the thread count follows the epochs' measured times too, not only the load (cores.py).
        self.free_cores = cores.FreeCores(follow_speed, handover=sparse.handover_ns) if epoch_threads > 1 else None
        # Epochs per number of threads a network ran on (the C epoch; the per-batch steps count as one).
        self.thread_counts: collections.Counter = collections.Counter()
        self.profile_rows: np.ndarray | None = None  # Where the C epoch adds its phases' seconds (profile_into).
        self.first_layer = self.plan_first_layer()  # Made again with the data, in `start`.
        # Views made once (the arrays are only ever updated in place), to keep the step loop lean.
        layers_range = range(len(network.dense))
        self.kernels = [self._view(self.arrays[f"dense_{index}/kernel"]) for index in layers_range]
        self.kernels_transposed = [np.swapaxes(kernel, -1, -2) for kernel in self.kernels]
        self.biases = [self._view(self.arrays[f"dense_{index}/bias"])[..., None, :] for index in layers_range]
        self.kernel_grads = [self._view(self.grads[f"dense_{index}/kernel"]) for index in layers_range]
        self.bias_grads = [self._view(self.grads[f"dense_{index}/bias"]) for index in layers_range]
        # A BatchNormalization's arrays and gradients where one follows the layer (norm.Arrays), else None.
        self.norms: list[Any] = [
            norm.Arrays.of(self.arrays, self.grads, index, self._view) if network.dense[index].norm else None
            for index in layers_range
        ]

    def _view(self, array):
        return array[0] if self.count == 1 else array

    def state(self) -> dict:
        """The weights, optimizer state and step count (a checkpoint's), as the arrays themselves."""
        return self.arrays

    def load(self, state: dict) -> None:
        """Copies the arrays of `state` (a checkpoint's) into the current ones."""
        for name, value in state.items():
            self.arrays[name][...] = value

    @property
    def path(self) -> str:
        """How the first layer runs, in words (the engine prints it): `first_layer`'s sentence."""
        return self.first_layer.sentence()

    @property
    def kernel(self) -> str:
        """The first layer's code: the sparse C kernel's version ("AVX-512", "AVX2", "portable C") or "NumPy"."""
        return self.first_layer.kernel or "NumPy"

    def start(self, x, y, validation, first_layer: FirstLayerPlan | None = None) -> None:
        """Takes the data; `first_layer` shares the plan (and its CSR rows) that another backend made for it."""
        self.x, self.y, self.labels = x, y, np.argmax(y, axis=1)
        self.validation: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        if validation is not None:
            self.validation = (validation[0], validation[1], np.argmax(validation[1], axis=1))
        self.first_layer = first_layer if first_layer is not None else self.plan_first_layer(x, validation)
        self.sparse_rows = self.first_layer.rows
        if isinstance(x, sparse.SparseRows) and not (self.first_layer.whole_epochs and self.sparse_rows is not None):
            raise ValueError(
                "Rows (sparse.SparseRows) train only where the C kernel runs whole epochs "
                f"(FastEngine.trains_from_rows); give the float32 inputs "
                f"({self.first_layer.reason or 'this net runs batch by batch'})."
            )
        self.plans = None
        self.deep_plans = None
        if self.first_layer.whole_epochs and self.sparse_rows is not None and deep.supports(self.network):
            # BatchNormalization: whole epochs in _deep.c (threads share each batch), validation in its
            # digitlab_infer_deep (deep.evaluate: the threads share the images).
            self.deep_plans = [deep.DeepPlan(self.network, self.arrays, k) for k in range(self.count)]
        elif self.first_layer.whole_epochs and self.sparse_rows is not None:
            self.plans = [
                sparse.EpochPlan(
                    [self.arrays[f"dense_{number}/kernel"][k] for number in range(len(self.network.dense))],
                    [self.arrays[f"dense_{number}/bias"][k] for number in range(len(self.network.dense))],
                    [layer.activation for layer in self.network.dense],
                    self.network.loss,
                    self.network.optimizer.learning_rate,  # Rounded to float32 on its way into C.
                    spec.CROSSENTROPY_CLIP,
                )
                for k in range(self.count)
            ]
        elif self.sparse_rows is not None and not self.transposes:
            # Per batch: each model's transpose of the batch, for the C kernel's weight update.
            units = self.network.dense[0].units
            self.transposes = [sparse.Transpose(self.sparse_rows[0], self.batch_size, units) for _ in range(self.count)]

    @property
    def profile_threads(self) -> int:
        """The rows `profile_into` needs: one per thread of a network's C epoch."""
        return self.epoch_threads

    @property
    def profile_names(self) -> tuple[str, ...]:
        """The C epoch's phases that `profile_into` times: the deep net's (`_deep.c`) or the shallow nets'."""
        return timing.DEEP_PHASES if deep.supports(self.network) else timing.PHASES

    def profile_into(self, rows: np.ndarray) -> None:
        """Times the C epoch's phases from now on, adding each thread's seconds to its row of `rows`."""
        self.profile_rows = rows

    def _threads_now(self) -> int:
        """epoch_threads, fewer while other programs keep cores busy or one thread measures faster (cores.py):
        the same bits for any count."""
        return self.free_cores.threads(self.epoch_threads) if self.free_cores is not None else 1

    def _fusable(self) -> bool:
        """True when the C kernel can run whole epochs: plain SGD, no Dropout, activations it knows (_train.c);
        or a net with BatchNormalization that `deep.supports` (_deep.c)."""
        if os.environ.get(NO_FUSED_VARIABLE, "") not in ("", "0"):
            return False
        if deep.supports(self.network):
            return True
        return self.fused_sgd and all(
            layer.activation in sparse.FUSED_ACTIVATIONS and not layer.dropout and not layer.norm
            for layer in self.network.dense
        )

    def plan_first_layer(self, x=None, validation=None) -> FirstLayerPlan:
        """How the first layer will run on the images `x` (None: not known yet), with their CSR rows where
        the sparse C kernel runs it. Made once per `start`; `SeedThreads` makes one for all its groups."""
        reason = sparse.unavailable_reason()
        if reason is None and self.network.dense[0].dropout:
            reason = "the C kernel does not run a first layer with Dropout on its input"
        if reason is not None:
            return FirstLayerPlan(kernel=None, reason=reason)
        kernel = "AVX2" if sparse.simd() else "portable C"
        if kernel == "AVX2" and self.network.dense[0].units == 64 and sparse.avx512():
            kernel = "AVX-512"  # _kernels.c's forward_avx512: 64 units on a CPU with AVX-512F (the same bits).
        given_rows = isinstance(x, sparse.SparseRows)
        density = None if x is None else x.density() if given_rows else sparse.cached_density(x)
        if density is not None and density > sparse.MAX_DENSITY:
            return FirstLayerPlan(
                kernel=None, reason=f"{density:.0%} of the inputs are nonzero, too many for the sparse C kernel"
            )
        whole_epochs = self._fusable()
        rows = None
        if given_rows:
            valid = None if validation is None else validation[0]
            rows = (x, valid if valid is None or isinstance(valid, sparse.SparseRows) else sparse.cached_rows(valid))
        elif x is not None:
            # Built once per process for the same data (read-only arrays from `data.prepared`).
            rows = (sparse.cached_rows(x), None if validation is None else sparse.cached_rows(validation[0]))
        return FirstLayerPlan(
            kernel=kernel,
            density=density,
            whole_epochs=whole_epochs,
            threads=self.epoch_threads if whole_epochs else 1,
            rows=rows,
        )

    def _workspace(self, rows: int) -> _Workspace:
        if rows not in self.workspaces:
            self.workspaces[rows] = _Workspace(self.network, self.lead, abs(rows), training=rows > 0)
        return self.workspaces[rows]

    def train_epoch(self, orders: np.ndarray):
        """Trains one epoch in the batch orders given; each network's loss sums and correct counts."""
        count, size = orders.shape
        if self.sparse_rows is not None and (self.deep_plans is not None or self.plans is not None):
            # Whole epochs in C: _deep.c (BatchNormalization) or _train.c.
            if self.free_cores is not None:
                self.free_cores.before_epoch(self.epoch_threads)  # How far apart two cores are now.
            threads = self._threads_now()
            self.thread_counts[threads] += 1
            data, step = (self.sparse_rows[0], self.y, self.labels), int(self.arrays["iterations"])
            profile = self.profile_rows
            started = time.perf_counter()
            if self.deep_plans is not None:
                results = [
                    deep.train_epoch(*data, orders[k], self.batch_size, plan, step, threads, profile)
                    for k, plan in enumerate(self.deep_plans)
                ]
            else:
                assert self.plans is not None
                results = [
                    sparse.train_epoch(*data, orders[k], self.batch_size, plan, threads, profile)
                    for k, plan in enumerate(self.plans)
                ]
            if self.free_cores is not None:  # Each network's epoch time, for the next epoch's thread count.
                self.free_cores.record(threads, (time.perf_counter() - started) / count)
            self.arrays["iterations"] += -(-size // self.batch_size)
            return np.array([loss for loss, _ in results]), np.array([hits for _, hits in results], np.int64)
        self.thread_counts[1] += 1
        orders = orders[0] if self.count == 1 else orders
        loss_sums, correct = np.zeros(count), np.zeros(count, np.int64)
        with np.errstate(over="ignore", under="ignore"), blas.BlasThreads(self.threads):
            for start in range(0, size, self.batch_size):
                index = orders[..., start : start + self.batch_size]
                workspace = self._workspace(index.shape[-1])
                batch_loss, batch_correct = self._step(workspace, index)
                loss_sums += batch_loss
                correct += batch_correct
        return loss_sums, correct

    def _step(self, work: _Workspace, index: np.ndarray):
        # "clip" mode skips the bounds-check buffer that the default "raise" mode copies through.
        if self.sparse_rows is None:
            np.take(self.x, index, axis=0, out=work.inputs, mode="clip")
        np.take(self.y, index, axis=0, out=work.targets, mode="clip")
        np.take(self.labels, index, axis=0, out=work.labels, mode="clip")
        values = work.inputs
        for number, layer in enumerate(self.network.dense):
            if layer.dropout:
                values = self._dropout(work, number, values)
            work.layer_inputs[number] = values
            output = work.outputs[number]
            if number == 0 and self.sparse_rows is not None:
                self._sparse_forward(self.sparse_rows[0], index, output, transposes=self.transposes)
            else:
                np.matmul(values, self.kernels[number], out=output)
                output += self.biases[number]
            activations.apply(output, layer.activation, work.scratch[number], work.row)
            if layer.norm is not None:
                values = norm.train(layer.norm, self.norms[number], work.norm_buffers[number], output)
            else:
                values = output
        loss_sums, correct = self._loss(work, values, work.targets, work.labels, work.gradients[-1])
        for number in reversed(range(len(self.network.dense))):
            gradient, layer = work.gradients[number], self.network.dense[number]
            if number == 0 and self.sparse_rows is not None:
                kernels, rate = self.arrays["dense_0/kernel"], np.float32(self.network.optimizer.learning_rate)
                for k, (dz, grad) in enumerate(self._per_model(gradient, self.kernel_grads[0])):
                    if self.fused_sgd:
                        sparse.sgd_update(self.transposes[k], dz, kernels[k], rate)
                    else:
                        sparse.weight_gradient(self.transposes[k], dz, grad)
            else:
                np.matmul(np.swapaxes(work.layer_inputs[number], -1, -2), gradient, out=self.kernel_grads[number])
            np.sum(gradient, axis=-2, out=self.bias_grads[number])
            if number == 0:
                break  # The gradient with respect to the images themselves is never needed.
            below = work.gradients[number - 1]
            np.matmul(gradient, self.kernels_transposed[number], out=below)
            if layer.dropout:
                below /= np.float32(1.0 - layer.dropout)
                below *= work.masks[number]
            if self.network.dense[number - 1].norm:
                norm.backward(self.norms[number - 1], work.norm_buffers[number - 1], below)
            activations.backward(
                below, work.outputs[number - 1], self.network.dense[number - 1].activation, work.scratch[number - 1]
            )
        self._update()
        return loss_sums, correct

    def _per_model(self, *arrays):
        """Model k's slice of each stacked array, for k = 0 .. count - 1 (the arrays themselves for one model)."""
        if self.count == 1:
            return [arrays]
        return [tuple(array[k] for array in arrays) for k in range(self.count)]

    def _sparse_forward(self, rows: sparse.SparseRows, index, output, first: int = 0, transposes=None) -> None:
        """The first layer's product plus bias through the C kernel, model by model (and each batch's transpose)."""
        kernels, biases = self.arrays["dense_0/kernel"], self.arrays["dense_0/bias"]
        for k in range(self.count):
            model_index = None if index is None else (index if self.count == 1 else index[k])
            model_output = output if self.count == 1 else output[k]
            sparse.forward(
                rows,
                model_index,
                kernels[k],
                biases[k],
                model_output,
                first=first,
                transpose=None if transposes is None else transposes[k],
            )

    def _dropout(self, work: _Workspace, number: int, values: np.ndarray) -> np.ndarray:
        # Each model's mask comes from its own seed, the step count and the layer: resumable exactly.
        keep = np.float32(1.0 - self.network.dense[number].dropout)
        uniform = work.uniform[number].reshape((self.count,) + work.uniform[number].shape[-2:])
        for k in range(self.count):
            seed = [int(self.arrays["dropout_seeds"][k]), int(self.arrays["iterations"]), number]
            np.random.default_rng(seed).random(dtype=np.float32, out=uniform[k])
        np.less(work.uniform[number], keep, out=work.masks[number])
        np.divide(values, keep, out=work.dropped[number])
        work.dropped[number] *= work.masks[number]
        return work.dropped[number]

    def _loss(self, work: _Workspace, outputs, targets, labels, gradient):
        """Per-model sums of the per-example loss and of correct answers; fills dLoss/d(pre-activation)."""
        classes, rows = outputs.shape[-1], outputs.shape[-2]
        axes = (-2, -1)
        np.argmax(outputs, axis=-1, out=work.predicted)
        np.equal(work.predicted, labels, out=work.hits)
        correct = work.hits.sum(axis=-1)
        square, clipped = work.classes
        if self.network.loss == "mean_squared_error":
            np.subtract(outputs, targets, out=gradient)
            np.multiply(gradient, gradient, out=square)
            loss_sums = square.sum(axis=axes, dtype=np.float64) / classes
            gradient *= np.float32(2.0 / classes / rows)
        else:
            # Keras (JAX backend): normalize by the row sum, clip to [eps, 1 - eps], take -sum(t log p);
            # the clip passes no gradient for entries outside the interval.
            row_sums = work.row_sums
            np.sum(outputs, axis=-1, keepdims=True, out=row_sums)
            np.divide(outputs, row_sums, out=clipped)
            low, high = np.float32(spec.CROSSENTROPY_CLIP), np.float32(1 - spec.CROSSENTROPY_CLIP)
            inside = (clipped >= low) & (clipped <= high)
            np.clip(clipped, low, high, out=clipped)
            np.log(clipped, out=square)
            square *= targets
            loss_sums = -square.sum(axis=axes, dtype=np.float64)
            np.divide(targets, clipped, out=gradient)
            gradient *= inside
            gradient *= np.float32(-1.0 / rows)
            np.multiply(gradient, outputs, out=square)
            np.sum(square, axis=-1, keepdims=True, out=work.row)
            work.row /= row_sums
            gradient -= work.row
            gradient /= row_sums
        if self.network.dense[-1].activation == "softmax":
            np.multiply(outputs, gradient, out=square)
            np.sum(square, axis=-1, keepdims=True, out=work.row)
            gradient -= work.row
            gradient *= outputs
        else:
            activations.backward(gradient, outputs, self.network.dense[-1].activation, square)
        return loss_sums, correct

    def _update(self) -> None:
        """One optimizer step on every weight, with Keras's formulas in float32."""
        optimizer = self.network.optimizer
        rate = np.float32(optimizer.learning_rate)
        if optimizer.name == "adam":
            step = np.float32(self.arrays["iterations"] + 1)
            power_1 = np.power(np.float32(optimizer.beta_1), step)
            power_2 = np.power(np.float32(optimizer.beta_2), step)
            alpha = rate * np.sqrt(np.float32(1) - power_2) / (np.float32(1) - power_1)
        for name in self.names:
            if name == "dense_0/kernel" and self.fused_sgd and self.sparse_rows is not None:
                continue  # Already updated by the C kernel (sparse.sgd_update).
            weight, grad, temp = self.arrays[name], self.grads[name], self.temps[name]
            if optimizer.name == "sgd":
                grad *= rate
                if not optimizer.momentum:
                    weight -= grad
                    continue
                momentum = self.arrays[f"momentum/{name}"]
                momentum *= np.float32(optimizer.momentum)
                momentum -= grad
                if optimizer.nesterov:
                    np.multiply(momentum, np.float32(optimizer.momentum), out=temp)
                    temp -= grad
                    weight += temp
                else:
                    weight += momentum
            elif optimizer.name == "adam":
                first, second = self.arrays[f"momentum/{name}"], self.arrays[f"velocity/{name}"]
                np.subtract(grad, first, out=temp)
                temp *= np.float32(1 - optimizer.beta_1)
                first += temp
                np.square(grad, out=temp)
                temp -= second
                temp *= np.float32(1 - optimizer.beta_2)
                second += temp
                np.sqrt(second, out=temp)
                temp += np.float32(optimizer.epsilon)
                np.multiply(first, alpha, out=grad)
                grad /= temp
                weight -= grad
            else:
                velocity = self.arrays[f"velocity/{name}"]
                velocity *= np.float32(optimizer.rho)
                np.square(grad, out=temp)
                temp *= np.float32(1 - optimizer.rho)
                velocity += temp
                np.add(velocity, np.float32(optimizer.epsilon), out=temp)
                np.sqrt(temp, out=temp)
                grad *= rate
                grad /= temp
                if optimizer.momentum:
                    momentum = self.arrays[f"momentum/{name}"]
                    momentum *= np.float32(optimizer.momentum)
                    momentum += grad
                    weight -= momentum
                else:
                    weight -= grad
        self.arrays["iterations"] += 1

    def evaluate(self, chunk: int = 2000):
        """Per-model sums of validation loss and correct answers, in chunks of images."""
        assert self.validation is not None, "evaluate needs the validation data given to start"
        x, y, labels = self.validation
        rows = None if self.sparse_rows is None else self.sparse_rows[1]
        if rows is not None and (self.deep_plans is not None or self.plans is not None):
            # In C, the images shared between the epoch's threads: _deep.c's inference, or _train.c's validation.
            threads = self._threads_now()
            if self.deep_plans is not None:
                results = [deep.evaluate(rows, y, labels, plan, threads=threads) for plan in self.deep_plans]
            else:
                assert self.plans is not None
                results = [sparse.evaluate(rows, y, labels, plan, threads=threads) for plan in self.plans]
            return np.array([loss for loss, _ in results]), np.array([hits for _, hits in results], np.int64)
        loss_sums, correct = np.zeros(self.count), np.zeros(self.count, np.int64)
        with np.errstate(over="ignore", under="ignore"), blas.BlasThreads(self.threads):
            for start in range(0, len(x), chunk):
                stop = min(start + chunk, len(x))
                work = self._workspace(-(stop - start))  # Negative keys: evaluation buffers.
                values = x[start:stop]
                for number, layer in enumerate(self.network.dense):
                    kernel = self.arrays[f"dense_{number}/kernel"]
                    output = work.outputs[number]
                    if number == 0 and rows is not None:
                        self._sparse_forward(rows, None, output, first=start)
                        activations.apply(output, layer.activation, work.scratch[number], work.row)
                        if layer.norm:
                            norm.evaluate(layer.norm, self.norms[number], output)
                        values = output
                        continue
                    if number == 0 and self.count > 1:
                        # One product for all models: (rows, inputs) @ (inputs, models * units).
                        joined = kernel.transpose(1, 0, 2).reshape(kernel.shape[1], -1)
                        flat = work.scratch[0].reshape(stop - start, -1)
                        np.matmul(values, joined, out=flat)
                        output[...] = flat.reshape(stop - start, self.count, -1).transpose(1, 0, 2)
                    else:
                        np.matmul(values, self.kernels[number], out=output)
                    output += self.biases[number]
                    activations.apply(output, layer.activation, work.scratch[number], work.row)
                    if layer.norm:
                        norm.evaluate(layer.norm, self.norms[number], output)
                    values = output
                work_labels = np.broadcast_to(labels[start:stop], work.labels.shape)
                targets = np.broadcast_to(y[start:stop], work.targets.shape)
                batch_loss, batch_correct = self._loss(work, values, targets, work_labels, work.gradients[-1])
                loss_sums += batch_loss
                correct += batch_correct
        return loss_sums, correct
