"""Where `digitlab train --seed 0` spends its time before the first epoch and after the last, in one table.

    python scripts/startup_bench.py                 # 3 epochs, 3 runs of each way
    python scripts/startup_bench.py --epochs 200    # the book's whole run
    python scripts/startup_bench.py --epochs 200 --baseline /path/to/other/checkout/src   # an A/B
    python scripts/startup_bench.py --pause 5       # each run 5 s after the last, as a user's commands

Three ways of running the same command, each `--repeats` times, a round of the three at a time:
with JAX's compilation cache empty (a first run on a machine), with it filled (every
later run: the default since digitlab turns the cache on), and with it off
(JAX_ENABLE_COMPILATION_CACHE=false, as before). Each row gives the median wall time
from the command to its first epoch's line, to its "Done" line and to its exit, and
the CPU seconds and peak memory of the process, and its time to "Done" against the
anchor's (the filled cache's; with `--baseline SRC`, the same command run from another
checkout's `src`, a round at a time with the others, e.g. the main branch's). A second
table times the phases inside one process the way the command runs them (imports, Keras's
import beside the data's loading and the engine's sparse rows in a thread: `startup`,
the Keras models, the engine, the first epoch, then blocks of epochs of the engine alone
and of the engine with the run's epoch end: history, status and checkpoint files,
progress line; saving the model and curves), with the compilation cache filled; a third
lists the big packages the command imports and what each costs (`python -X importtime`).
With `--pause S` each run starts S seconds after the last ended, as a user's commands do: on this project's
2-core virtual machine the guest hands memory a process freed back to its host within about 2 seconds
(virtio-balloon's free page reporting), and a process started later gets each new MB in about 6 ms instead of
0.1 (docs/engine.md, "Start-up"); back to back, the next process reuses the last one's pages. The
machine and its load average head the tables: on a busy machine every figure
is "under load" and only the rows of one run compare with each other.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The packages whose import time the third table shows (cumulative, as importtime reports them).
PACKAGES = (
    "jax",
    "ml_dtypes",
    "digitlab.plots",
    "matplotlib",
    "matplotlib.figure",
    "matplotlib.pyplot",
    "pandas",
    "scipy",
    "tensorflow",
    "h5py",
    "ray",
)
# What the third table's process imports: the command's start (`startup`), then the curves' module.
IMPORTS = (
    "from digitlab import config, startup; startup.keras_beside_data(config.TrainConfig(seed=0)).loaded(); "
    "import digitlab.training; import digitlab.plots"
)
# Epochs in each block of the second table's epoch rows (engine alone, engine with the run's epoch end), 2 rounds.
EPOCH_BLOCK = 10


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each run (default: 3)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each way (default: 3)")
    parser.add_argument(
        "--baseline", metavar="SRC", help="also run the command from this checkout's src folder (default: none)"
    )
    parser.add_argument(
        "--pause",
        type=float,
        default=0.0,
        help="seconds to wait before each run, as between a user's commands (default: 0, back to back)",
    )
    parser.add_argument("--phases-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.pause < 0 or args.epochs < 1 or args.repeats < 1:
        parser.error("give --pause 0 or more, and --epochs and --repeats 1 or more")
    if args.phases_child:
        print(json.dumps(_phases(args.epochs)))
        return 0

    from digitlab import system

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="digitlab-startup-") as scratch:
        cache = Path(scratch, "jax-cache")
        ways = {
            "compilation cache empty (first run)": {"JAX_COMPILATION_CACHE_DIR": str(cache)},
            "compilation cache filled (later runs)": {"JAX_COMPILATION_CACHE_DIR": str(cache)},
            "compilation cache off": {"JAX_ENABLE_COMPILATION_CACHE": "false"},
        }
        anchor = "compilation cache filled (later runs)"
        if args.baseline:
            anchor = f"baseline {args.baseline}, cache filled"
            ways[anchor] = {"JAX_COMPILATION_CACHE_DIR": str(cache), "PYTHONPATH": str(Path(args.baseline).absolute())}
        # Round by round, each way once a round (the empty cache's run fills it for the next), so that
        # a load that changes while the bench runs weighs on every way alike.
        measured: dict[str, list[dict]] = {name: [] for name in ways}
        for repeat in range(args.repeats):
            for number, (name, settings) in enumerate(ways.items()):
                if name.startswith("compilation cache empty"):
                    _empty(cache)
                runs_dir = Path(scratch, f"runs-{number}-{repeat}")
                time.sleep(args.pause)
                measured[name].append(_run_command(args.epochs, runs_dir, settings))
        rows = [
            (name, {key: statistics.median(each[key] for each in values) for key in values[0]})
            for name, values in measured.items()
        ]
        environment = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(cache))
        phases = json.loads(
            subprocess.run(
                [sys.executable, __file__, "--phases-child", "--epochs", str(args.epochs)],
                env=environment,
                check=True,
                capture_output=True,
                text=True,
            ).stdout.splitlines()[-1]
        )
        imports = _import_times(environment)
    load_after = os.getloadavg()[0]

    lines = [
        f"`digitlab train --seed 0 --epochs {args.epochs}` on {system.machine_name()}; load average "
        f"{load_before:.1f} before, {load_after:.1f} after (above 0.5: under load); median of {args.repeats} runs"
        + (f", each {args.pause:g} s after the last" if args.pause else ", back to back"),
        "",
        "| way | to epoch 1 | to Done | to exit | CPU s | peak memory | to Done / anchor's |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {name} | {row['first_epoch_s']:.2f} s | {row['done_s']:.2f} s | {row['exit_s']:.2f} s | "
            f"{row['cpu_s']:.2f} | {row['peak_mb']:.0f} MB | {row['done_s'] / dict(rows)[anchor]['done_s']:.2f} |"
            for name, row in rows
        ),
        "",
        "Inside one process, as the command runs (compilation cache filled):",
        "",
        "| phase | seconds |",
        "|---|---:|",
        *(f"| {phase} | {seconds:.2f} |" for phase, seconds in phases.items()),
        "",
        "What the command's imports cost (`python -X importtime`, cumulative, nested in each other):",
        "",
        "| package | seconds |",
        "|---|---:|",
        *(f"| {package} | {seconds:.2f} |" for package, seconds in imports.items()),
    ]
    print("\n".join(lines))
    return 0


def _empty(cache: Path) -> None:
    if cache.exists():
        for entry in cache.iterdir():
            entry.unlink()


def _run_command(epochs: int, runs_dir: Path, settings: dict) -> dict:
    """One `digitlab train` process: seconds to its first epoch line, its Done line, its exit; its CPU."""
    environment = dict(os.environ, PYTHONUNBUFFERED="1", **settings)
    command = [sys.executable, "-m", "digitlab", "train", "--seed", "0", "--epochs", str(epochs)]
    started = time.perf_counter()
    process = subprocess.Popen(
        [*command, "--runs-dir", str(runs_dir)], env=environment, stdout=subprocess.PIPE, text=True
    )
    first_epoch = done = None
    assert process.stdout is not None
    for line in process.stdout:
        if first_epoch is None and line.startswith("Epoch 1/"):
            first_epoch = time.perf_counter() - started
        if line.startswith("Done:"):
            done = time.perf_counter() - started
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    ended = time.perf_counter() - started
    if process.returncode != 0 or first_epoch is None or done is None:
        raise SystemExit(f"error: {' '.join(command)} failed (exit {process.returncode}).")
    return {
        "first_epoch_s": first_epoch,
        "done_s": done,
        "exit_s": ended,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_mb": usage.ru_maxrss / 1024,  # Linux counts kilobytes.
    }


def _phases(epochs: int) -> dict[str, float]:
    """The phases of `digitlab train`, timed in this (fresh) process, in the order it runs them."""
    times: dict[str, float] = {}
    clock = [time.perf_counter()]
    cpu_start = resource.getrusage(resource.RUSAGE_SELF)

    def mark(phase: str) -> None:
        now = time.perf_counter()
        times[phase] = round(now - clock[0], 3)
        clock[0] = now

    from digitlab import cli  # noqa: F401  (what the command imports before it knows it trains)

    mark("import digitlab.cli")
    from digitlab import config, startup

    train_config = config.TrainConfig(seed=0, epochs=epochs).resolved()
    loading = startup.keras_beside_data(train_config)
    mark("import Keras (without pandas, Matplotlib), the data loading beside it in a thread")
    loaded = loading.loaded()
    mark("then waiting for the thread: data, one-hot targets, sparse rows")
    import numpy as np

    from digitlab import engine, models, training

    mark("import digitlab.training (the rest)")
    networks = models.create_seeded_models(train_config)
    mark("models.create_seeded_models (Keras, jitted initializers)")
    fast = engine.make_engine(networks, train_config, verbose=0)
    (x, y), validation, _ = training.training_inputs(loaded, train_config, True, fast)
    mark("engine.make_engine, the run's inputs (the images' rows from the thread)")
    fast._impl.start(x, y, validation)
    mark("the engine's start")
    rngs = [np.random.RandomState(0)]
    fast.fit(x, y, validation, epochs=1, rngs=rngs)
    mark("epoch 1")
    with tempfile.TemporaryDirectory() as folder:
        run = training.runs.new_run(folder, train_config)
        histories = [{key: [0.5] * 200 for key in training.runs.HISTORY_KEYS}]  # As long as at the run's end.
        endless = dataclasses.replace(train_config, epochs=10**6)  # No epoch of the blocks is the run's last.
        epoch_end = training._EpochEnd(run, endless, fast, rngs, histories, training.quiet, 0.0)
        epoch_end.start()
        alone = with_end = 0.0
        for _ in range(2):  # Rounds of one block each, so that a changing load weighs on both alike.
            for callback in (None, epoch_end):
                done = len(histories[0]["loss"]) - 199
                started = time.perf_counter()
                fast.fit(
                    x, y, validation, epochs=done + EPOCH_BLOCK, initial_epoch=done, rngs=rngs, on_epoch_end=callback
                )
                seconds = (time.perf_counter() - started) / EPOCH_BLOCK
                if callback is None:
                    alone += seconds / 2
                    for history in histories:  # The next block's epochs follow on.
                        for values in history.values():
                            values.extend([0.5] * EPOCH_BLOCK)
                else:
                    with_end += seconds / 2
        epoch_end.close()
        clock[0] = time.perf_counter()
        times[f"an epoch of the engine alone (mean of 2 blocks of {EPOCH_BLOCK})"] = round(alone, 4)
        times["an epoch with the run's epoch end (history, status, checkpoints, progress)"] = round(with_end, 4)
        times["the epoch end's cost, per epoch"] = round(with_end - alone, 4)
        fast.sync_to_models()
        with training.backends.saving_without_tensorflow():
            networks[0].save(Path(folder, "model.keras"))
        mark("model.save (model.keras)")
        from digitlab import plots

        plots.save_figure(plots.training_curves(histories, title="shallow net"), Path(folder, "curves.png"))
        mark("curves.png (Matplotlib's import and the figure)")
    used = resource.getrusage(resource.RUSAGE_SELF)
    times["CPU seconds of this process"] = round(
        used.ru_utime + used.ru_stime - cpu_start.ru_utime - cpu_start.ru_stime, 2
    )
    return times


def _import_times(environment: dict) -> dict[str, float]:
    """Cumulative import seconds of PACKAGES as the command imports them (IMPORTS; the largest import of each:
    Matplotlib's is the curves' module's, at the run's end)."""
    report = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", IMPORTS],
        env=environment,
        check=True,
        capture_output=True,
        text=True,
    ).stderr
    found: dict[str, float] = {"keras (all of it)": 0.0, "digitlab.training (all of it)": 0.0}
    for line in report.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)$", line)
        if not match:
            continue
        micros, name = int(match.group(1)), match.group(3)
        if name in ("keras", "digitlab.training"):
            found[f"{name} (all of it)"] = micros / 1e6
        elif name in PACKAGES:  # The largest import: a hidden package's refused one comes first, costing nothing.
            found[name] = max(found.get(name, 0.0), micros / 1e6)
    return found


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
