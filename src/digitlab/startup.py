"""The start of `digitlab train`: Keras imported beside MNIST's loading, without what training never uses.

    loading = startup.keras_beside_data(config, data_path)   # before `from digitlab import training`
    training.train(config, runs_dir, loaded=loading.loaded())

On a quiet 2-core machine importing `digitlab.training` took 1.40 s before its first epoch, of which
Keras's own imports of pandas (0.23 s: `fit` on DataFrames) and Matplotlib's pyplot (0.37 s: the image
galleries of `keras.visualization`) serve nothing a run does; reading mnist.npz, its SHA-256s and the
float images took about 0.5 s more, and the engine's sparse rows 0.29 s, nearly all of it in NumPy,
hashlib and C with Python's lock let go (docs/engine.md, "Start-up"). So:

- On the JAX backend (every net but LeNet, whose TensorFlow imports some of them unguarded), Keras's
  first import does not see the packages UNUSED_BY_TRAINING (Keras imports each in a
  `try: import ... except ImportError`): in this process Keras has no DataFrame support and no image
  galleries, as where they are not installed. The packages stay importable: the run's curves import
  Matplotlib (without pyplot) at its end.
- A thread loads and prepares the data while the main thread imports Keras; `training.train` then finds
  it ready. Where the fast engine may train the net (flat images, the C kernels built) that is the images'
  sparse rows (`engine.sparse.prepared_rows`, straight from the uint8 images: the float32 inputs, 219 MB
  of new memory, are made only if the engine asks for them, `training.training_inputs`) and the one-hot
  targets (`data.prepared_targets`); otherwise `data.prepared`'s arrays. The rows come first (no Keras
  needed); only the targets (Keras's `to_categorical`) wait in the thread until Keras is imported. The
  same functions compute the same arrays as without the thread: the history is the same, bit for bit.

- Python's cyclic garbage collector is off from the start to `loaded()`, which then freezes every
  object made so far (`gc.freeze`): the 250,000 objects of Keras, JAX and the data live to the run's
  end, and scanning them was three full collections of 0.02-0.14 s each during the start and one
  more at the end, under load. The process ends after its run, so nothing frozen needs freeing.

Only the command imports Keras this way; `import digitlab.training` elsewhere (a notebook, a server)
imports Keras as usual, with the collector as it is.
"""

from __future__ import annotations

import gc
import importlib.abc
import os
import sys

from digitlab import background, data
from digitlab.config import TrainConfig, is_convolutional

# Packages Keras imports for features that training never uses (above), and two more of the kind:
# requests (the RemoteMonitor callback) and IPython (KerasFileEditor's display in a notebook).
UNUSED_BY_TRAINING = ("pandas", "matplotlib", "requests", "IPython")


class Loading:
    """MNIST loaded and prepared for `config` in a thread of its own, begun at once (with the sparse rows
    where the fast engine may use them); `loaded()` waits for it."""

    def __init__(self, config: TrainConfig, data_path=None, collector_paused: bool = False):
        self.config, self.data_path = config.resolved(), data_path
        self.collector_paused = collector_paused  # `loaded` freezes what is made so far and turns the collector on.
        self._work = background.Background(self._load, name="digitlab-data")

    def loaded(self) -> data.Loaded:
        """The data, once loaded and prepared (raising, here, what went wrong: a DataError...)."""
        self._work.wait()
        if self.collector_paused:
            self.collector_paused = False
            gc.freeze()
            gc.enable()
        return self._work.result()

    def _load(self) -> data.Loaded:
        config = self.config
        loaded = data.load(self.data_path)
        flat = not is_convolutional(config.model)
        if flat and config.engine != "fit":
            from digitlab.engine import sparse

            if sparse.unavailable_reason() is None:
                # The rows first: they need no Keras, the one-hot targets below wait for its import.
                rows, _ = sparse.prepared_rows(loaded, config.validation, config.train_limit)
                if rows.density() <= sparse.MAX_DENSITY:
                    data.prepared_targets(loaded, config.validation, config.train_limit)
                    return loaded  # The float32 inputs only if the engine asks for them (training.training_inputs).
        data.prepared(loaded, config.validation, config.train_limit, flat)
        return loaded


def keras_beside_data(config: TrainConfig, data_path=None) -> Loading:
    """Starts `Loading` the data, and imports Keras meanwhile without the packages UNUSED_BY_TRAINING
    (if Keras is not imported yet); returns the Loading. The garbage collector is off until its `loaded()`."""
    paused = gc.isenabled()
    gc.disable()
    # On the JAX backend only: TensorFlow (LeNet's backend) imports some of them itself, unguarded.
    hidden = None if "keras" in sys.modules or os.environ.get("KERAS_BACKEND") != "jax" else _Hidden(UNUSED_BY_TRAINING)
    if hidden is not None:
        sys.meta_path.insert(0, hidden)  # Before the thread starts: Keras is imported behind it, whoever imports it.
    try:
        loading = Loading(config, data_path, collector_paused=paused)
        import keras  # noqa: F401
    finally:
        if hidden is not None:
            sys.meta_path.remove(hidden)
    return loading


class _Hidden(importlib.abc.MetaPathFinder):
    """An import hook that answers "not installed" for some packages (not yet imported) and their modules."""

    def __init__(self, packages: tuple[str, ...]):
        self.packages = packages

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.packages:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None
