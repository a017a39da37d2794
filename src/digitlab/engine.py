"""A fast training engine that runs the same computation as Keras `fit`, for N seeds at once.

Keras `fit` pays a fixed cost for each of its many small steps (469 an epoch for
the book's shallow net), so most of its time goes to overhead, not arithmetic.
`FastEngine` takes the compiled Keras models themselves (their layers, their
initial weights, their loss and optimizer) and runs the very same steps: the
same shuffled batches, including the last partial one, the same loss and
gradient, the same optimizer update (Keras's own formulas), validation after
every epoch, and the history `fit` would report. It trains N models of one
architecture together (N seeds), each with its own batch order, as stacked
weight arrays: one program, not a loop of runs.

Two backends compute it:

- `"numpy"` (name `fast-numpy`): the layers at BLAS level, float32 buffers
  allocated once, batched matrix products over the N models. The CPU path.
- `"jax"` (name `fast-jax`, in `engine_jax.py`): one `jax.jit` call per epoch, a
  `lax.scan` over the epoch's batches, `vmap` over the N models. The natural path on a GPU.
- `"auto"`: `jax` when JAX sees a GPU, otherwise `numpy`.

    from digitlab import config, engine, models
    cfg = config.TrainConfig(model="shallow").resolved()
    keras_models = [models.create_model(cfg) for _ in range(4)]
    fast = engine.FastEngine(keras_models, cfg)           # or engine.unsupported_reason(...)
    fast.fit(x, y, (x_valid, y_valid), epochs=cfg.epochs,
             rngs=[np.random.RandomState(seed) for seed in range(4)],
             on_epoch_end=lambda epoch, logs: print(epoch, logs[0]))
    fast.sync_to_models()                                 # weights back into the Keras models

For `fit`'s very batches, build model k after `keras.utils.set_random_seed(seed_k)`
and pass `rngs=[engine.fit_order_rng(seed_k, len(x))]`: `fit` throws away one
permutation (for its symbolic build) before its first epoch.

Supported: `keras.Sequential` of Dense layers (sigmoid, relu, tanh, elu, selu or
linear; softmax on the last) and Dropout layers, mean squared error or
categorical cross-entropy, SGD (with momentum, Nesterov or not), Adam and
RMSprop. `unsupported_reason` says in a sentence why any other model is not.
Dropout draws its own masks (from the layer's seed), so models with Dropout
train like `fit` in distribution but not bit for bit.
"""

from __future__ import annotations

import ctypes
import dataclasses

import keras
import numpy as np
from keras import layers

from digitlab.config import TrainConfig

ACTIVATIONS = ("sigmoid", "relu", "tanh", "elu", "selu", "linear", "softmax")
BACKENDS = ("auto", "numpy", "jax")
# Keras's fuzz factor for clipping probabilities in the cross-entropy (keras.config.epsilon()).
_CLIP = 1e-7
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


@dataclasses.dataclass(frozen=True)
class DenseSpec:
    """One Dense layer: its sizes, activation, and the Dropout rate applied to its input."""

    inputs: int
    units: int
    activation: str
    dropout: float = 0.0


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """The optimizer's kind and hyperparameters, read from the Keras optimizer."""

    name: str
    learning_rate: float
    momentum: float = 0.0
    nesterov: bool = False
    beta_1: float = 0.9
    beta_2: float = 0.999
    rho: float = 0.9
    epsilon: float = 1e-7


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
    """Everything the engine needs to know about a compiled Keras model."""

    dense: tuple[DenseSpec, ...]
    loss: str
    optimizer: OptimizerSpec


class UnsupportedModel(ValueError):
    """The fast engine cannot train this model; the message says why."""


def unsupported_reason(model: keras.Model, config: TrainConfig) -> str | None:
    """None if `FastEngine` can train this compiled model with this config, else a sentence why."""
    try:
        describe(model, config)
    except UnsupportedModel as error:
        return str(error)
    return None


