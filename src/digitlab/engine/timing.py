"""Where an epoch goes: the fast engine's seconds per phase and thread, and each phase's own limit.

    fast = engine.FastEngine(models, cfg, profile=True)
    fast.fit(x, y, validation, epochs=3)
    fast.profile.per_epoch()            # {phase: [seconds per epoch, one per thread]}, validation, Python
    fast.profile.reset()                # e.g. after the first epoch, which includes warming up

The C epoch (`_train.c`) times its phases per thread with `clock_gettime` when it is given an array
to add them to (a few hundred nanoseconds a batch; nothing when it is not): the first layer's sparse
product (which also builds the batch's transpose), the layers above, the loss, the backward pass,
the waits at the two barriers, the two kinds of update, and the setup (buffers, threads). The deep net's
epoch (`_deep.c`) times its own phases (DEEP_PHASES) the same way.
`FastEngine.fit` adds validation and the Python between the C calls. `work` counts what each phase
must do for one network's epoch (multiply-adds, and the bytes it reads from each level of memory),
from which `digitlab bench --profile` gives each phase its limit on this machine.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools

import numpy as np

# The C epoch's phases, in the order of its enum (digitlab_profile_phases() checks the count).
PHASES = (
    "first layer forward",  # With the transpose of the batch, which the forward pass builds.
    "layers above, forward",
    "loss",
    "backward",
    "wait after the rows",
    "first layer update",
    "other updates",
    "wait after the updates",
    "threads and buffers",
)
# The deep net's C epoch (`_deep.c`, BatchNormalization, Adam), in the order of its enum (deep.profile_phases()).
DEEP_PHASES = (
    "first layer forward",  # With the transpose of the batch, which the forward pass builds.
    "layers above, forward",  # With the Dropout and applying the BatchNormalization.
    "BatchNormalization statistics",
    "loss",
    "backward",
    "first layer gradient",  # Where it is summed apart (not Adam on AVX-512: the update holds it there).
    "other gradients",  # The other kernels', the biases', BatchNormalization's sums.
    "first layer update",
    "other updates",
    "waits at the barriers",
    "threads and buffers",
)
# Timed by FastEngine.fit around the C calls.
VALIDATION, PYTHON = "validation", "Python between epochs"


@dataclasses.dataclass
class Profile:
    """What `FastEngine.fit` measured over `epochs`: seconds in the C phases per thread (`phases`, threads x
    `names`, filled by the C epoch where it runs), in the training calls altogether, in validation, and in
    Python around them; and how many epochs ran on each number of threads per network."""

    threads: int
    names: tuple[str, ...] = PHASES  # The C epoch's phases: PHASES, or DEEP_PHASES for the deep net's.
    phases: np.ndarray = dataclasses.field(init=False)
    train: float = 0.0
    validation: float = 0.0
    python: float = 0.0
    epochs: int = 0
    thread_counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def __post_init__(self):
        self.phases = np.zeros((self.threads, len(self.names)))

    def reset(self) -> None:
        """Forgets what was measured so far (in place: the backends keep adding to the same array)."""
        self.phases[...] = 0.0
        self.train = self.validation = self.python = 0.0
        self.epochs = 0
        self.thread_counts.clear()

    def per_epoch(self) -> dict:
        """Mean seconds per epoch: each C phase per thread that ran, validation and Python (with the training
        call's own Python: its time outside the busiest thread's phases); the epochs; the epochs per thread count."""
        epochs = max(self.epochs, 1)
        busy = self.phases.sum(axis=1)
        seconds = self.phases[busy > 0] / epochs  # The threads that ran (fewer while other programs are busy).
        outside = self.train - float(busy.max()) if self.threads else 0.0
        return {
            "epochs": self.epochs,
            "phases": {name: [float(value) for value in seconds[:, k]] for k, name in enumerate(self.names)},
            "train": self.train / epochs,
            VALIDATION: self.validation / epochs,
            PYTHON: (self.python + max(outside, 0.0)) / epochs,
            "thread_counts": {str(count): seen for count, seen in sorted(self.thread_counts.items())},
        }


def work(layer_sizes: list[int], train: np.ndarray, valid: np.ndarray, batch_size: int, seed: int = 0) -> dict:
    """What each phase must do in one epoch of one network: {phase: {"flops": F, "bytes": {level: B}}}.

    `train` and `valid` are the images (rows); the first layer works on their nonzero pixels only.
    "l1", "l2" and "memory" say where the bytes come from at best: the first layer's kernel (784 x 64
    floats, 200 KB) lives in L2, a batch's gradient rows in L1, the images in memory. The touched
    pixels (the kernel rows each batch updates) are counted over one shuffled epoch.
    """
    units = layer_sizes[1]
    above = sum(inputs * outputs for inputs, outputs in itertools.pairwise(layer_sizes[1:]))
    biases = sum(layer_sizes[1:])
    rows, valid_rows = len(train), len(valid)
    nonzero_rows, nonzero_cols = np.nonzero(train)
    nonzeros, valid_nonzeros = len(nonzero_rows), int(np.count_nonzero(valid))
    order = np.random.RandomState(seed).permutation(rows)
    batch_of = np.empty(rows, np.int64)
    batch_of[order] = np.arange(rows) // batch_size
    touched = len(np.unique(batch_of[nonzero_rows] * layer_sizes[0] + nonzero_cols))
    floats = 4
    image_bytes = 2 + floats  # A nonzero pixel in CSR: its column (uint16) and value.
    return {
        "first layer forward": {
            "flops": 2 * nonzeros * units,
            "bytes": {"l2": nonzeros * units * floats, "memory": nonzeros * image_bytes},
        },
        "layers above, forward": {"flops": 2 * rows * above, "bytes": {}},
        "loss": {"flops": 0, "bytes": {}},
        "backward": {"flops": 2 * rows * above, "bytes": {}},
        "first layer update": {
            "flops": 2 * nonzeros * units + 2 * touched * units,
            "bytes": {"l1": nonzeros * units * floats, "l2": 2 * touched * units * floats},
        },
        "other updates": {"flops": 2 * rows * above + rows * biases, "bytes": {}},
        VALIDATION: {
            "flops": 2 * valid_nonzeros * units + 2 * valid_rows * above,
            "bytes": {"l2": valid_nonzeros * units * floats, "memory": valid_nonzeros * image_bytes},
        },
    }


def limit_seconds(work_of_phase: dict, flops_per_second: float, bandwidths: dict[str, float]) -> tuple[float, str]:
    """A phase's least time: its multiply-adds at the matrix-multiply speed, or its bytes at each level's
    bandwidth, whichever is longer; and which it was ("arithmetic", "l1", "l2", "memory"; "" for none)."""
    candidates = [(work_of_phase["flops"] / flops_per_second, "arithmetic")] if work_of_phase["flops"] else []
    candidates += [(size / bandwidths[level], level) for level, size in work_of_phase["bytes"].items() if size]
    return max(candidates, default=(0.0, ""))
