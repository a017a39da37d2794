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

Importing `digitlab` also turns on JAX's persistent compilation cache (`use_compilation_cache`),
in ~/.cache/digitlab/jax/KIND (KIND names the kind of processor): building the shallow net's
initial weights is XLA compilation (Keras's seeded initializers are jitted), 1.3-3 s of
`digitlab train`'s start-up on a loaded 2-core machine, and 0.3 s when the compiled programs come
from the cache (docs/engine.md, "Start-up"). The cache holds XLA's own executables, so the
weights, and every history, are the same bit for bit.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

DEFAULT = "jax"
# Measured per net (README, "The book's later nets"); nets not named here use DEFAULT.
FASTEST = {"lenet": "tensorflow"}
# Set beside KERAS_BACKEND when digitlab, not the user, chose it.
MARKER = "DIGITLAB_DEFAULT_BACKEND"
# JAX's persistent compilation cache: its folder (under the user's cache folder, one per kind of
# processor) and its size limit, past which JAX drops the entries used least recently. A shallow
# net's start-up writes about 100 kB into it.
COMPILATION_CACHE_FOLDER = ("digitlab", "jax")
COMPILATION_CACHE_BYTES = 256 * 1024 * 1024


def set_default() -> None:
    """Called on `import digitlab`: KERAS_BACKEND=jax unless the user set it; quiet TensorFlow logging."""
    if "KERAS_BACKEND" not in os.environ:
        _set(DEFAULT)
    quiet_tensorflow()
    use_compilation_cache()


def use_compilation_cache() -> None:
    """Points JAX's persistent compilation cache at digitlab's cache folder, unless the user said otherwise.

    JAX reads these settings from the environment when it is imported, so this runs before (on
    `import digitlab`), and the processes digitlab starts (a sweep's Ray workers, a test's
    `digitlab train`) inherit them. Every compiled program is kept (minimum compile time 0: the
    initializers' programs each take well under JAX's default second to compile, yet together they
    are most of the start-up). With a size limit JAX guards the folder with a file lock
    (`filelock`, which Ray brings), so that processes sharing it never read a half-written entry;
    without `filelock`, or where the folder cannot be written (a read-only home), the cache stays
    off. `JAX_COMPILATION_CACHE_DIR` set by the user wins; `JAX_ENABLE_COMPILATION_CACHE=false` turns
    it off.
    """
    if "jax" in sys.modules or "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return  # Too late to matter, or the user's own cache.
    if os.environ.get("JAX_ENABLE_COMPILATION_CACHE", "").lower() in ("0", "false"):
        return
    if importlib.util.find_spec("filelock") is None:
        return
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = base.joinpath(*COMPILATION_CACHE_FOLDER, _processor_key())
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return
    if not os.access(folder, os.W_OK | os.X_OK):
        return
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(folder)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(COMPILATION_CACHE_BYTES))


