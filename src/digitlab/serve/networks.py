"""Any saved run's network at any epoch: for the page's predictions, weight tiles and end-of-run results.

    networks = Networks(RunsFolder("runs"), loaded_data)  # loaded_data(): the MNIST arrays, loaded once
    name = "20261201-101500-shallow-seed0"
    networks.probabilities(name, epoch=3, pixels=...)    # the ten probabilities of epoch 3's network
    networks.tiles_png(name, epoch=3)                    # its 64 first-layer weight tiles, as a PNG
    networks.evaluation(name, epoch=None)                # confusion matrix and confident mistakes

An epoch's weights come from the run's record (`epochs/epoch-NNNN.npz`, float16, written by
training with `record_epochs`); the last epoch of a complete run comes from its model.keras,
exactly. Predictions load those weights into one Keras model per run (built from the run's
config) and call `predict.pixel_probabilities`, the fast path the drawing page always used:
so the network asked is Keras's own, only its weights change with the epoch. Everything is
kept in small caches; the tiles and evaluations of an epoch never change, so each is computed
once.

The runs are found by name in a `runs_folder.RunsFolder`, which says why one cannot be opened.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable

import numpy as np

from digitlab import data, evaluation, imaging, models, predict, runs
from digitlab.plots import inside as plots_inside
from digitlab.serve import runs_folder


class NotReady(runs.RunError):
    """A run that has no network to ask yet, or whose network diverged (the API answers 409)."""


class _Cache(collections.OrderedDict):
    """A small least-recently-used cache."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def remember(self, key, value):
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)
        return value

    def recall(self, key):
        if key in self:
            self.move_to_end(key)
            return self[key]
        return None


