"""The first layer's AVX-512 versions against its AVX2 ones, in one run: the C epoch and its two first-layer phases.

    python scripts/first_layer_bench.py [--epochs 6] [--train-limit N] [--threads 1 2]

Trains the book's shallow net (784-64-10, sigmoid, MSE, SGD, batches of 128) with the engine's whole-epoch C
call, alternating epoch by epoch between the AVX2 versions (the anchor: DIGITLAB_KERNEL_AVX512=0) and the
AVX-512 ones, from the same weights in the same batch order, so both see the same load. It prints the machine,
its load average before and after, and one table: the best and median epoch (wall and CPU seconds of the C
call), the first layer's forward and update from the epoch's own profile (milliseconds, thread 0), and each
ratio AVX2 / AVX-512; then whether the two trained to the same bits (they must: each lane does the AVX2 FMAs in
their order). On a CPU without AVX-512 it says so and stops. Figures taken while other programs run are
estimates; `uptime` below 0.5 is a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from digitlab import data
from digitlab.engine import sparse, timing


def machine() -> str:
    """The processor's name (from /proc/cpuinfo where there is one) and its core count."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            name = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name}, {os.cpu_count()} cores"


def use(wide: bool) -> None:
    """Switches the library between its AVX-512 (True) and AVX2 (False) first layer."""
    os.environ[sparse.AVX512_VARIABLE] = "1" if wide else "0"
    sparse.reload()
    assert sparse.avx512() == wide


def run(rows, targets, labels, epochs: int, threads: int) -> list[str]:
    """One table row per version for `threads` threads, and the bits line."""
    rng = np.random.default_rng(0)
    initial = [
        (rng.standard_normal((784, 64)) * 0.05).astype(np.float32),
        np.zeros(64, np.float32),
        (rng.standard_normal((64, 10)) * 0.1).astype(np.float32),
        np.zeros(10, np.float32),
    ]
    names = {False: "AVX2 (anchor)", True: "AVX-512"}
    weights = {wide: [array.copy() for array in initial] for wide in names}
    plans = {
        wide: sparse.EpochPlan(arrays[0::2], arrays[1::2], ["sigmoid", "sigmoid"], "mean_squared_error", 0.01, 0.0)
        for wide, arrays in weights.items()
    }
    phases = timing.PHASES
    times: dict[bool, list[tuple[float, float]]] = {wide: [] for wide in names}
    profiles = {wide: np.zeros((threads, sparse.profile_phases())) for wide in names}
    for epoch in range(epochs):
        order = rng.permutation(len(labels)).astype(np.int64)
        for wide in (False, True) if epoch % 2 == 0 else (True, False):
            use(wide)
            profile = np.zeros_like(profiles[wide])
            wall, cpu = time.perf_counter(), time.process_time()
            sparse.train_epoch(rows, targets, labels, order, 128, plans[wide], threads=threads, profile=profile)
            times[wide].append((time.perf_counter() - wall, time.process_time() - cpu))
            if epoch > 0:  # The first epoch of each warms the caches.
                profiles[wide] += profile
    lines = []
    anchor = None
    for wide, name in names.items():
        walls, cpus = np.array(times[wide][1:]).T
        forward = 1000 * profiles[wide][0, phases.index("first layer forward")] / (epochs - 1)
        update = 1000 * profiles[wide][0, phases.index("first layer update")] / (epochs - 1)
        figures = (walls.min(), np.median(walls), cpus.min(), forward, update)
        anchor = anchor or figures
        ratios = " | ".join(f"{a / b:.2f}x" for a, b in zip(anchor, figures, strict=True))
        lines.append(
            f"| {name}, {threads} thread(s) | {figures[0]:.4f} | {figures[1]:.4f} | {figures[2]:.4f} "
            f"| {forward:.1f} | {update:.1f} | {ratios} |"
        )
    same = all(np.array_equal(a, b) for a, b in zip(weights[False], weights[True], strict=True))
    lines.append(f"| same bits after {epochs} epochs, {threads} thread(s) | {'yes' if same else 'NO'} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=6, help="epochs per version, alternating (default: 6)")
    parser.add_argument("--train-limit", type=int, default=None, help="training images (default: all 60,000)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="threads per epoch (default: 1 2)")
    args = parser.parse_args()
    os.environ[sparse.AVX512_VARIABLE] = "1"
    sparse.reload()
    if not (sparse.available() and sparse.simd() and sparse.avx512()):
        print("This machine runs no AVX-512 first layer (no AVX-512F, no AVX2 or no C kernel): nothing to compare.")
        return
    (x, y), _, _ = data.split(data.load_arrays(), train_limit=args.train_limit)
    labels = np.asarray(y, np.int64)
    rows, targets = sparse.SparseRows(data.to_inputs(x)), np.eye(10, dtype=np.float32)[labels]
    before = os.getloadavg()[0]
    print(f"{machine()}; {len(labels)} images, {args.epochs} epochs per version (the first not counted)")
    print(
        "| version | best epoch, wall s | median epoch, wall s | best epoch, CPU s | first layer forward, ms "
        "| first layer update, ms | AVX2 / this: best wall | median wall | best CPU | forward | update |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for threads in args.threads:
        for line in run(rows, targets, labels, max(2, args.epochs), threads):
            print(line)
    print(f"load average (1 min): {before:.2f} before, {os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()
