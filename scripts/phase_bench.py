"""Where an epoch of the book's net goes, phase by phase: the browser's engine (WebAssembly, in node) against
`digitlab train`'s native engine (its default fast path, and the portable C path that the browser's bits
equal), in one run, with each phase's ratio to the native default (issue 23's speed target).

    python scripts/phase_bench.py                    # 4 epochs on all 60,000 images, 1 and 2 threads
    python scripts/phase_bench.py --epochs 3 --threads 1 --train-limit 10000

Each side trains the book's net (784-64 sigmoid-10 softmax, MSE, SGD 0.01, batch 128) with the C engine's
per-phase timing (the profile `digitlab bench --profile` reads): the native sides through FastEngine, each
in a process of its own (DIGITLAB_KERNEL_SCALAR=1 chooses the portable path), the browser's engine through
scripts/wasm_profile.mjs in node (the same V8 as Chromium; the page's own costs around the engine are in
scripts/browser_bench.py). The sides run --rounds times each, alternating; the first epoch of each run is
left out (the engines warm up: V8 compiles the module in tiers), and each figure is its least over the
other epochs (other programs' load only adds time), seconds per epoch, for thread 0 (the other threads'
phases are alike; their waits show how they balance). Natively `digitlab train` uses fewer threads while
other programs hold the cores (engine/cores.py): the heading says how many ran. Validation is the 10,000
test images' forward pass after every epoch, timed apart.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from digitlab import data, system

ROOT = Path(__file__).resolve().parent.parent
# The engine's phases (engine/timing.py's PHASES, in _train.c's order), as wasm_profile.mjs names them.
PHASES = [
    ("first_forward", "first layer forward (with the batch's transpose, and the sigmoid)"),
    ("above", "layers above, forward (with the softmax)"),
    ("loss", "loss and its gradient"),
    ("backward", "backward"),
    ("wait_rows", "wait after the rows"),
    ("first_update", "first layer update"),
    ("other_updates", "other updates"),
    ("wait_updates", "wait after the updates"),
    ("setup", "threads and buffers"),
]


def native_worker(threads: int, epochs: int, train_limit: int | None) -> dict:
    """Trains in this process (the kernel DIGITLAB_KERNEL_SCALAR chose): each epoch's phases after the first."""
    from digitlab import models
    from digitlab.config import TrainConfig
    from digitlab.engine import timing
    from digitlab.engine.fast import FastEngine

    config = TrainConfig(
        model="shallow", loss="mean_squared_error", optimizer="sgd", learning_rate=0.01, batch_size=128
    ).resolved()
    (x_train, y_train), (x_test, y_test) = data.load_mnist()
    x_train, y_train = x_train[:train_limit], y_train[:train_limit]
    engine = FastEngine([models.create_model(config)], config, backend="numpy", workers=threads, profile=True)
    x, y = data.to_inputs(x_train), data.to_targets(y_train)
    valid = (data.to_inputs(x_test), data.to_targets(y_test))
    rng = np.random.RandomState(0)
    engine.fit(x, y, validation_data=valid, epochs=1, rngs=[rng])
    assert engine.profile is not None
    names = dict(zip(timing.PHASES, (key for key, _ in PHASES), strict=True))
    epochs_seen, ran = [], 1
    for epoch in range(1, epochs + 1):
        engine.profile.reset()
        engine.fit(x, y, validation_data=valid, epochs=epoch + 1, initial_epoch=epoch, rngs=[rng])
        measured = engine.profile.per_epoch()
        ran = max(ran, len(measured["phases"]["loss"]))
        epochs_seen.append(
            {
                "phases": {names[name]: values[0] for name, values in measured["phases"].items()},
                "validation": measured[timing.VALIDATION],
                "epoch": measured["train"] + measured[timing.VALIDATION],
            }
        )
    return {"kernel": engine.kernel, "threads": ran, "epochs": epochs_seen}