class Networks:
    """The networks of the runs in `folder`, at any recorded epoch (see the module docstring)."""

    def __init__(self, folder: runs_folder.RunsFolder, loaded_data: Callable[[], data.Loaded]):
        self.folder, self.loaded_data = folder, loaded_data
        self._weights = _Cache(64)  # (run, epoch) -> (weights, epoch)
        self._models = _Cache(8)  # run -> (Keras model, what it holds now)
        self._tiles = _Cache(256)  # (run, epoch) -> PNG bytes
        self._evaluations = _Cache(32)  # (run, epoch) -> result
        self._lock = threading.Lock()  # The caches are shared with worker threads.

    def final_epoch(self, run: runs.Run) -> int | None:
        """The last epoch whose network can be asked: the last recorded, or a complete run's last."""
        recorded = run.recorded_epochs()
        last_recorded = recorded[-1] if recorded else None
        saved = _model_epoch(run)
        return last_recorded if saved is None else max(saved, last_recorded or 0)

    def forget(self, name: str) -> None:
        """Drops what is kept of a run (its training started, resumed or ended: its last epoch may change)."""
        with self._lock:
            for cache in (self._weights, self._tiles, self._evaluations):
                for key in [key for key in cache if key[0] == name]:
                    del cache[key]
            self._models.pop(name, None)

    def weights(self, name: str, epoch: int | None) -> tuple[list[np.ndarray], int]:
        """The weights of the run's network after `epoch` (None: the last one), and that epoch.

        An epoch asked before is answered from memory, without touching the run folder: the
        page asks for each epoch's tiles once per viewer, and the pad for each drawing."""
        if epoch is not None:
            with self._lock:
                cached = self._weights.recall((name, epoch))
            if cached is not None:
                return cached
        run = self.folder.open(name)
        last = self.final_epoch(run)
        if last is None:
            raise NotReady(
                f"The run {name} has no network to ask yet: it has no recorded epoch and no model.keras. "
                "Wait for its first epoch, or finish it."
            )
        epoch = last if epoch is None else epoch
        with self._lock:
            cached = self._weights.recall((name, epoch))
        if cached is not None:
            return cached
        if epoch == _model_epoch(run):
            weights = run.load_model().get_weights()  # The trained model itself, at full precision.
        elif epoch in run.recorded_epochs():
            weights = run.epoch_weights(epoch)
        else:
            recorded = run.recorded_epochs()
            have = f"epochs {recorded[0]} to {recorded[-1]}" if recorded else f"only its last epoch ({last})"
            raise runs_folder.NotFound(f"The run {name} has no record of epoch {epoch}; it has {have}.")
        with self._lock:
            return self._weights.remember((name, epoch), (weights, epoch))

    def probabilities(self, name: str, epoch: int | None, pixels: np.ndarray) -> tuple[np.ndarray, int]:
        """The ten probabilities of the run's network after `epoch` for 28x28 pixels, and that epoch.

        Called on the server's event loop only: the run's one Keras model is loaded with the
        epoch's weights and asked at once, with nothing in between."""
        weights, epoch = self.weights(name, epoch)
        model, holds = self._models.recall(name) or (None, None)
        if model is None:
            model = models.build_model(self.folder.open(name).config())
            holds = None
        if holds != epoch:
            _set_weights(model, weights, name)
        self._models.remember(name, (model, epoch))
        row = predict.pixel_probabilities(model, pixels)[0]
        if not np.all(np.isfinite(row)):
            raise NotReady(
                f"The network of {name} at epoch {epoch} has diverged (its outputs are not numbers); "
                "choose an earlier epoch, or train again with a smaller learning_rate."
            )
        return row, epoch

    def cached_tiles(self, name: str, epoch: int) -> bytes | None:
        """The run's tiles after `epoch` if they were drawn before, else None (never touches the disk)."""
        with self._lock:
            return self._tiles.recall((name, epoch))

    def tiles_png(self, name: str, epoch: int | None) -> bytes:
        """The first Dense layer's weights as one 28x28 tile per unit, on one colour scale (as
        hidden_units.png draws them: red excites, blue inhibits), as PNG bytes."""
        weights, epoch = self.weights(name, epoch)
        cached = self.cached_tiles(name, epoch)
        if cached is not None:
            return cached
        kernel = weights[0]
        if kernel.ndim != 2 or kernel.shape[0] != imaging.FIELD * imaging.FIELD:
            raise runs_folder.NotFound(
                f"The run {name} does not start with a Dense layer on 784 pixels, so it has no tiles."
            )
        with self._lock:
            return self._tiles.remember((name, epoch), plots_inside.weight_tiles_png(kernel))

    def evaluation(self, name: str, epoch: int | None) -> dict:
        """Accuracy, the confusion matrix and the most confidently wrong digits of the run's network
        after `epoch` on the images it validated on. Slow (10,000 images): call it in a worker thread."""
        weights, epoch = self.weights(name, epoch)
        with self._lock:
            cached = self._evaluations.recall((name, epoch))
        if cached is not None:
            return cached
        run = self.folder.open(name)
        config = run.config()
        images, labels, description = evaluation.evaluation_images(run, self.loaded_data().arrays)
        model = models.build_model(config)  # Its own model: this runs beside the event loop's.
        _set_weights(model, weights, name)
        inputs = data.to_inputs(images, flat=not models.is_convolutional(config.model))
        probabilities = np.asarray(model.predict(inputs, batch_size=1000, verbose=0))
        if not np.all(np.isfinite(probabilities)):
            raise NotReady(f"The network of {run.name} at epoch {epoch} has diverged (its outputs are not numbers).")
        _, matrix, mistakes = evaluation.score(probabilities, labels)
        result = {
            "run": run.name,
            "epoch": epoch,
            "data": description,
            "images": int(len(images)),
            "accuracy": float(np.trace(matrix) / len(images)),
            "errors": int(len(images) - np.trace(matrix)),
            "confusion_matrix": matrix.tolist(),
            "mistakes": [dict(mistake, pixels=images[mistake["index"]].tolist()) for mistake in mistakes],
        }
        with self._lock:
            return self._evaluations.remember((name, epoch), result)


def _model_epoch(run: runs.Run) -> int | None:
    """The epoch whose network a complete run's model.keras holds (its last), or None for a run not complete."""
    if run.status().get("status") == "complete" and run.model_path().is_file():
        return len(run.history()["val_accuracy"])
    return None


def _set_weights(model, weights: list[np.ndarray], name: str) -> None:
    """Loads a run's weights into the network its config describes; Unusable when they do not fit it
    (a config.json edited after training, say "batch_norm" turned on)."""
    try:
        model.set_weights(weights)
    except ValueError as error:
        raise runs_folder.Unusable(
            f"The weights of the run {name} do not fit the network its config.json describes ({error}); "
            "was config.json edited after training? Put it back as the run wrote it, or train again."
        ) from None
