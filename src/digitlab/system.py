"""What a run or a benchmark ran on: the software versions and the machine, in one place.

Read without importing Keras, JAX or TensorFlow (package metadata and /proc only),
so a benchmark can describe its machine before any backend is loaded.

    from digitlab import system
    system.software_versions()   # {"python": "3.11.7", "keras": "3.15.1", "jax": ..., ...}
    system.machine_info()        # {"cpu": "AMD EPYC ...", "cores": 2, "architecture": "x86_64"}
    system.machine_info(versions_of=("keras", "jax"))   # ... and "python", "keras", "jax": their versions
    system.process_alive(1234)   # whether that process runs on this machine
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

# The packages that decide a run's numbers; those not installed are left out.
PACKAGES = ("digitlab", "keras", "jax", "jaxlib", "numpy", "tensorflow", "tensorflow-cpu", "torch")
NOT_INSTALLED = "not installed"


def software_versions() -> dict[str, str]:
    """Python's version and each installed package of `PACKAGES`, by its distribution name."""
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def version_of(versions: dict[str, str], package: str) -> str:
    """A package's version from `software_versions()`; TensorFlow's CPU build counts as TensorFlow."""
    if package == "tensorflow":
        return versions.get("tensorflow") or versions.get("tensorflow-cpu") or NOT_INSTALLED
    return versions.get(package, NOT_INSTALLED)


def machine_info(versions_of: tuple[str, ...] = ()) -> dict:
    """The CPU's name, its core count and the architecture; with `versions_of`, also Python's version and
    each of those packages' (`version_of`: NOT_INSTALLED where it is missing), as a benchmark names them."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict = {"cpu": cpu, "cores": os.cpu_count(), "architecture": platform.machine()}
    if versions_of:
        versions = software_versions()
        info["python"] = versions["python"]
        info.update({package: version_of(versions, package) for package in versions_of})
    return info


def machine_name() -> str:
    """The CPU and its cores, as a benchmark's first line names them: "AMD EPYC ... (2 cores)"."""
    info = machine_info()
    return f"{info['cpu']} ({info['cores']} cores)"


def machine_summary() -> str:
    """One line for a run's metrics: "x86_64, 2 CPUs"."""
    info = machine_info()
    return f"{info['architecture']}, {info['cores']} CPUs"


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