def native(scalar: bool, threads: int, args) -> dict:
    """native_worker in a process of its own (the kernel is chosen when the engine loads)."""
    environment = dict(os.environ, OMP_NUM_THREADS=str(threads))
    environment.pop("DIGITLAB_KERNEL_SCALAR", None)
    if scalar:
        environment["DIGITLAB_KERNEL_SCALAR"] = "1"
    command = [sys.executable, __file__, "--native-worker", str(threads), "--epochs", str(args.epochs)]
    if args.train_limit:
        command += ["--train-limit", str(args.train_limit)]
    done = subprocess.run(command, env=environment, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def wasm(folder: Path, threads: int, args) -> dict:
    """scripts/wasm_profile.mjs in node: its epochs after the first, thread 0's phases."""
    command = ["node", str(ROOT / "scripts" / "wasm_profile.mjs"), str(folder), "--epochs", str(args.epochs + 1)]
    done = subprocess.run(command + ["--threads", str(threads)], capture_output=True, text=True, check=True)
    lines = [json.loads(line) for line in done.stdout.strip().splitlines()]
    build = lines[0]
    epochs = [
        {
            "phases": {key: epoch["phases"][key][0] for key, _ in PHASES},
            "validation": epoch["validation"],
            "permutation": epoch["permutation"],
            "epoch": epoch["train_epoch"] + epoch["validation"] + epoch["permutation"],
        }
        for epoch in lines[2:]
    ]
    return {"kernel": build["build"], "threads": build["threads"], "epochs": epochs}


def best(runs: list[dict]) -> dict:
    """The rounds' runs of one side as one: each figure's least over every epoch of every round (the load
    that other programs put on the machine only adds time)."""
    epochs = [epoch for run in runs for epoch in run["epochs"]]
    least = lambda pick: min(pick(epoch) for epoch in epochs)  # noqa: E731
    summary = {
        "kernel": runs[0]["kernel"],
        "threads": max(run["threads"] for run in runs),
        "phases": {key: least(lambda epoch, key=key: epoch["phases"][key]) for key, _ in PHASES},
        "validation": least(lambda epoch: epoch["validation"]),
        "epoch": least(lambda epoch: epoch["epoch"]),
    }
    if "permutation" in epochs[0]:
        summary["permutation"] = least(lambda epoch: epoch["permutation"])
    return summary


def write_mnist(folder: Path, train_limit: int | None) -> None:
    """MNIST as the raw uint8 files wasm_profile.mjs reads."""
    (x_train, y_train), (x_test, y_test) = data.load_mnist()
    arrays = {"x_train": x_train[:train_limit], "y_train": y_train[:train_limit], "x_test": x_test, "y_test": y_test}
    for name, array in arrays.items():
        np.ascontiguousarray(array, np.uint8).tofile(folder / f"{name}.bin")


def table(results: dict, args) -> str:
    """One markdown table per thread count: seconds per epoch and the ratio to the native default."""
    lines = [
        f"Where an epoch goes: the book's net, {args.train_limit or 60000:,} images; each figure the least of "
        f"{args.rounds} x {args.epochs} epochs (after each run's first), thread 0. {system.machine_summary()}; "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.",
    ]
    for threads, sides in results.items():
        anchor, portable, browser = sides["native"], sides["portable"], sides["wasm"]
        lines += [
            "",
            f"{threads} thread(s): native {anchor['kernel']} ({anchor['threads']} ran), portable C, "
            f"WebAssembly {browser['kernel']} in node ({browser['threads']} ran); seconds per epoch",
            "",
            f"| phase | native {anchor['kernel']} | portable C | WebAssembly | WebAssembly / native |",
            "|---|---:|---:|---:|---:|",
        ]
        rows = [(label, key) for key, label in PHASES] + [("validation (10,000 images)", None)]
        for label, key in rows:
            values = [side["phases"][key] if key else side["validation"] for side in (anchor, portable, browser)]
            ratio = f"{values[2] / values[0]:.2f}x" if values[0] > 1e-4 else ""
            lines.append(f"| {label} | {values[0]:.4f} | {values[1]:.4f} | {values[2]:.4f} | {ratio} |")
        order = browser["permutation"]
        lines.append(f"| the batch order, drawn in JavaScript (engine.js's NumpyRandomState) | | | {order:.4f} | |")
        epochs = [side["epoch"] for side in (anchor, portable, browser)]
        lines.append(
            f"| **the epoch** | {epochs[0]:.4f} | {epochs[1]:.4f} | {epochs[2]:.4f} | {epochs[2] / epochs[0]:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    """Parses the flags, measures every side for each thread count and prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs timed after the first (default: 3)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each side, alternating (default: 2)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (default: 1 2)")
    parser.add_argument("--train-limit", type=int, default=None, help="training images (default: all 60,000)")
    parser.add_argument("--native-worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.native_worker:
        print(json.dumps(native_worker(args.native_worker, args.epochs, args.train_limit)))
        return
    results = {}
    with tempfile.TemporaryDirectory() as temporary:
        write_mnist(Path(temporary), args.train_limit)
        for threads in args.threads:
            print(f"Measuring {threads} thread(s)...", file=sys.stderr, flush=True)
            runs: dict[str, list[dict]] = {"native": [], "portable": [], "wasm": []}
            for _ in range(args.rounds):  # The sides alternate, so that a change in the load falls on each.
                runs["native"].append(native(False, threads, args))
                runs["portable"].append(native(True, threads, args))
                runs["wasm"].append(wasm(Path(temporary), threads, args))
            results[threads] = {side: best(each) for side, each in runs.items()}
    print(table(results, args))


if __name__ == "__main__":
    main()
