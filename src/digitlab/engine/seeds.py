"""`SeedThreads`: N seeds trained by one `NumpyBackend` per core, in threads (the CPU path of `--seeds N`).

`FastEngine` builds it when it trains more than one network on more than one core. Each
thread trains its share of the networks, on views of one stacked state; the C kernel
(ctypes) releases the GIL for whole epochs, so the threads run on every core.
"""

from __future__ import annotations

import itertools
from concurrent import futures

import numpy as np

from digitlab.engine import blas, spec
from digitlab.engine.numpy_backend import NumpyBackend, page_aligned


class SeedThreads:
    """N models trained by one `NumpyBackend` per core, each on its share of the models, in threads.

    The models are independent, so the groups never wait for each other within an
    epoch; the C kernel (ctypes) and NumPy's larger operations release the GIL.
    Each group trains views of this object's stacked arrays, so `state()` and
    `load()` see and set every model at once; the MNIST rows for the C kernel are
    built once and shared. OpenBLAS is held to `threads` (one) per thread for the epoch.
    """

    def __init__(
        self,
        network: spec.NetworkSpec,
        batch_size: int,
        state: dict,
        threads: int | None,
        workers: int,
        follow_speed: bool = True,
    ):
        self.threads = threads
        # Page-aligned, as NumpyBackend's own copies; each group's models are slices of them (copy=False).
        self.arrays = {name: page_aligned(value) for name, value in state.items()}
        count = len(self.arrays["dense_0/kernel"])
        bounds = np.linspace(0, count, min(workers, count) + 1).astype(int)
        self.slices = [slice(start, stop) for start, stop in itertools.pairwise(bounds)]
        self.groups = [
            NumpyBackend(
                network,
                batch_size,
                {
                    # The step count is one number per group (all groups step together); the rest are views.
                    name: np.array(value) if value.ndim == 0 else value[part]
                    for name, value in self.arrays.items()
                },
                threads=None,
                copy=False,
                epoch_threads=max(1, workers // len(self.slices)),
                follow_speed=follow_speed,
            )
            for part in self.slices
        ]
        self.pool = futures.ThreadPoolExecutor(max_workers=len(self.groups), thread_name_prefix="digitlab-seeds")

    @property
    def path(self) -> str:
        """How the first layer runs, in words, and over how many threads the seeds go."""
        return f"{self.groups[0].path}; {len(self.groups)} threads over the seeds"

    @property
    def kernel(self) -> str:
        """The first layer's code, as each group's (`NumpyBackend.kernel`)."""
        return self.groups[0].kernel

    @property
    def thread_counts(self):
        """Epochs per number of threads each network ran on (every group steps together)."""
        return self.groups[0].thread_counts

    @property
    def profile_threads(self) -> int:
        """The profile rows of all the groups together (`NumpyBackend.profile_threads`)."""
        return sum(group.profile_threads for group in self.groups)

    @property
    def profile_names(self) -> tuple[str, ...]:
        """The C epoch's phases, as each group's (`NumpyBackend.profile_names`)."""
        return self.groups[0].profile_names

    def profile_into(self, rows: np.ndarray) -> None:
        """Each group's threads get their own rows of `rows`, in group order."""
        first = 0
        for group in self.groups:
            group.profile_into(rows[first : first + group.profile_threads])
            first += group.profile_threads

    def state(self) -> dict:
        """All the seeds' arrays as one checkpoint's."""
        self.arrays["iterations"][...] = self.groups[0].arrays["iterations"]
        return self.arrays

    def load(self, state: dict) -> None:
        """Copies a checkpoint's arrays into every group."""
        for name, value in state.items():
            self.arrays[name][...] = value
        for group in self.groups:
            group.arrays["iterations"][...] = self.arrays["iterations"]

    def start(self, x, y, validation) -> None:
        """Starts every group on the data with one first-layer plan, its CSR rows built once."""
        first_layer = self.groups[0].plan_first_layer(x, validation)  # One plan, its CSR rows built once.
        for group in self.groups:
            group.start(x, y, validation, first_layer)

    def _each(self, method: str, *per_group):
        with blas.BlasThreads(self.threads):
            jobs = [
                self.pool.submit(getattr(group, method), *(args[index] for args in per_group))
                for index, group in enumerate(self.groups)
            ]
            results = [job.result() for job in jobs]
        return np.concatenate([loss for loss, _ in results]), np.concatenate([hits for _, hits in results])

    def train_epoch(self, orders: np.ndarray):
        """Trains one epoch, each group on its seeds' orders in its own thread; all the losses and counts."""
        return self._each("train_epoch", [orders[part] for part in self.slices])

    def evaluate(self):
        """Every group's validation loss sums and correct counts, each in its own thread."""
        return self._each("evaluate")
