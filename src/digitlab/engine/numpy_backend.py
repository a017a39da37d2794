"""The NumPy backend of `FastEngine` (name `fast-numpy`): the layers at BLAS level, the CPU path.

`FastEngine(models, config, backend="numpy")` (or `backend="auto"` without a GPU)
builds a `NumpyBackend` here; nothing else should need it. It keeps the N models'
weights and optimizer slots stacked in float32 arrays, updated in place, and runs
each step as batched matrix products over the N models, on buffers allocated once
per batch size (`_Workspace`), with Keras's own formulas (JAX backend) for the
activations, the loss and the optimizer update. All its products run inside
`blas.BlasThreads(threads)`.
"""

from __future__ import annotations

import numpy as np

from digitlab.engine import blas, spec

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


class _Workspace:
    """Preallocated float32 buffers for one step over `rows` examples of each of the models."""

    def __init__(self, network: spec.NetworkSpec, lead: tuple, rows: int, training: bool = True):
        def buffer(width, dtype=np.float32):
            return np.empty(lead + (rows, width), dtype)

        classes = network.dense[-1].units
        self.rows = rows
        self.inputs = buffer(network.dense[0].inputs) if training else None
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
        self.layer_inputs = [None] * len(network.dense)
        dropout = [training and layer.dropout for layer in network.dense]
        self.dropped = [buffer(layer.inputs) if rate else None for layer, rate in zip(network.dense, dropout)]
        self.uniform = [buffer(layer.inputs) if rate else None for layer, rate in zip(network.dense, dropout)]
        self.masks = [buffer(layer.inputs, bool) if rate else None for layer, rate in zip(network.dense, dropout)]


class NumpyBackend:
    """Trains the stacked models with NumPy over OpenBLAS; weights live in `self.arrays`."""

    def __init__(self, network: spec.NetworkSpec, batch_size: int, state: dict, threads: int | None):
        self.network, self.batch_size, self.threads = network, batch_size, threads
        self.arrays = {name: np.array(value) for name, value in state.items()}
        self.count = len(self.arrays["dense_0/kernel"])
        # With one model the 2-D views skip NumPy's stacked-matmul loop; they share memory.
        self.lead = () if self.count == 1 else (self.count,)
        self.names = spec.weight_names(network)
        self.grads = {name: np.zeros_like(self.arrays[name]) for name in self.names}
        self.temps = {name: np.zeros_like(self.arrays[name]) for name in self.names}
        self.workspaces: dict[int, _Workspace] = {}
        # Views made once (the arrays are only ever updated in place), to keep the step loop lean.
        layers_range = range(len(network.dense))
        self.kernels = [self._view(self.arrays[f"dense_{index}/kernel"]) for index in layers_range]
        self.kernels_transposed = [np.swapaxes(kernel, -1, -2) for kernel in self.kernels]
        self.biases = [self._view(self.arrays[f"dense_{index}/bias"])[..., None, :] for index in layers_range]
        self.kernel_grads = [self._view(self.grads[f"dense_{index}/kernel"]) for index in layers_range]
        self.bias_grads = [self._view(self.grads[f"dense_{index}/bias"]) for index in layers_range]

    def _view(self, array):
        return array[0] if self.count == 1 else array

    def state(self) -> dict:
        return self.arrays

    def load(self, state: dict) -> None:
        for name, value in state.items():
            self.arrays[name][...] = value

    def start(self, x, y, validation) -> None:
        self.x, self.y, self.labels = x, y, np.argmax(y, axis=1)
        self.validation = None
        if validation is not None:
            self.validation = (validation[0], validation[1], np.argmax(validation[1], axis=1))

    def _workspace(self, rows: int) -> _Workspace:
        if rows not in self.workspaces:
            self.workspaces[rows] = _Workspace(self.network, self.lead, abs(rows), training=rows > 0)
        return self.workspaces[rows]

    def train_epoch(self, orders: np.ndarray):
        count, size = orders.shape
        orders = orders[0] if self.count == 1 else orders
        loss_sums, correct = np.zeros(count), np.zeros(count, np.int64)
        with np.errstate(over="ignore", under="ignore"), blas.BlasThreads(self.threads):
            for start in range(0, size, self.batch_size):
                index = orders[..., start:start + self.batch_size]
                workspace = self._workspace(index.shape[-1])
                batch_loss, batch_correct = self._step(workspace, index)
                loss_sums += batch_loss
                correct += batch_correct
        return loss_sums, correct

    def _step(self, work: _Workspace, index: np.ndarray):
        # "clip" mode skips the bounds-check buffer that the default "raise" mode copies through.
        np.take(self.x, index, axis=0, out=work.inputs, mode="clip")
        np.take(self.y, index, axis=0, out=work.targets, mode="clip")
        np.take(self.labels, index, axis=0, out=work.labels, mode="clip")
        activations = work.inputs
        for number, layer in enumerate(self.network.dense):
            if layer.dropout:
                activations = self._dropout(work, number, activations)
            work.layer_inputs[number] = activations
            output = work.outputs[number]
            np.matmul(activations, self.kernels[number], out=output)
            output += self.biases[number]
            _activate(output, layer.activation, work.scratch[number], work.row)
            activations = output
        loss_sums, correct = self._loss(work, activations, work.targets, work.labels, work.gradients[-1])
        for number in reversed(range(len(self.network.dense))):
            gradient, layer = work.gradients[number], self.network.dense[number]
            np.matmul(np.swapaxes(work.layer_inputs[number], -1, -2), gradient, out=self.kernel_grads[number])
            np.sum(gradient, axis=-2, out=self.bias_grads[number])
            if number == 0:
                break  # The gradient with respect to the images themselves is never needed.
            below = work.gradients[number - 1]
            np.matmul(gradient, self.kernels_transposed[number], out=below)
            if layer.dropout:
                below /= np.float32(1.0 - layer.dropout)
                below *= work.masks[number]
            _activation_gradient(below, work.outputs[number - 1], self.network.dense[number - 1].activation,
                                 work.scratch[number - 1])
        self._update()
        return loss_sums, correct

    def _dropout(self, work: _Workspace, number: int, activations: np.ndarray) -> np.ndarray:
        # Each model's mask comes from its own seed, the step count and the layer: resumable exactly.
        keep = np.float32(1.0 - self.network.dense[number].dropout)
        uniform = work.uniform[number].reshape((self.count,) + work.uniform[number].shape[-2:])
        for k in range(self.count):
            seed = [int(self.arrays["dropout_seeds"][k]), int(self.arrays["iterations"]), number]
            np.random.default_rng(seed).random(dtype=np.float32, out=uniform[k])
        np.less(work.uniform[number], keep, out=work.masks[number])
        np.divide(activations, keep, out=work.dropped[number])
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
            _activation_gradient(gradient, outputs, self.network.dense[-1].activation, square)
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
        x, y, labels = self.validation
        loss_sums, correct = np.zeros(self.count), np.zeros(self.count, np.int64)
        with np.errstate(over="ignore", under="ignore"), blas.BlasThreads(self.threads):
            for start in range(0, len(x), chunk):
                stop = min(start + chunk, len(x))
                work = self._workspace(-(stop - start))  # Negative keys: evaluation buffers.
                activations = x[start:stop]
                for number, layer in enumerate(self.network.dense):
                    kernel = self.arrays[f"dense_{number}/kernel"]
                    output = work.outputs[number]
                    if number == 0 and self.count > 1:
                        # One product for all models: (rows, inputs) @ (inputs, models * units).
                        joined = kernel.transpose(1, 0, 2).reshape(kernel.shape[1], -1)
                        flat = work.scratch[0].reshape(stop - start, -1)
                        np.matmul(activations, joined, out=flat)
                        output[...] = flat.reshape(stop - start, self.count, -1).transpose(1, 0, 2)
                    else:
                        np.matmul(activations, self.kernels[number], out=output)
                    output += self.biases[number]
                    _activate(output, layer.activation, work.scratch[number], work.row)
                    activations = output
                work_labels = np.broadcast_to(labels[start:stop], work.labels.shape)
                targets = np.broadcast_to(y[start:stop], work.targets.shape)
                batch_loss, batch_correct = self._loss(work, activations, targets, work_labels,
                                                       work.gradients[-1])
                loss_sums += batch_loss
                correct += batch_correct
        return loss_sums, correct


