"""An embedded sweep's Ray worker processes import Keras (and JAX) as they start, in a thread.

    from digitlab.sweep import warmup
    with warmup.workers_import_early():     # around ray.init (`raytune`'s embedded Ray)
        ...
    actor.options(runtime_env=warmup.NOT_A_TRIAL)   # a worker that trains nothing (the run-file store)

A trial worker spent 1.2 CPU-seconds importing Keras and JAX when its first trial trained, after
Ray's start, Tune's and its own import of Tune, and before its first epoch. Ray starts one worker
process per CPU when the driver connects, idle until an actor takes it, and Tune's trials take
them (`ray_patches`, patch 6). Here a `sitecustomize` module, first on the PYTHONPATH that Ray's
processes inherit, starts that import in a thread the moment a Ray worker process starts
(`start`), so it runs while Ray and Tune start, and beside the worker's own import of Tune. It
imports `digitlab` first, which chooses Keras's backend and JAX's compilation cache as every
trial's own import would, so the trial trains on the same backend, bit for bit.

Only Ray's worker processes (`default_worker.py`) do it; Ray's other Python processes go on at
once, and so does a worker whose runtime environment says NOT_A_TRIAL (the run-file store's
actor). A `sitecustomize` that the stand-in shadows (the environment's own) is run as well. The
folder is one per user, rewritten at each sweep and left in place (one small file), as
`ray_patches.without_unused_import`'s. DIGITLAB_SWEEP_NO_WARMUP=1 leaves it out, to measure it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from digitlab import atomic

# Set to 1 to start the embedded Ray without the stand-in (to measure what it saves).
DISABLE_ENV = "DIGITLAB_SWEEP_NO_WARMUP"
# In the environment of a worker that trains nothing.
ROLE_ENV = "DIGITLAB_SWEEP_WORKER"
NOT_A_TRIAL = {"env_vars": {ROLE_ENV: "no trial"}}
# The import waits for the worker to connect to Ray (importing Ray, registering), at most this long
# (seconds): Ray starts at most one worker per CPU at a time, so a slower start holds back the next.
CONNECT_WAIT_S = 10.0

# The stand-in: it runs the sitecustomize it shadows, if any, then, in a Ray worker, `start`.
SITECUSTOMIZE = '''"""Written by digitlab.sweep.warmup (see there): a sweep's Ray workers import Keras early."""
import importlib.machinery
import importlib.util
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.machinery.PathFinder.find_spec(
    "sitecustomize", [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != _here]
)
if _spec is not None and _spec.loader is not None:
    _shadowed = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_shadowed)
if sys.argv and os.path.basename(sys.argv[0]) == "default_worker.py":
    from digitlab.sweep import warmup

    warmup.start()
'''


@contextlib.contextmanager
def workers_import_early():
    """Puts the `sitecustomize` stand-in first on the PYTHONPATH of the processes Ray starts meanwhile."""
    if os.environ.get(DISABLE_ENV) == "1":
        yield
        return
    with first_on_pythonpath("warmup", "sitecustomize", SITECUSTOMIZE):
        yield


@contextlib.contextmanager
def first_on_pythonpath(folder_name: str, module: str, text: str):
    """Writes the module `module` (its source `text`) into a folder of this user's, digitlab-ray-FOLDER_NAME-UID
    in the temporary folder, and puts that folder first on PYTHONPATH, for the processes started meanwhile.
    The folder is kept (one small file, rewritten each time): a sweep killed with SIGKILL leaves nothing behind."""
    folder = Path(tempfile.gettempdir(), f"digitlab-ray-{folder_name}-{os.getuid()}")
    folder.mkdir(exist_ok=True)
    atomic.write_text(folder / f"{module}.py", text)
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(folder), *([saved] if saved else [])])
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def start() -> threading.Thread | None:
    """In a Ray worker process (the stand-in calls it): Keras imported in a daemon thread, unless the
    worker trains nothing (ROLE_ENV); the thread, or None."""
    if os.environ.get(ROLE_ENV):
        return None
    thread = threading.Thread(target=_import_keras, name="digitlab-warmup", daemon=True)
    thread.start()
    return thread


def _import_keras() -> None:
    """Waits until the worker has connected to Ray (its own start is not slowed), then imports Keras."""
    deadline = time.monotonic() + CONNECT_WAIT_S
    while time.monotonic() < deadline:
        worker = getattr(sys.modules.get("ray._private.worker"), "global_worker", None)
        if getattr(worker, "connected", False):
            break
        time.sleep(0.02)
    try:
        import keras  # noqa: F401  (with KERAS_BACKEND as `import digitlab` left it)
    except Exception:  # noqa: S110  (the trial imports it again, and says what is wrong)
        pass
