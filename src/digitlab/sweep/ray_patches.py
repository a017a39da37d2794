"""Every place digitlab reaches into Ray's and Tune's private parts, why, and a check that each still applies.

Import it before Ray (`digitlab.sweep.raytune` does, first): importing it sets the environment
and the module stub that must be in place when `import ray` runs, then imports Ray.

1. `rfc3987_syntax` stubbed in `sys.modules`, and a stand-in for it first on Ray's processes'
   PYTHONPATH (`without_unused_import`). `import ray` imports jsonschema, which imports
   rfc3987-syntax where it is installed (JupyterLab's jupyter-events brings it into digitlab's
   environment), and rfc3987-syntax compiles its IRI grammar when it is imported: 2.4 s of CPU in
   every Python process of Ray (an embedded sweep has about 12). jsonschema goes without it (it only
   checks "iri" formats, which Ray never asks for). Measured on the 2-core machine: Ray's start
   20.5 s against 7.8 s without it, a 4-trial sweep 73.6 against 46.1 CPU-seconds (docs/sweeps.md).
   UNUSED_IMPORT_ENV=1 keeps it, to measure the difference.
2. `ray._private.ray_constants.ENABLE_RAY_CLUSTER` set False, with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
   (`on_loopback`): Ray's single-machine mode, in which every Ray process listens on 127.0.0.1 only.
   Ray 2.60 has no public way to say so (`--node-ip-address 127.0.0.1` is replaced by the machine's
   address); tests/test_sweep.py's test of the listening sockets checks that it still holds.
3. Tune's private `TrialProgressCallback._print` overridden (`SilentTrialPrinter`): Tune adds its own
   per-trial printer unless one is given, and even at verbose=0 it prints "Trial ... completed".
4. TUNE_DISABLE_SIGINT_HANDLER=1 (`before_import`): Ctrl-C reaches digitlab as KeyboardInterrupt,
   which marks the sweep interrupted and resumable, instead of Tune's own handler.
5. File descriptor 2 sent to a file (`stderr_to`): Ray's C++ core and Tune write there directly,
   past Python's sys.stderr, so only that redirect keeps the terminal to the progress line.
6. Tune's private `_ActorClassCache.get` replaced while an embedded Ray's trials run (`trial_workers_prestarted`):
   Tune gives every trial actor the runtime environment {"env_vars": {"PL_DISABLE_FORK": "1"}} (for
   PyTorch Lightning, which digitlab does not use), and a worker process Ray started beforehand
   (Ray starts one per CPU when the driver connects, idle until used) takes only tasks and actors
   of its own runtime environment, the empty one: so every trial waited for a new process. Without
   it (where the driver has none of the variables Tune passes on; otherwise Tune's way is kept) the
   first trials start in those workers. Measured on the loaded 2-core machine: Tune's start to the
   first trials' return 3.3-4.0 s against 2.2 s.

Each will break first on a Ray upgrade. `check()` says which of 2-4 and 6 no longer applies, naming Ray's
version; tests/test_sweep.py runs it in the fast tier. 1 and 5 touch nothing of Ray's (a newer Ray
that stops importing jsonschema makes 1 useless, not wrong); the heavy sweep tests check their effect.

    from digitlab.sweep import ray_patches      # before `import ray`
    ray_patches.check()                          # RuntimeError naming Ray's version and the broken patch
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
import tempfile
from pathlib import Path

from digitlab import atomic

UNUSED_IMPORT = "rfc3987_syntax"
UNUSED_IMPORT_ENV = "DIGITLAB_SWEEP_KEEP_RFC3987"
# Ray's switch for a Ray on one machine only (see `on_loopback`).
SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
SIGINT_ENV = "TUNE_DISABLE_SIGINT_HANDLER"


def before_import() -> None:
    """The environment and the module stub Ray must see when it is imported: no printing, no usage stats,
    no SIGINT handler of Tune's, no UNUSED_IMPORT (patches 1 and 4)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ[SIGINT_ENV] = "1"
    if os.environ.get(UNUSED_IMPORT_ENV) != "1":
        sys.modules.setdefault(UNUSED_IMPORT, None)  # type: ignore[arg-type]  # None: "import it" raises ImportError.


before_import()
import ray  # noqa: E402  (after before_import, which Ray must see)
from ray._private import ray_constants  # noqa: E402
from ray.tune import tune as tune_module  # noqa: E402
from ray.tune.execution import class_cache  # noqa: E402
from ray.tune.progress_reporter import TrialProgressCallback  # noqa: E402