def quiet_tensorflow() -> None:
    """Keeps TensorFlow's start-up lines (oneDNN notices, XLA, CPU features) off the terminal.

    Must run before TensorFlow is imported (Keras imports it on its TensorFlow backend;
    TensorBoard imports it too). There are two kinds of line. TensorFlow's own C++ log
    obeys TF_CPP_MIN_LOG_LEVEL, set here to 3 unless the user set it. But TensorFlow 2.21
    logs some lines through absl before absl is initialised, which no setting silences:
    "All log messages before absl::InitializeLog() is called are written to STDERR" and,
    on CPUs where TensorFlow turns oneDNN on by default (those with AVX-512), "oneDNN custom
    operations are on", twice. All of them are written while `import tensorflow` runs, so
    the first import of TensorFlow is made with file descriptor 2 sent to a temporary file,
    which is written out after all if the import fails. A user who sets TF_CPP_MIN_LOG_LEVEL
    below 3 sees everything.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if (
        os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
        and "tensorflow" not in sys.modules
        and not any(isinstance(finder, _QuietTensorFlowImport) for finder in sys.meta_path)
    ):
        sys.meta_path.insert(0, _QuietTensorFlowImport())


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """An import hook for `tensorflow` alone: its first import runs with standard error quieted.

    `importlib.util.find_spec("tensorflow")` (which `installed` asks) also comes here without
    importing anything, so the hook stays until the import itself runs.
    """

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow":
            return None
        index = sys.meta_path.index(self)
        del sys.meta_path[index]  # The real finders find the package...
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(index, self)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader, self)  # ...and its import goes through _QuietLoader.
        return spec


class _QuietLoader(importlib.abc.Loader):
    """Runs another loader's `exec_module` with file descriptor 2 in a temporary file, then steps aside."""

    def __init__(self, loader, hook: _QuietTensorFlowImport):
        self.loader, self.hook = loader, hook

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        if self.hook in sys.meta_path:
            sys.meta_path.remove(self.hook)  # Once: TensorFlow is imported from here on.
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader  # TensorFlow's own code sees its real loader.
        with _standard_error_kept() as kept:
            try:
                self.loader.exec_module(module)
            except BaseException:
                kept.replay = True
                raise


class _standard_error_kept:
    """File descriptor 2 sent to a temporary file for a block; written out at its end if `replay`."""

    def __enter__(self):
        self.replay = False
        sys.stderr.flush()
        self.saved: int | None = None
        try:
            self.saved = os.dup(2)
        except OSError:
            return self  # No standard error to quiet.
        self.log = tempfile.TemporaryFile()
        os.dup2(self.log.fileno(), 2)
        return self

    def __exit__(self, *exc) -> None:
        if self.saved is None:
            return
        os.dup2(self.saved, 2)
        os.close(self.saved)
        if self.replay:
            self.log.seek(0)
            os.write(2, self.log.read())
        self.log.close()


@contextlib.contextmanager
def saving_without_tensorflow():
    """Saves or loads a Keras model on a backend other than TensorFlow without importing TensorFlow.

    Keras's serialization asks whether TensorFlow is available (`tf.available`, which imports
    it when it is installed) only to recognise TensorFlow objects such as `tf.TensorShape`.
    While TensorFlow is not imported no such object can exist, so for the block Keras is told
    that it is not available. This spares the commands that save or load a model on JAX the
    import of TensorFlow (its time and memory: README, "Backends"). Elsewhere it does nothing.
    """
    import keras

    lazy = None
    if "tensorflow" not in sys.modules and keras.backend.backend() != "tensorflow":
        try:
            from keras.src.utils import module_utils

            lazy = module_utils.tensorflow if module_utils.tensorflow._available is None else None
        except (ImportError, AttributeError):  # Another Keras: it imports TensorFlow as it likes.
            lazy = None
    if lazy is None:
        yield
        return
    lazy._available = False
    try:
        yield
    finally:
        lazy._available = None  # Asked again next time, as Keras would.


def _processor_key() -> str:
    """A short name for this kind of processor (architecture, model, instruction-set flags): XLA compiles
    for the CPU it runs on, so a home folder shared by different machines keeps one cache for each."""
    import hashlib
    import platform

    described = [platform.machine()]
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith(("model name", "flags", "Features", "CPU part")):
                    described.append(line.strip())
                elif not line.strip() and len(described) > 1:
                    break  # The first processor's block says it for all.
    except OSError:
        described.append(platform.processor())
    return hashlib.sha256("\n".join(described).encode()).hexdigest()[:16]


def user_chosen() -> str | None:
    """The backend the user set in KERAS_BACKEND, or None when it is unset or digitlab's own default."""
    value = os.environ.get("KERAS_BACKEND")
    if value is None or value == os.environ.get(MARKER):
        return None
    return value


def installed(backend: str) -> bool:
    """Whether the Keras backend's package (`jax`, `tensorflow`) is installed, found without importing it."""
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
