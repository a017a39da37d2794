"""`FitEngine`: Keras's own `model.fit`, the book's code, behind the interface `FastEngine` has.

    from digitlab.engine import fit
    engine = fit.FitEngine(model, config, verbose=2)
    engine.fit(x, y, (x_valid, y_valid), epochs=3, rngs=[np.random.RandomState(seed)])

It trains one compiled Keras model with `model.fit` and reports each epoch's
logs as a one-element list, as `FastEngine` reports one dict per model. Keras
shuffles NumPy data with NumPy's global generator, so `fit` here runs with the
generator it is given loaded into the global one: epoch e always shuffles with
that generator's e-th permutation, as `FastEngine` does, which is what makes a
resumed run repeat an uninterrupted one and lets both engines, given the same
`np.random.RandomState(seed)`, train on the same batches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np

from digitlab import interrupts
from digitlab.config import TrainConfig
from digitlab.runs import RunError


class FitEngine:
    """Keras's own `model.fit`, the book's code, behind the interface the fast engine has."""

    name = "fit"

    def __init__(self, model: keras.Model, config: TrainConfig, verbose: int = 2):
        self.model = model
        self.config = config
        self.verbose = verbose

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
        """Runs `model.fit` for epochs `initial_epoch` to `epochs - 1`, shuffling with `rngs[0]`.

        `on_epoch_end(epoch, logs)` gets `logs` as a list of one dict (fit's logs).
        Without rngs, fit draws from NumPy's global generator, as it does on its own.
        """
        # Keras shuffles NumPy data with the global NumPy generator (np.random.permutation),
        # so the run's own generator is loaded into it, and copied back after every epoch.
        rng = rngs[0] if rngs else np.random
        # The first `fit` of a fresh model draws one batch (and so one permutation) just to build
        # its metrics. Building them here, on one unshuffled image, keeps that draw out of the run's
        # generator: epoch e then always shuffles with the generator's e-th permutation, in a fresh
        # run and in a resumed one alike, and the same as the fast engine.
        self.model.evaluate(x[:1], y[:1], verbose=0)
        np.random.set_state(rng.get_state())

        class Bridge(keras.callbacks.Callback):
            # Before each batch, not after: a batch-end hook makes Keras wait for every batch's logs.
            def on_train_batch_begin(self, batch, logs=None):
                interrupts.check()  # A Ctrl-C during training stops it here, between batches.

            def on_epoch_end(self, epoch, logs=None):
                rng.set_state(np.random.get_state())
                if on_epoch_end is not None:
                    on_epoch_end(epoch, [dict(logs or {})])

        self.model.fit(
            x,
            y,
            batch_size=self.config.batch_size,
            epochs=epochs,
            initial_epoch=initial_epoch,
            verbose=self.verbose,
            validation_data=validation_data,
            shuffle=True,
            callbacks=[Bridge()],
        )

    def get_state(self) -> dict[str, np.ndarray]:
        """Copies of the model's variables and the optimizer's: enough to resume exactly."""
        state = {f"variable/{i}": np.asarray(v.numpy()) for i, v in enumerate(self.model.variables)}
        for i, variable in enumerate(self.model.optimizer.variables):
            state[f"optimizer/{i}"] = np.asarray(variable.numpy())
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Loads a `get_state` dict, raising RunError if it was written for another model."""
        if not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        for prefix, variables in (("variable", self.model.variables), ("optimizer", self.model.optimizer.variables)):
            for i, variable in enumerate(variables):
                value = state.get(f"{prefix}/{i}")
                if value is None or tuple(value.shape) != tuple(variable.shape):
                    raise RunError(
                        "The checkpoint does not match this model (a variable is missing or has "
                        "another shape); it was written for a different configuration."
                    )
                variable.assign(value)

    def sync_to_models(self) -> None:
        """The Keras model already holds the weights."""