@contextlib.contextmanager
def without_unused_import():
    """Ray's processes inherit PYTHONPATH: a folder on it first holds a stand-in for UNUSED_IMPORT
    that raises ImportError, as the package's absence does (jsonschema then does without it). Ray's
    two agents are the exception: its raylet starts them without PYTHONPATH (patch 1)."""
    if os.environ.get(UNUSED_IMPORT_ENV) == "1":
        yield
        return
    # One folder per user, kept (one small file): a sweep killed with SIGKILL leaves nothing behind.
    folder = Path(tempfile.gettempdir(), f"digitlab-ray-path-{os.getuid()}")
    folder.mkdir(exist_ok=True)
    atomic.write_text(
        folder / f"{UNUSED_IMPORT}.py",
        f"raise ImportError(\"{UNUSED_IMPORT} is left out of digitlab's embedded Ray "
        '(see digitlab.sweep.ray_patches)")\n',
    )
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(folder), *([saved] if saved else [])])
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


@contextlib.contextmanager
def on_loopback():
    """Starts the embedded Ray in Ray's single-machine mode: its node address is 127.0.0.1, and
    with that address every Ray process (GCS, raylet, object manager, workers, agents) listens on
    127.0.0.1 only, where by default they listen on every interface. Ray reads the switch from its
    environment when it is imported (this process has imported it already, so the module's
    constant is set too) and passes it to the processes it starts (patch 2)."""
    saved = os.environ.get(SINGLE_MACHINE_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[SINGLE_MACHINE_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if saved[0] is None:
            os.environ.pop(SINGLE_MACHINE_ENV, None)
        else:
            os.environ[SINGLE_MACHINE_ENV] = saved[0]
        ray_constants.ENABLE_RAY_CLUSTER = saved[1]


@contextlib.contextmanager
def stderr_to(log):
    """Sends what Ray's C++ core and Tune write straight to file descriptor 2 into the open file
    `log`, so the terminal shows only the progress line; Python's sys.stderr stays the terminal (patch 5)."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    sys.stderr.flush()
    original = sys.stderr
    terminal = os.fdopen(os.dup(saved), "w", buffering=1)
    os.dup2(log.fileno(), 2)
    sys.stderr = terminal
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        sys.stderr = original
        terminal.close()


@contextlib.contextmanager
def trial_workers_prestarted():
    """Tune's trial actors without a runtime environment of their own, so that they take the worker
    processes Ray started beforehand; Tune's own way where the driver has a variable Tune passes on (patch 6)."""
    cache = class_cache._ActorClassCache
    original = cache.get

    def get(self, trainable_cls):
        passed_on = [name for name in class_cache.ENV_VARS_TO_PROPAGATE if name in os.environ]
        if passed_on or trainable_cls in self._cache:
            return original(self, trainable_cls)
        self._cache[trainable_cls] = ray.remote(trainable_cls)
        return self._cache[trainable_cls]

    cache.get = get
    try:
        yield
    finally:
        cache.get = original


class SilentTrialPrinter(TrialProgressCallback):
    """Tune's own per-trial printer, given so that Tune adds no other, and silenced: even at
    verbose=0 it prints "Trial ... completed" lines (patch 3)."""

    def _print(self, msg: str) -> None:
        pass


def check() -> None:
    """Raises RuntimeError, naming Ray's version, for each patch the installed Ray no longer takes."""
    broken = []
    if not isinstance(getattr(ray_constants, "ENABLE_RAY_CLUSTER", None), bool):
        broken.append("2: ray._private.ray_constants.ENABLE_RAY_CLUSTER is gone")
    if getattr(ray_constants, "ENABLE_RAY_CLUSTERS_ENV_VAR", None) != SINGLE_MACHINE_ENV:
        broken.append(f"2: ray._private.ray_constants no longer reads {SINGLE_MACHINE_ENV}")
    printer = TrialProgressCallback.__dict__.get("_print")
    if printer is None or list(inspect.signature(printer).parameters) != ["self", "msg"]:
        broken.append("3: ray.tune.progress_reporter.TrialProgressCallback._print(self, msg) is gone")
    if SIGINT_ENV not in inspect.getsource(tune_module):
        broken.append(f"4: ray.tune.tune no longer reads {SIGINT_ENV}")
    getter = getattr(getattr(class_cache, "_ActorClassCache", None), "get", None)
    if (
        getter is None
        or list(inspect.signature(getter).parameters) != ["self", "trainable_cls"]
        or "runtime_env" not in inspect.getsource(getter)
        or not isinstance(getattr(class_cache, "ENV_VARS_TO_PROPAGATE", None), set)
    ):
        broken.append("6: ray.tune.execution.class_cache._ActorClassCache.get(self, trainable_cls) is gone")
    if broken:
        raise RuntimeError(
            f"Ray {ray.__version__} no longer takes these of digitlab's patches ({'; '.join(broken)}). "
            "Update digitlab.sweep.ray_patches for this Ray (each patch's docstring says what it does and why), "
            "or install the Ray of requirements/lock.txt."
        )