def describe(model: keras.Model, config: TrainConfig) -> NetworkSpec:
    """Reads a compiled Keras model into a NetworkSpec, raising UnsupportedModel if it cannot."""
    if not isinstance(model, keras.Sequential):
        raise UnsupportedModel("The fast engine trains keras.Sequential models only.")
    if not getattr(model, "compiled", False) or model.optimizer is None:
        raise UnsupportedModel("The model is not compiled; compile it with a loss and an optimizer first.")
    if not isinstance(config.batch_size, int) or config.batch_size < 1:
        raise UnsupportedModel(f"batch_size must be a positive whole number, got {config.batch_size!r}.")
    dense, dropout = [], 0.0
    for layer in model.layers:
        if isinstance(layer, layers.Dropout):
            if dropout or layer.noise_shape is not None:
                raise UnsupportedModel(
                    "Two Dropout layers in a row, or a Dropout noise_shape, are not supported by the fast engine."
                )
            dropout = float(layer.rate)
        elif isinstance(layer, layers.Dense):
            dense.append(_dense_spec(layer, dropout))
            dropout = 0.0
        else:
            raise UnsupportedModel(
                f"{type(layer).__name__} layers are not supported by the fast engine "
                "(it runs Dense and Dropout layers only); use the fit engine."
            )
    if not dense:
        raise UnsupportedModel("The model has no Dense layer for the fast engine to train.")
    if dropout:
        raise UnsupportedModel("A Dropout layer after the last Dense layer is not supported by the fast engine.")
    if any(spec.activation == "softmax" for spec in dense[:-1]):
        raise UnsupportedModel("The fast engine supports softmax on the last layer only.")
    for before, after in zip(dense, dense[1:]):
        if before.units != after.inputs:
            raise UnsupportedModel("The Dense layers' sizes do not chain; the model is not a plain stack.")
    loss = _loss_name(model.loss)
    if loss == "categorical_crossentropy" and dense[-1].activation != "softmax":
        raise UnsupportedModel("Categorical cross-entropy needs a softmax last layer in the fast engine.")
    return NetworkSpec(tuple(dense), loss, _optimizer_spec(model.optimizer))


def _dense_spec(layer: layers.Dense, dropout: float) -> DenseSpec:
    name = type(layer).__name__
    if type(layer) is not layers.Dense:
        raise UnsupportedModel(f"{name} layers are not supported by the fast engine; use the fit engine.")
    if not layer.use_bias:
        raise UnsupportedModel("Dense layers without a bias are not supported by the fast engine.")
    extras = ("kernel_regularizer", "bias_regularizer", "activity_regularizer", "kernel_constraint", "bias_constraint")
    if any(getattr(layer, extra, None) is not None for extra in extras) or getattr(layer, "lora_enabled", False):
        raise UnsupportedModel(
            "Dense layers with regularizers, constraints or LoRA are not supported by the fast engine."
        )
    if layer.compute_dtype != "float32" or layer.variable_dtype != "float32":
        raise UnsupportedModel("The fast engine computes in float32 only; the model uses another dtype policy.")
    activation = next((act for act in ACTIVATIONS if layer.activation is keras.activations.get(act)), None)
    if activation is None:
        raise UnsupportedModel(
            f"The activation of layer {layer.name} is not one the fast engine supports "
            f"({', '.join(ACTIVATIONS)})."
        )
    kernel_shape = tuple(layer.kernel.shape)
    return DenseSpec(int(kernel_shape[0]), int(kernel_shape[1]), activation, dropout)


def _loss_name(loss) -> str:
    names = {
        "mean_squared_error": "mean_squared_error", "mse": "mean_squared_error",
        "MeanSquaredError": "mean_squared_error",
        "categorical_crossentropy": "categorical_crossentropy",
        "CategoricalCrossentropy": "categorical_crossentropy",
    }
    if isinstance(loss, str) and loss in names:
        return names[loss]
    if loss is keras.losses.mean_squared_error:
        return "mean_squared_error"
    if loss is keras.losses.categorical_crossentropy:
        return "categorical_crossentropy"
    if isinstance(loss, keras.losses.Loss) and loss.reduction == "sum_over_batch_size":
        if type(loss) is keras.losses.MeanSquaredError:
            return "mean_squared_error"
        if (
            type(loss) is keras.losses.CategoricalCrossentropy
            and not loss.from_logits and not loss.label_smoothing and loss.axis == -1
        ):
            return "categorical_crossentropy"
    raise UnsupportedModel(
        f"The loss {loss!r} is not supported by the fast engine; it runs mean_squared_error "
        "and categorical_crossentropy (probabilities, no label smoothing)."
    )


