"""`FastEngine`: trains N compiled Keras models of one architecture together, as `fit` trains each.

    from digitlab.engine import fast
    engine = fast.FastEngine(keras_models, config, backend="auto")
    engine.fit(x, y, (x_valid, y_valid), epochs=3, rngs=[np.random.RandomState(seed) for seed in seeds])
    engine.sync_to_models()

It reads the models into a `NetworkSpec` (`spec.py`), stacks their weights and
optimizer slots into one state (named as `get_state` returns them), and hands
the epochs to a backend: `numpy_backend.NumpyBackend` on a CPU, or
`jax_backend.JaxBackend` (loaded only when asked for) on a GPU. It draws every
epoch's batch order itself, from the generators it is given, and turns the
backend's sums into the history `fit` would report.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

import keras
import numpy as np
from keras import layers

from digitlab import interrupts
from digitlab.config import TrainConfig
from digitlab.engine import numpy_backend, seeds, sparse, spec, timing

BACKENDS = ("auto", "numpy", "jax")


def jax_has_gpu() -> bool:
    """True when JAX can see a GPU (so `backend="auto"` picks the JAX path)."""
    try:
        import jax

        return any(device.platform == "gpu" for device in jax.devices())
    except Exception:  # A JAX without any usable platform counts as "no GPU".
        return False


def default_workers() -> int:
    """The cores this process may use: its CPU affinity, capped by OMP_NUM_THREADS where that is set
    (as Ray sets it to each trial's CPUs, so two 1-CPU trials on 2 cores do not fight over them)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        limit = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return cores
    return max(1, min(cores, limit))


class FastEngine:
    """Trains N compiled Keras models of one architecture together, as `fit` would train each.

    `threads` is the number of OpenBLAS threads the NumPy backend uses while it trains
    (None leaves OpenBLAS's own setting). One is the default because it measured
    fastest: the products here are small, and on a 2-core machine a second BLAS
    thread made epochs 1.5 to 10 times slower. `workers` is the number of threads
    that share N seeds on the NumPy backend (None: one per core; 1: no threads).
    `path` says in words how the first layer runs (sparse C kernel or NumPy, and why).
    With `profile`, `fit` measures where its epochs go into `self.profile` (`timing.Profile`).
    One network's threads follow the load and the epochs' measured times (`cores.FreeCores`: the
    same bits for any count); `follow_speed=False` leaves the load alone to decide (digitlab bench,
    which times the thread count it asks for).
    """

    def __init__(
        self,
        models: list[keras.Model],
        config: TrainConfig,
        backend: str = "auto",
        threads: int | None = 1,
        workers: int | None = None,
        profile: bool = False,
        follow_speed: bool = True,
    ):
        if not models:
            raise ValueError("FastEngine needs at least one compiled Keras model.")
        if backend not in BACKENDS:
            raise ValueError(f"Unknown engine backend {backend!r}. Choose one of: {', '.join(BACKENDS)}.")
        self.network = spec.read_network(models[0], config)
        for model in models[1:]:
            if spec.read_network(model, config) != self.network:
                raise ValueError("All models given to FastEngine must share one architecture, loss and optimizer.")
        self.models = list(models)
        self.batch_size = int(config.batch_size)
        normed = any(layer.norm for layer in self.network.dense)
        if backend == "jax" and normed:
            raise ValueError("The engine's JAX backend has no BatchNormalization; use backend='numpy' or 'auto'.")
        if backend == "auto":
            backend = "jax" if not normed and jax_has_gpu() else "numpy"
        self.backend = backend
        self.name = f"fast-{backend}"
        weights = [model.get_weights() for model in models]  # Kernel, bias, kernel, bias, ...
        state: dict[str, np.ndarray] = {"iterations": np.zeros((), np.int64)}
        trained = spec.trained_names(self.network)
        for position, name in enumerate(spec.weight_names(self.network)):
            stacked = np.stack([np.asarray(each[position], np.float32) for each in weights])
            state[name] = stacked
            for slot in spec.slot_names(self.network.optimizer) if name in trained else ():
                state[f"{slot}/{name}"] = np.zeros_like(stacked)
        if any(layer.dropout for layer in self.network.dense):
            state["dropout_seeds"] = np.array([_dropout_seed(model) for model in models], np.uint32)
        self._shapes = {name: (array.shape, array.dtype) for name, array in state.items()}
        if workers is None:
            workers = default_workers()
        self._impl = _make_backend(backend, self.network, self.batch_size, state, threads, workers, follow_speed)
        self.profile: timing.Profile | None = None
        if profile:
            # The JAX backend has no phases to time: its profile holds training, validation and Python.
            self.profile = timing.Profile(
                threads=getattr(self._impl, "profile_threads", 0),
                names=getattr(self._impl, "profile_names", timing.PHASES),
            )
            if self.profile.threads:
                self._impl.profile_into(self.profile.phases)

    @property
    def path(self) -> str:
        """How the backend runs the layers, in words (the NumPy backend: the sparse C kernel or why not)."""
        return getattr(self._impl, "path", "jax.jit over each epoch")

    @property
    def kernel(self) -> str:
        """What computes the first layer: "AVX-512", "AVX2" or "portable C" (the sparse C kernel), "NumPy", or "JAX"."""
        return getattr(self._impl, "kernel", "JAX")

    @property
    def seed_threads(self) -> int:
        """How many threads share the seeds (each trains its networks one after another)."""
        return len(getattr(self._impl, "groups", [None]))

    @property
    def trains_from_rows(self) -> bool:
        """True where the C kernel runs whole epochs on the sparse first layer: `fit` then takes the images' rows
        (`sparse.SparseRows`, e.g. `sparse.prepared_rows`) for x and the validation images, in place of the
        float32 inputs, which the run then never needs (training.Session)."""
        planner = getattr(self._impl, "groups", [self._impl])[0]
        if not isinstance(planner, numpy_backend.NumpyBackend):
            return False  # The JAX backend reads the float32 inputs.
        plan = planner.plan_first_layer()
        return plan.kernel is not None and plan.whole_epochs

    @property
    def thread_counts(self) -> dict[int, int]:
        """How many epochs each network trained on how many threads (the C epoch follows the load)."""
        return dict(getattr(self._impl, "thread_counts", {}))

    def fit(
        self,
        x,
        y,
        validation_data=None,
        epochs: int = 1,
        initial_epoch: int = 0,
        rngs: Sequence[np.random.RandomState] | None = None,
        on_epoch_end: Callable[[int, list[dict]], None] | None = None,
    ) -> None:
        """Trains epochs `initial_epoch` to `epochs - 1`, calling `on_epoch_end(epoch, logs)` after each.

        Model k's batch order for each epoch is `rngs[k].permutation(n)`, as Keras `fit`
        calls `np.random.permutation(n)`, so `FitEngine` given the same generator (the
        same `np.random.RandomState(seed)`) trains on the same batches; without rngs
        every model draws from NumPy's global generator in turn. `logs` holds one dict per model with loss, accuracy,
        val_loss and val_accuracy, computed as `fit` reports them.
        """
        count = len(self.models)
        x, y = self._check_arrays(x, y, "x and y")
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data must be a pair (x_valid, y_valid).")
            x_valid, y_valid = validation_data
            validation_data = self._check_arrays(x_valid, y_valid, "validation_data")
        if rngs is None:
            # The global generator, as fit uses it (the numpy.random module is its API).
            rngs = [np.random] * count  # type: ignore[list-item]
        if len(rngs) != count:
            raise ValueError(f"Give one random generator per model: {count} models but {len(rngs)} rngs.")
        if not isinstance(epochs, int) or not isinstance(initial_epoch, int) or not 0 <= initial_epoch <= epochs:
            raise ValueError(f"Need whole numbers 0 <= initial_epoch <= epochs, got {initial_epoch} and {epochs}.")
        self._impl.start(x, y, validation_data)
        clock = time.perf_counter
        # rng.permutation(n) is np.arange(n) shuffled in place: the same orders drawn into one array kept for
        # the run (the backends copy or finish with it in train_epoch), without two new 0.5-MB arrays an epoch.
        identity, orders = np.arange(len(x)), np.empty((count, len(x)), np.int64)
        for epoch in range(initial_epoch, epochs):
            began = clock()
            interrupts.check()  # A Ctrl-C during training stops it here, between epochs.
            for order, rng in zip(orders, rngs, strict=True):
                np.copyto(order, identity)
                rng.shuffle(order)
            counts_before = self.thread_counts if self.profile is not None else {}
            started = clock()
            loss_sums, correct = self._impl.train_epoch(orders)
            trained = validated = clock()
            logs = [
                {"loss": float(loss_sums[k]) / len(x), "accuracy": float(correct[k]) / len(x)} for k in range(count)
            ]
            if validation_data is not None:
                val_loss_sums, val_correct = self._impl.evaluate()
                validated = clock()
                for k in range(count):
                    logs[k]["val_loss"] = float(val_loss_sums[k]) / len(validation_data[0])
                    logs[k]["val_accuracy"] = float(val_correct[k]) / len(validation_data[0])
            if self.profile is not None:
                self.profile.epochs += 1
                self.profile.train += trained - started
                self.profile.validation += validated - trained
                self.profile.python += started - began
                for threads, seen in self.thread_counts.items():
                    self.profile.thread_counts[threads] += seen - counts_before.get(threads, 0)
            if on_epoch_end is not None:
                on_epoch_end(epoch, logs)
            if self.profile is not None:
                self.profile.python += clock() - validated

    def _check_arrays(self, x, y, what: str):
        if not isinstance(x, sparse.SparseRows):  # Rows: where `trains_from_rows` (the backend's start checks).
            x = np.ascontiguousarray(x, dtype=np.float32)
        y = np.ascontiguousarray(y, dtype=np.float32)
        inputs, outputs = self.network.dense[0].inputs, self.network.dense[-1].units
        if len(x.shape) != 2 or x.shape[1] != inputs or y.shape != (len(x), outputs) or len(x) == 0:
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
            model.set_weights([np.array(state[name][k]) for name in spec.weight_names(self.network)])


def _dropout_seed(model: keras.Model) -> int:
    """The model's first Dropout layer's Keras seed, so seeded models draw seeded masks."""
    for layer in model.layers:
        if isinstance(layer, layers.Dropout):
            return int(np.asarray(layer.seed_generator.state.value)[0]) % 2**32
    return 0


def _make_backend(
    backend: str,
    network: spec.NetworkSpec,
    batch_size: int,
    state: dict,
    threads: int | None,
    workers: int,
    follow_speed: bool = True,
):
    if backend == "jax":
        # Imported here, not at the top: only runs that ask for the JAX backend pay for loading it.
        from digitlab.engine import jax_backend

        return jax_backend.JaxBackend(network, batch_size, state)
    if workers > 1 and len(state["dense_0/kernel"]) > 1:
        return seeds.SeedThreads(network, batch_size, state, threads, workers, follow_speed)
    # One network: where the C kernel runs whole epochs, the workers share each batch instead.
    return numpy_backend.NumpyBackend(
        network, batch_size, state, threads, epoch_threads=workers, follow_speed=follow_speed
    )
