"""OpenBLAS thread control: how many threads NumPy's matrix products use, for one block of code.

    from digitlab.engine import blas
    with blas.BlasThreads(1):
        np.matmul(left, right, out=product)   # on one OpenBLAS thread

The NumPy backend trains inside `BlasThreads(threads)` (one thread measured
fastest for its small products), and `digitlab bench` measures this machine's
matrix-multiply speed on all cores and on one. It finds every OpenBLAS loaded
in the process (NumPy's and SciPy's may be separate copies) through
`/proc/self/maps`, so where there is none (another BLAS, another OS) it does nothing.
"""

from __future__ import annotations

import ctypes
from typing import Any


class BlasThreads:
    """Sets every loaded OpenBLAS's thread count for a block (no-op when `count` is None)."""

    _libraries: list | None = None

    def __init__(self, count: int | None):
        self.count = count
        self.previous: list[tuple[Any, int]] = []

    @classmethod
    def libraries(cls) -> list:
        """(set, get) function pairs of the OpenBLAS copies loaded in this process (NumPy's, SciPy's)."""
        if cls._libraries is None:
            cls._libraries = []
            try:
                with open("/proc/self/maps") as maps:
                    paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower()})
            except OSError:
                paths = []
            for path in paths:
                try:
                    library = ctypes.CDLL(path)
                except OSError:
                    continue
                for name in ("scipy_openblas{}64_", "scipy_openblas{}_64_", "openblas{}64_", "openblas{}"):
                    setter = getattr(library, name.format("_set_num_threads"), None)
                    getter = getattr(library, name.format("_get_num_threads"), None)
                    if setter is not None and getter is not None:
                        cls._libraries.append((setter, getter))
                        break
        return cls._libraries

    def __enter__(self):
        if self.count:
            for setter, getter in self.libraries():
                self.previous.append((setter, getter()))
                setter(int(self.count))
        return self

    def __exit__(self, *exc):
        for setter, count in self.previous:
            setter(int(count))
        self.previous = []
        return False