def _optimizer_spec(optimizer) -> OptimizerSpec:
    if isinstance(optimizer._learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        raise UnsupportedModel("Learning-rate schedules are not supported by the fast engine.")
    extras = ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm", "gradient_accumulation_steps",
              "loss_scale_factor")
    if any(getattr(optimizer, extra, None) for extra in extras) or getattr(optimizer, "use_ema", False):
        raise UnsupportedModel(
            "Optimizers with weight decay, gradient clipping, gradient accumulation, loss scaling "
            "or EMA are not supported by the fast engine."
        )
    learning_rate = float(np.asarray(optimizer.learning_rate))
    kind = type(optimizer)
    if kind is keras.optimizers.SGD:
        return OptimizerSpec("sgd", learning_rate, momentum=float(optimizer.momentum), nesterov=bool(optimizer.nesterov))
    if kind is keras.optimizers.Adam:
        if optimizer.amsgrad:
            raise UnsupportedModel("Adam with amsgrad=True is not supported by the fast engine.")
        return OptimizerSpec("adam", learning_rate, beta_1=float(optimizer.beta_1),
                             beta_2=float(optimizer.beta_2), epsilon=float(optimizer.epsilon))
    if kind is keras.optimizers.RMSprop:
        if optimizer.centered:
            raise UnsupportedModel("RMSprop with centered=True is not supported by the fast engine.")
        return OptimizerSpec("rmsprop", learning_rate, momentum=float(optimizer.momentum),
                             rho=float(optimizer.rho), epsilon=float(optimizer.epsilon))
    raise UnsupportedModel(
        f"The {kind.__name__} optimizer is not supported by the fast engine; it runs SGD, Adam and RMSprop."
    )


def slot_names(optimizer: OptimizerSpec) -> tuple[str, ...]:
    """The optimizer's per-weight state arrays, as Keras names them."""
    if optimizer.name == "sgd":
        return ("momentum",) if optimizer.momentum else ()
    if optimizer.name == "adam":
        return ("momentum", "velocity")
    return ("velocity", "momentum") if optimizer.momentum else ("velocity",)


def jax_has_gpu() -> bool:
    """True when JAX can see a GPU (so `backend="auto"` picks the JAX path)."""
    try:
        import jax

        return any(device.platform == "gpu" for device in jax.devices())
    except Exception:  # A JAX without any usable platform counts as "no GPU".
        return False


def fit_order_rng(seed: int, num_samples: int) -> np.random.RandomState:
    """The generator of the batch orders that Keras `fit` (JAX backend) uses after `set_random_seed(seed)`.

    `fit` shuffles with `np.random.permutation(n)` once per epoch, but on a freshly
    compiled model it first draws one permutation for its symbolic build and throws
    it away. This returns `RandomState(seed)` past that draw, so that
    `FastEngine.fit(..., rngs=[fit_order_rng(seed, n)])` sees `fit`'s batches.
    """
    generator = np.random.RandomState(seed)
    generator.permutation(num_samples)
    return generator


