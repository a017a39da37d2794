"""The training engines: Keras's own `fit`, and a fast engine that runs the same computation for N seeds at once.

Keras `fit` pays a fixed cost for each of its many small steps (469 an epoch for
the book's shallow net), so most of its time goes to overhead, not arithmetic.
`FastEngine` takes the compiled Keras models themselves (their layers, their
initial weights, their loss and optimizer) and runs the very same steps: the
same shuffled batches, including the last partial one, the same loss and
gradient, the same optimizer update (Keras's own formulas), validation after
every epoch, and the history `fit` would report. It trains N models of one
architecture together (N seeds), each with its own batch order, as stacked
weight arrays: one program, not a loop of runs. `FitEngine` is `model.fit`
itself behind the same interface (`Engine`), and `make_engine` picks between them
as a run's config asks.

Two backends compute the fast engine:

- `"numpy"` (name `fast-numpy`, in `numpy_backend.py`): the layers at BLAS level,
  float32 buffers allocated once, batched matrix products over the N models. The CPU path.
- `"jax"` (name `fast-jax`, in `jax_backend.py`): one `jax.jit` call per epoch, a
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

Both engines shuffle epoch e with the e-th permutation of the generator they are
given, so model k built after `keras.utils.set_random_seed(seed_k)` and trained with
`rngs=[np.random.RandomState(seed_k)]` sees the same batches in `FitEngine` and in
`FastEngine` (`FitEngine` keeps `fit`'s one-off build draw out of the generator).

Supported by the fast engine: `keras.Sequential` of Dense layers (sigmoid, relu,
tanh, elu, selu or linear; softmax on the last), BatchNormalization after a Dense
layer (the book's deep net; Keras's momentum and epsilon, moving statistics in
evaluation) and Dropout layers, mean squared error or categorical cross-entropy,
SGD (with momentum, Nesterov or not), Adam and RMSprop. `unsupported_reason` says
in a sentence why any other model is not. Dropout draws its own masks (from the
layer's seed), so models with Dropout train like `fit` in distribution but not bit for bit.

The modules: `spec.py` reads a Keras model into a `NetworkSpec`; `fast.py` is
`FastEngine`; `numpy_backend.py` and `jax_backend.py` its backends; `sparse.py` the
C kernels (`_kernels.c` the sparse first layer, `_dense.c` the layers above it,
`_train.c` whole epochs); `deep.py` whole epochs of nets with BatchNormalization
(`_deep.c`) and `norm.py` its NumPy steps; `timing.py` where an epoch goes
(`FastEngine(..., profile=True)`, `digitlab bench --profile`); `blas.py` OpenBLAS thread control;
`fit.py` is `FitEngine`. How the engine works and what it measured: docs/engine.md.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from digitlab.config import ConfigError, TrainConfig
from digitlab.engine.blas import BlasThreads

if TYPE_CHECKING:
    import keras

    from digitlab.engine.fast import BACKENDS, FastEngine, jax_has_gpu
    from digitlab.engine.fit import FitEngine
    from digitlab.engine.spec import (
        ACTIVATIONS,
        DenseSpec,
        NetworkSpec,
        OptimizerSpec,
        UnsupportedModel,
        read_network,
        slot_names,
        unsupported_reason,
    )

# The names above that come from modules which import Keras, loaded on first use (PEP 562): importing
# `digitlab.engine.sparse` alone imports no Keras, so the command's start builds the engine's sparse rows
# in a thread while the main thread imports Keras (startup.py).
_LAZY = {
    "BACKENDS": "fast",
    "FastEngine": "fast",
    "jax_has_gpu": "fast",
    "FitEngine": "fit",
    **dict.fromkeys(
        (
            "ACTIVATIONS",
            "DenseSpec",
            "NetworkSpec",
            "OptimizerSpec",
            "UnsupportedModel",
            "read_network",
            "slot_names",
            "unsupported_reason",
        ),
        "spec",
    ),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"digitlab.engine.{_LAZY[name]}"), name)
        globals()[name] = value  # Found at once from now on.
        return value
    raise AttributeError(f"module 'digitlab.engine' has no attribute {name!r}")


__all__ = [
    "ACTIVATIONS",
    "BACKENDS",
    "BlasThreads",
    "DenseSpec",
    "Engine",
    "FastEngine",
    "FitEngine",
    "NetworkSpec",
    "OptimizerSpec",
    "UnsupportedModel",
    "read_network",
    "jax_has_gpu",
    "make_engine",
    "slot_names",
    "unsupported_reason",
]


class Engine(Protocol):
    """What training needs of an engine; `FastEngine` and `FitEngine` both provide it."""

    name: str

    def fit(
        self,
        x,
        y,
        validation_data,
        epochs: int,
        initial_epoch: int = 0,
        rngs: Sequence[np.random.RandomState] | None = None,
        on_epoch_end: Callable[[int, list[dict]], None] | None = None,
    ) -> None:
        """Trains epochs `initial_epoch` to `epochs - 1`; `on_epoch_end` gets one logs dict per model."""

    def get_state(self) -> dict[str, np.ndarray]:
        """Everything needed to resume exactly: weights, optimizer state, step count."""

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Loads a `get_state` dict, raising ValueError if it does not fit."""

    def sync_to_models(self) -> None:
        """Leaves the current weights in the Keras models."""


def make_engine(networks: list[keras.Model], config: TrainConfig, verbose: int = 2) -> Engine:
    """The engine `config.engine` asks for; "auto" prefers the fast engine where it applies."""
    from digitlab.engine.fast import FastEngine
    from digitlab.engine.fit import FitEngine
    from digitlab.engine.spec import unsupported_reason

    reason = None
    if config.engine != "fit":
        reason = unsupported_reason(networks[0], config)
        if reason is None:
            return FastEngine(networks, config)
        if config.engine == "fast":
            raise ConfigError(
                f"--engine fast cannot train the {config.model} net: {reason} Use --engine fit.", field="engine"
            )
    if config.seeds > 1:
        raise ConfigError(
            f"--seeds {config.seeds} trains networks side by side with the fast engine, which "
            f"cannot run here: {reason or '--engine fit trains one network at a time.'}"
        )
    return FitEngine(networks[0], config, verbose=verbose)
