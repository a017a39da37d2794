"""Which Keras backend each net trains on, chosen before Keras is imported.

    from digitlab import backends
    backends.use_for("lenet")      # before `import keras`: sets KERAS_BACKEND for this net
    import keras

Keras fixes its backend when it is first imported, from `KERAS_BACKEND`, so the
choice has to be made before that: `digitlab train` makes it after parsing its
flags (for `--resume`, from the run's saved config) and before it imports the
training code, and the LeNet notebook calls `use_for("lenet")` in its first cell.

The choice, measured with `digitlab bench --model lenet` on a 2-core CPU:

- the dense nets (shallow, intermediate, deep) train on JAX, where `fit` is
  fastest and the fast engine runs on its own CPU path anyway;
- LeNet trains on TensorFlow, whose oneDNN convolutions ran 4 to 7 times faster
  than XLA's here (JAX remains the fallback when TensorFlow is not installed).

A `KERAS_BACKEND` that the user set always wins. Importing `digitlab` sets
`KERAS_BACKEND=jax` when it is unset and marks it as its own default (in
`DIGITLAB_DEFAULT_BACKEND`), so a child process can still tell a user's choice
from digitlab's default. When Keras is already imported with another backend
(`training.train` called from Python after `import keras`), `use_for` cannot
change it: it returns the backend in use and `mismatch_note` says, in a
sentence, how to get the faster one.
"""

from __future__ import annotations

import importlib.util
import os
import sys

DEFAULT = "jax"
# Measured per net (README, "The book's later nets"); nets not named here use DEFAULT.
FASTEST = {"lenet": "tensorflow"}
# Set beside KERAS_BACKEND when digitlab, not the user, chose it.
MARKER = "DIGITLAB_DEFAULT_BACKEND"


def set_default() -> None:
    """Called on `import digitlab`: KERAS_BACKEND=jax unless the user set it; quiet TensorFlow logging."""
    if "KERAS_BACKEND" not in os.environ:
        _set(DEFAULT)
    quiet_tensorflow()


def quiet_tensorflow() -> None:
    """Keeps TensorFlow's C++ start-up lines (oneDNN notices, XLA, CPU features) off the terminal.

    Must run before TensorFlow is imported, which Keras does on its TensorFlow
    backend and, on JAX, when it saves or loads a model with TensorFlow installed.
    A value the user set is kept.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def user_chosen() -> str | None:
    """The backend the user set in KERAS_BACKEND, or None when it is unset or digitlab's own default."""
    value = os.environ.get("KERAS_BACKEND")
    if value is None or value == os.environ.get(MARKER):
        return None
    return value


def installed(backend: str) -> bool:
    return importlib.util.find_spec(backend) is not None


def fastest_for(model: str) -> str:
    """The measured fastest installed backend for `model`, ignoring what the user set."""
    wanted = FASTEST.get(model, DEFAULT)
    return wanted if installed(wanted) else DEFAULT


def choose(model: str) -> str:
    """The backend `model` should train on: the user's KERAS_BACKEND, else the fastest installed."""
    return user_chosen() or fastest_for(model)


def use_for(model: str) -> str:
    """Sets KERAS_BACKEND for `model` if Keras is not yet imported; returns the backend Keras will use."""
    if "keras" in sys.modules:
        import keras

        return keras.backend.backend()
    wanted = choose(model)
    if user_chosen() is None:
        _set(wanted)
    return wanted


def mismatch_note(model: str, in_use: str) -> str | None:
    """A sentence when `model` runs on `in_use` but would have been given another backend; else None."""
    wanted = choose(model)
    if wanted == in_use:
        return None
    return (
        f"note: the {model} net trains fastest on the {wanted} backend, but Keras was imported with the "
        f"{in_use} backend before digitlab could choose, so it trains on {in_use}. To get {wanted}, "
        f"call digitlab.backends.use_for({model!r}) before importing keras, set KERAS_BACKEND={wanted}, "
        f"or run `digitlab train --model {model}`."
    )


def _set(backend: str) -> None:
    os.environ["KERAS_BACKEND"] = backend
    os.environ[MARKER] = backend