class FastEngine:
    """Trains N compiled Keras models of one architecture together, as `fit` would train each.

    `threads` is the number of OpenBLAS threads the NumPy backend uses while it trains
    (None leaves OpenBLAS's own setting). One is the default because it measured
    fastest: the products here are small, and on a 2-core machine a second BLAS
    thread made epochs 1.5 to 10 times slower.
    """

    def __init__(self, models: list[keras.Model], config: TrainConfig, backend: str = "auto",
                 threads: int | None = 1):
        if not models:
            raise ValueError("FastEngine needs at least one compiled Keras model.")
        if backend not in BACKENDS:
            raise ValueError(f"Unknown engine backend {backend!r}. Choose one of: {', '.join(BACKENDS)}.")
        self.spec = describe(models[0], config)
        for model in models[1:]:
            if describe(model, config) != self.spec:
                raise ValueError("All models given to FastEngine must share one architecture, loss and optimizer.")
        self.models = list(models)
        self.batch_size = int(config.batch_size)
        if backend == "auto":
            backend = "jax" if jax_has_gpu() else "numpy"
        self.backend = backend
        self.name = f"fast-{backend}"
        weights = [model.get_weights() for model in models]  # Kernel, bias, kernel, bias, ...
        state = {"iterations": np.zeros((), np.int64)}
        for index in range(len(self.spec.dense)):
            for offset, part in enumerate(("kernel", "bias")):
                stacked = np.stack([np.asarray(each[2 * index + offset], np.float32) for each in weights])
                state[f"dense_{index}/{part}"] = stacked
                for slot in slot_names(self.spec.optimizer):
                    state[f"{slot}/dense_{index}/{part}"] = np.zeros_like(stacked)
        if any(layer.dropout for layer in self.spec.dense):
            state["dropout_seeds"] = np.array([_dropout_seed(model) for model in models], np.uint32)
        self._shapes = {name: (array.shape, array.dtype) for name, array in state.items()}
        self._impl = _make_backend(backend, self.spec, self.batch_size, state, threads)

    def fit(self, x, y, validation_data=None, epochs: int = 1, initial_epoch: int = 0,
            rngs: list[np.random.RandomState] | None = None, on_epoch_end=None) -> None:
        """Trains epochs `initial_epoch` to `epochs - 1`, calling `on_epoch_end(epoch, logs)` after each.

        Model k's batch order for each epoch is `rngs[k].permutation(n)`, as Keras `fit`
        calls `np.random.permutation(n)`; without rngs every model draws from NumPy's
        global generator in turn. `logs` holds one dict per model with loss, accuracy,
        val_loss and val_accuracy, computed as `fit` reports them.
        """
        count = len(self.models)
        x, y = self._check_arrays(x, y, "x and y")
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data must be a pair (x_valid, y_valid).")
            validation_data = self._check_arrays(*validation_data, "validation_data")
        if rngs is None:
            rngs = [np.random] * count  # The global generator, as fit uses it.
        if len(rngs) != count:
            raise ValueError(f"Give one random generator per model: {count} models but {len(rngs)} rngs.")
        if not isinstance(epochs, int) or not isinstance(initial_epoch, int) or not 0 <= initial_epoch <= epochs:
            raise ValueError(f"Need whole numbers 0 <= initial_epoch <= epochs, got {initial_epoch} and {epochs}.")
        self._impl.start(x, y, validation_data)
        for epoch in range(initial_epoch, epochs):
            orders = np.stack([rng.permutation(len(x)) for rng in rngs])
            loss_sums, correct = self._impl.train_epoch(orders)
            logs = [{"loss": float(loss_sums[k]) / len(x), "accuracy": float(correct[k]) / len(x)}
                    for k in range(count)]
            if validation_data is not None:
                val_loss_sums, val_correct = self._impl.evaluate()
                for k in range(count):
                    logs[k]["val_loss"] = float(val_loss_sums[k]) / len(validation_data[0])
                    logs[k]["val_accuracy"] = float(val_correct[k]) / len(validation_data[0])
            if on_epoch_end is not None:
                on_epoch_end(epoch, logs)

    def _check_arrays(self, x, y, what: str):
        x = np.ascontiguousarray(x, dtype=np.float32)
        y = np.ascontiguousarray(y, dtype=np.float32)
        inputs, outputs = self.spec.dense[0].inputs, self.spec.dense[-1].units
        if x.ndim != 2 or x.shape[1] != inputs or y.shape != (len(x), outputs) or len(x) == 0:
            raise ValueError(
                f"{what} must have shapes (n, {inputs}) and (n, {outputs}) with n >= 1 "
                f"(flat images and one-hot targets), got {x.shape} and {y.shape}."
            )
        return x, y

    def get_state(self) -> dict[str, np.ndarray]:
        """Copies of all weights, optimizer slots and the step count: enough to resume exactly."""
        return {name: np.array(array) for name, array in self._impl.state().items()}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Loads a `get_state` dict, checking that every array is there with the right shape."""
        if not isinstance(state, dict) or set(state) != set(self._shapes):
            given = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(
                f"The engine state must hold exactly the arrays {sorted(self._shapes)}; got {given}. "
                "Was it saved by an engine with the same model, optimizer and number of seeds?"
            )
        checked = {}
        for name, (shape, dtype) in self._shapes.items():
            array = np.asarray(state[name])
            if array.shape != shape:
                raise ValueError(f"The engine state array {name} has shape {array.shape}; expected {shape}.")
            checked[name] = np.array(array, dtype=dtype)
        self._impl.load(checked)

    def sync_to_models(self) -> None:
        """Copies the current weights into the Keras models (`model.set_weights`)."""
        state = self._impl.state()
        for k, model in enumerate(self.models):
            weights = []
            for index in range(len(self.spec.dense)):
                weights += [np.array(state[f"dense_{index}/kernel"][k]), np.array(state[f"dense_{index}/bias"][k])]
            model.set_weights(weights)


def _dropout_seed(model: keras.Model) -> int:
    """The model's first Dropout layer's Keras seed, so seeded models draw seeded masks."""
    for layer in model.layers:
        if isinstance(layer, layers.Dropout):
            return int(np.asarray(layer.seed_generator.state.value)[0]) % 2**32
    return 0


def _make_backend(backend: str, spec: NetworkSpec, batch_size: int, state: dict, threads: int | None):
    if backend == "jax":
        # Imported here, not at the top: the JAX backend imports this module's shared
        # helpers, and only runs that ask for it should pay for loading it.
        from digitlab.engine_jax import _JaxBackend

        return _JaxBackend(spec, batch_size, state)
    return _NumpyBackend(spec, batch_size, state, threads)


# ---------------------------------------------------------------------------------------------
# The NumPy backend: the layers at BLAS level, on buffers allocated once per batch size.
# ---------------------------------------------------------------------------------------------


class _Workspace:
    """Preallocated float32 buffers for one step over `rows` examples of each of the models."""

    def __init__(self, spec: NetworkSpec, lead: tuple, rows: int, training: bool = True):
        def buffer(width, dtype=np.float32):
            return np.empty(lead + (rows, width), dtype)

        classes = spec.dense[-1].units
        self.rows = rows
        self.inputs = buffer(spec.dense[0].inputs) if training else None
        self.targets = buffer(classes)
        self.labels = np.empty(lead + (rows,), np.intp)
        self.predicted = np.empty(lead + (rows,), np.intp)
        self.hits = np.empty(lead + (rows,), bool)
        self.outputs = [buffer(layer.units) for layer in spec.dense]
        self.gradients = [buffer(layer.units) for layer in spec.dense]
        self.scratch = [buffer(layer.units) for layer in spec.dense]
        self.row = buffer(1)
        self.row_sums = buffer(1)
        self.classes = [buffer(classes) for _ in range(2)]
        self.layer_inputs = [None] * len(spec.dense)
        dropout = [training and layer.dropout for layer in spec.dense]
        self.dropped = [buffer(layer.inputs) if rate else None for layer, rate in zip(spec.dense, dropout)]
        self.uniform = [buffer(layer.inputs) if rate else None for layer, rate in zip(spec.dense, dropout)]
        self.masks = [buffer(layer.inputs, bool) if rate else None for layer, rate in zip(spec.dense, dropout)]


class _NumpyBackend:
    """Trains the stacked models with NumPy over OpenBLAS; weights live in `self.arrays`."""

    def __init__(self, spec: NetworkSpec, batch_size: int, state: dict, threads: int | None):
        self.spec, self.batch_size, self.threads = spec, batch_size, threads
        self.arrays = {name: np.array(value) for name, value in state.items()}
        self.count = len(self.arrays["dense_0/kernel"])
        # With one model the 2-D views skip NumPy's stacked-matmul loop; they share memory.
        self.lead = () if self.count == 1 else (self.count,)
        self.names = [f"dense_{index}/{part}" for index in range(len(spec.dense)) for part in ("kernel", "bias")]
        self.grads = {name: np.zeros_like(self.arrays[name]) for name in self.names}
        self.temps = {name: np.zeros_like(self.arrays[name]) for name in self.names}
        self.workspaces: dict[int, _Workspace] = {}
        # Views made once (the arrays are only ever updated in place), to keep the step loop lean.
        layers_range = range(len(spec.dense))
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
            self.workspaces[rows] = _Workspace(self.spec, self.lead, abs(rows), training=rows > 0)
        return self.workspaces[rows]

    def train_epoch(self, orders: np.ndarray):
        count, size = orders.shape
        orders = orders[0] if self.count == 1 else orders
        loss_sums, correct = np.zeros(count), np.zeros(count, np.int64)
        with np.errstate(over="ignore", under="ignore"), _BlasThreads(self.threads):
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
        for number, layer in enumerate(self.spec.dense):
            if layer.dropout:
                activations = self._dropout(work, number, activations)
            work.layer_inputs[number] = activations
            output = work.outputs[number]
            np.matmul(activations, self.kernels[number], out=output)
            output += self.biases[number]
            _activate(output, layer.activation, work.scratch[number], work.row)
            activations = output
        loss_sums, correct = self._loss(work, activations, work.targets, work.labels, work.gradients[-1])
        for number in reversed(range(len(self.spec.dense))):
            gradient, layer = work.gradients[number], self.spec.dense[number]
            np.matmul(np.swapaxes(work.layer_inputs[number], -1, -2), gradient, out=self.kernel_grads[number])
            np.sum(gradient, axis=-2, out=self.bias_grads[number])
            if number == 0:
                break  # The gradient with respect to the images themselves is never needed.
            below = work.gradients[number - 1]
            np.matmul(gradient, self.kernels_transposed[number], out=below)
            if layer.dropout:
                below /= np.float32(1.0 - layer.dropout)
                below *= work.masks[number]
            _activation_gradient(below, work.outputs[number - 1], self.spec.dense[number - 1].activation,
                                 work.scratch[number - 1])
        self._update()
        return loss_sums, correct

    def _dropout(self, work: _Workspace, number: int, activations: np.ndarray) -> np.ndarray:
        # Each model's mask comes from its own seed, the step count and the layer: resumable exactly.
        keep = np.float32(1.0 - self.spec.dense[number].dropout)
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
        if self.spec.loss == "mean_squared_error":
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
            inside = (clipped >= np.float32(_CLIP)) & (clipped <= np.float32(1 - _CLIP))
            np.clip(clipped, np.float32(_CLIP), np.float32(1 - _CLIP), out=clipped)
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
        if self.spec.dense[-1].activation == "softmax":
            np.multiply(outputs, gradient, out=square)
            np.sum(square, axis=-1, keepdims=True, out=work.row)
            gradient -= work.row
            gradient *= outputs
        else:
            _activation_gradient(gradient, outputs, self.spec.dense[-1].activation, square)
        return loss_sums, correct

    def _update(self) -> None:
        """One optimizer step on every weight, with Keras's formulas in float32."""
        optimizer = self.spec.optimizer
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
        with np.errstate(over="ignore", under="ignore"), _BlasThreads(self.threads):
            for start in range(0, len(x), chunk):
                stop = min(start + chunk, len(x))
                work = self._workspace(-(stop - start))  # Negative keys: evaluation buffers.
                activations = x[start:stop]
                for number, layer in enumerate(self.spec.dense):
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