def _activate(values: np.ndarray, activation: str, scratch: np.ndarray, row: np.ndarray) -> None:
    """Applies a Keras activation in place (JAX backend formulas)."""
    if activation == "sigmoid":
        np.negative(values, out=values)
        np.exp(values, out=values)
        values += np.float32(1)
        np.reciprocal(values, out=values)
    elif activation == "relu":
        np.maximum(values, np.float32(0), out=values)
    elif activation == "tanh":
        np.tanh(values, out=values)
    elif activation in ("elu", "selu"):
        np.minimum(values, np.float32(0), out=scratch)
        np.expm1(scratch, out=scratch)
        np.maximum(values, np.float32(0), out=values)
        if activation == "selu":
            scratch *= np.float32(_SELU_ALPHA)
        values += scratch
        if activation == "selu":
            values *= np.float32(_SELU_SCALE)
    elif activation == "softmax":
        np.max(values, axis=-1, keepdims=True, out=row)
        values -= row
        np.exp(values, out=values)
        np.sum(values, axis=-1, keepdims=True, out=row)
        values /= row


def _activation_gradient(gradient: np.ndarray, output: np.ndarray, activation: str, scratch: np.ndarray) -> None:
    """Multiplies `gradient` in place by the activation's derivative, written in terms of its output."""
    if activation == "sigmoid":
        np.subtract(np.float32(1), output, out=scratch)
        scratch *= output
        gradient *= scratch
    elif activation == "relu":
        np.greater(output, np.float32(0), out=scratch)
        gradient *= scratch
    elif activation == "tanh":
        np.multiply(output, output, out=scratch)
        np.subtract(np.float32(1), scratch, out=scratch)
        gradient *= scratch
    elif activation == "elu":
        np.add(output, np.float32(1), out=scratch)
        np.minimum(scratch, np.float32(1), out=scratch)
        gradient *= scratch
    elif activation == "selu":
        np.add(output, np.float32(_SELU_SCALE * _SELU_ALPHA), out=scratch)
        np.copyto(scratch, np.float32(_SELU_SCALE), where=output > 0)
        gradient *= scratch
    elif activation == "softmax":
        raise ValueError("softmax is only supported on the last layer, where the loss handles it.")