class _BlasThreads:
    """Sets every loaded OpenBLAS's thread count for a block (no-op when `count` is None)."""

    _libraries = None

    def __init__(self, count: int | None):
        self.count, self.previous = count, []

    @classmethod
    def libraries(cls) -> list:
        """(set, get) function pairs of the OpenBLAS copies loaded in this process (NumPy's, SciPy's)."""
        if cls._libraries is None:
            cls._libraries = []
            try:
                with open("/proc/self/maps") as maps:
                    paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower()})
            except OSError:
                paths = []
            for path in paths:
                try:
                    library = ctypes.CDLL(path)
                except OSError:
                    continue
                for name in ("scipy_openblas{}64_", "scipy_openblas{}_64_", "openblas{}64_", "openblas{}"):
                    setter = getattr(library, name.format("_set_num_threads"), None)
                    getter = getattr(library, name.format("_get_num_threads"), None)
                    if setter is not None and getter is not None:
                        cls._libraries.append((setter, getter))
                        break
        return cls._libraries

    def __enter__(self):
        if self.count:
            for setter, getter in self.libraries():
                self.previous.append((setter, getter()))
                setter(int(self.count))
        return self

    def __exit__(self, *exc):
        for setter, count in self.previous:
            setter(int(count))
        self.previous = []
        return False
