"""`digitlab bench`: the book's training code against digitlab's engine, side by side on this machine.

Each contender trains the book's shallow net (Dense 64 sigmoid, Dense 10 softmax,
MSE, SGD 0.01, batch 128, validation every epoch) for a few epochs in its own
subprocess, so that Keras backends never mix and each peak memory is its own:

- Keras 3 `fit` on the TensorFlow backend (TensorFlow's CPU build, a default dependency),
- Keras 3 `fit` on the JAX backend,
- digitlab's `FastEngine` with one seed, and with N seeds at once.

It reports seconds per epoch (after the first, which includes compilation), the
projected 200-epoch time, val accuracy after the epochs it ran, peak memory, and
how far each is from the arithmetic limit: the epoch's floating-point work
divided by this machine's measured float32 matrix-multiply speed. Speedups are
ratios against the `fit` rows of the same run. The table is printed and written
to `bench.json` and `bench.md`.

    from digitlab.bench import runner as bench
    results = bench.run_bench(epochs=3, seeds=8, out_dir="bench")
    results = bench.run_bench(compare_seeds=5, compare_epochs=200)   # also: accuracy, engine vs fit

`run_bench(model="deep")` (`digitlab bench --model deep`) runs the same rows on the book's deep
net (chapter 9: Dense, BatchNormalization, Dropout, Adam; 20 epochs projected), which the engine
trains with `_deep.c`. `run_lenet_bench(steps=100)` (`digitlab bench --model lenet`) times LeNet's `fit`
steps instead: on each installed Keras backend, and on the one `digitlab train
--model lenet` chooses by default (`digitlab.backends`), marked `"default": true`.

`compare_seeds` adds the accuracy check of issue 3: S seeds of the full run with
`fit` (JAX backend) and with the engine, from the same initial weights and batch
orders, and their mean final val accuracy. Workers run as
`python -m digitlab.bench.worker --worker '{json}'` (`bench/worker.py`).
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from digitlab import atomic, backends, errors, system
from digitlab.bench import breakdown, rows
from digitlab.config import MODEL_DEFAULTS

MODEL = "shallow"
EPOCH_MODELS = ("shallow", "deep")  # The nets whose epochs `run_bench` times (LeNet: `run_lenet_bench`).
BOOK_EPOCHS = MODEL_DEFAULTS[MODEL]["epochs"]
# The defaults of `digitlab bench` (and of `run_bench`): a few epochs, and 8 seeds in the many-seeds row.
DEFAULTS = {"epochs": 3, "seeds": 8, "train_limit": None, "compare_epochs": BOOK_EPOCHS, "steps": 100}
# `digitlab bench --model lenet` times this many first steps of `fit` as compilation, and leaves them out.
WARMUP_STEPS = 5
NOT_INSTALLED = "not installed (pip install tensorflow-cpu)"


def run_bench(
    epochs: int = DEFAULTS["epochs"],
    seeds: int = DEFAULTS["seeds"],
    out_dir: str | Path = "bench",
    data_path=None,
    backends=("tensorflow", "jax"),
    print_fn=print,
    train_limit: int | None = None,
    engine_backend: str = "auto",
    compare_seeds: int = 0,
    compare_epochs: int = DEFAULTS["compare_epochs"],
    profile: bool = False,
    model: str = MODEL,
) -> rows.Results:
    """Runs every contender in its own subprocess, prints the table, writes bench.json and bench.md.

    With `profile`, the engine rows also measure where their epochs go, and the tables say it phase
    by phase against each phase's own limit (`bench.breakdown`), with this machine's read bandwidths."""
    _check_whole("epochs", epochs, 1)
    _check_whole("seeds", seeds, 1)
    _check_whole("compare_seeds", compare_seeds, 0)
    _check_whole("compare_epochs", compare_epochs, 1)
    if train_limit is not None:
        _check_whole("train_limit", train_limit, 1)
    unknown = [backend for backend in backends if backend not in ("tensorflow", "jax")]
    if unknown:
        raise errors.DigitlabError(f"Unknown Keras backend(s) {', '.join(unknown)}; choose tensorflow and/or jax.")
    if model not in EPOCH_MODELS:
        raise errors.DigitlabError(f"Unknown net {model!r} for the epoch rows; choose {' or '.join(EPOCH_MODELS)}.")
    if profile and model != MODEL:
        raise errors.DigitlabError(
            "--profile times the phases of the shallow net's C epoch (_train.c); the deep net's epochs "
            "(_deep.c) have no phases to time. Drop --profile, or bench --model shallow."
        )
    common: rows.WorkerSpec = {
        "data_path": str(data_path) if data_path else None,
        "train_limit": train_limit,
        "model": model,
    }
    print_fn(f"Benchmarking the book's {model} net for {epochs} epoch(s) on {machine_name()}...")
    gflops = {"all_cores": matmul_gflops(), "one_core": matmul_gflops(threads=1)}
    print_fn(f"float32 matrix multiply: {gflops['all_cores']:.0f} GFLOP/s ({gflops['one_core']:.0f} on one core)")
    bandwidth = breakdown.measure_bandwidth() if profile else {}
    if bandwidth:
        print_fn(
            "read bandwidth, one core: "
            + ", ".join(f"{level} {value / 1e9:.0f} GB/s" for level, value in bandwidth.items())
        )
    table: list[rows.Row] = []
    for backend in backends:
        label = f"Keras fit, {'TensorFlow' if backend == 'tensorflow' else 'JAX'} backend"
        if importlib.util.find_spec(backend) is None:
            table.append({"name": label, "kind": "fit", "keras_backend": backend, "status": NOT_INSTALLED})
        else:
            table.append(
                _run_worker(label, {"kind": "fit", "keras_backend": backend, "epochs": epochs, "seeds": [0], **common})
            )
        print_fn(f"  {label}: {_short(table[-1])}")
    # The engine on every core (its default), and with one seed on one core: the anchor of the seeds' scaling.
    contenders = (
        [(1, None)] + ([(1, 1)] if system.machine_info()["cores"] > 1 else []) + ([(seeds, None)] if seeds > 1 else [])
    )
    for count, workers in contenders:
        label = f"digitlab engine, {count} seed{'s' if count > 1 else ''}" + (", one core" if workers == 1 else "")
        spec: rows.WorkerSpec = {
            "kind": "engine",
            "engine_backend": engine_backend,
            "epochs": epochs,
            "seeds": list(range(count)),
            "workers": workers,
            "profile": profile,
            **common,
        }
        table.append(_run_worker(label, spec))
        print_fn(f"  {label}: {_short(table[-1])}")
    # The machine's limit is its faster measured figure (a second BLAS thread can lose on a busy machine).
    gflops["limit"] = max(gflops["all_cores"], gflops["one_core"])
    _add_ratios(table, gflops["limit"])
    for row in table:
        if row["status"] == "ok" and "profile" in row:
            row["breakdown"] = list(breakdown.phases(row, gflops, bandwidth))
    scaling = seed_scaling(table)
    results: rows.Results = {
        "machine": machine_info(),
        "gflops": gflops,
        "model": model,
        "epochs": epochs,
        "train_limit": train_limit,
        "rows": table,
        "scaling": scaling,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if bandwidth:
        results["bandwidth"] = bandwidth
    if compare_seeds:
        print_fn(f"Accuracy check: {compare_seeds} seeds x {compare_epochs} epochs, fit (JAX) and the engine...")
        comparison = run_comparison(
            compare_seeds,
            compare_epochs,
            engine_backend=engine_backend,
            data_path=common["data_path"],
            train_limit=train_limit,
            model=model,
        )
        results["comparison"] = comparison
        print_fn("  " + comparison["summary"])
    write_results(out_dir, results, to_markdown(results), print_fn)
    return results


def run_lenet_bench(
    steps: int = DEFAULTS["steps"],
    out_dir: str | Path = "bench",
    data_path=None,
    backends=("tensorflow", "jax"),
    print_fn=print,
) -> rows.Results:
    """Times LeNet's `fit` steps on each installed Keras backend and on the default one, side by side.

    Each row trains chapter 10's LeNet (batch 128) for `steps` steps in its own process;
    the first `WARMUP_STEPS` steps (compilation) are left out of its ms/step. The last row
    is what `digitlab train --model lenet` uses with no KERAS_BACKEND set (`"default": true`).
    """
    _check_whole("steps", steps, WARMUP_STEPS + 1)
    common: rows.WorkerSpec = {
        "kind": "steps",
        "model": "lenet",
        "steps": steps,
        "data_path": str(data_path) if data_path else None,
    }
    print_fn(f"Benchmarking LeNet's fit for {steps} steps per backend on {machine_name()}...")
    table: list[rows.Row] = []
    for backend in backends:
        label = f"Keras fit, {'TensorFlow' if backend == 'tensorflow' else 'JAX'} backend"
        if importlib.util.find_spec(backend) is None:
            table.append({"name": label, "kind": "steps", "keras_backend": backend, "status": NOT_INSTALLED})
        else:
            table.append(_run_worker(label, {**common, "keras_backend": backend}))
        print_fn(f"  {label}: {_short_steps(table[-1])}")
    default = _run_worker("`digitlab train --model lenet`, its default backend", {**common, "keras_backend": None})
    default["default"] = True
    table.append(default)
    print_fn(f"  {default['name']}: {_short_steps(default)}")
    timed = [row["ms_per_step"] for row in table if row["status"] == "ok"]
    for row in table:
        if row["status"] == "ok":
            row["times_fastest"] = row["ms_per_step"] / min(timed)
    results: rows.Results = {
        "machine": machine_info(),
        "model": "lenet",
        "steps": steps,
        "rows": table,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    write_results(out_dir, results, lenet_markdown(results), print_fn)
    return results


def write_results(out_dir: str | Path, results: rows.Results, markdown: str, print_fn=print) -> None:
    """Writes bench.json and bench.md into `out_dir` (each atomically: a full disk leaves the old ones), and
    prints the table."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise atomic.WriteError(atomic.describe_write_error(out_dir, error)) from None
    atomic.write_json(out_dir / "bench.json", results)
    atomic.write_text(out_dir / "bench.md", markdown)
    print_fn("")
    print_fn(markdown)
    print_fn(f"Wrote {out_dir / 'bench.json'} and {out_dir / 'bench.md'}.")


def _short_steps(row: rows.Row) -> str:
    if row["status"] != "ok":
        return row["status"]
    return f"{row['ms_per_step']:.0f} ms/step on {row['keras_backend']}, peak {row['peak_memory_mb']:.0f} MB"


def lenet_markdown(results: rows.Results) -> str:
    """The LeNet step timings as a Markdown table with the machine it ran on."""
    machine = results["machine"]
    lines = [
        f"LeNet (chapter 10, batch 128), Keras fit, {results['steps']} steps per row, each in its own process.",
        f"Machine: {machine['cpu']}, {machine['cores']} cores; Keras {machine['keras']}, JAX {machine['jax']}, "
        f"TensorFlow {machine['tensorflow']}; {results['created']}.",
        "",
        "| Row | backend | ms/step | epoch of 469 steps (projected) | × fastest | peak memory |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        name = f"**{row['name']}**" if row.get("default") else row["name"]
        if row["status"] != "ok":
            lines.append(f"| {name} | {row.get('keras_backend') or ''} | {row['status']} | | | |")
            continue
        lines.append(
            f"| {name} | {row['keras_backend']} | {row['ms_per_step']:.0f} | "
            f"{row['ms_per_step'] * 469 / 1000:.0f} s | {row['times_fastest']:.2f} | "
            f"{row['peak_memory_mb']:.0f} MB |"
        )
    lines += ["", f"ms/step: median step after the first {WARMUP_STEPS} (compilation); an epoch adds validation."]
    return "\n".join(lines) + "\n"


def run_comparison(
    seeds: int, epochs: int, data_path=None, train_limit=None, engine_backend="auto", model: str = MODEL
) -> rows.Comparison:
    """Final val accuracy of `seeds` full runs with `fit` (JAX) and with the engine, same init and batches."""
    common: rows.WorkerSpec = {
        "model": model,
        "data_path": data_path,
        "train_limit": train_limit,
        "epochs": epochs,
        "seeds": list(range(seeds)),
    }
    fit = _run_worker("Keras fit, JAX backend", {"kind": "fit", "keras_backend": "jax", **common})
    fast = _run_worker("digitlab engine", {"kind": "engine", "engine_backend": engine_backend, **common})
    comparison: rows.Comparison = {"seeds": seeds, "epochs": epochs, "fit": fit, "engine": fast}
    if fit["status"] != "ok" or fast["status"] != "ok":
        comparison["summary"] = f"could not compare: fit {fit['status']}, engine {fast['status']}"
        return comparison
    fit_mean = statistics.mean(fit["final_val_accuracies"])
    fast_mean = statistics.mean(fast["final_val_accuracies"])
    comparison["fit_mean"], comparison["engine_mean"] = fit_mean, fast_mean
    comparison["difference"] = fast_mean - fit_mean
    comparison["within_one_point"] = abs(fast_mean - fit_mean) <= 0.01
    comparison["summary"] = (
        f"mean final val accuracy over {seeds} seeds x {epochs} epochs: fit {fit_mean:.4f}, "
        f"engine {fast_mean:.4f} (difference {100 * (fast_mean - fit_mean):+.2f} points; "
        f"fit took {fit['total_seconds']:.0f} s, the engine {fast['total_seconds']:.0f} s)"
    )
    return comparison


def _check_whole(name: str, value, least: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise errors.DigitlabError(f"{name} must be a whole number of at least {least}, got {value!r}.")


def _run_worker(label: str, spec: rows.WorkerSpec) -> rows.Row:
    """Runs one contender in a fresh Python process and returns its row (status "ok" or why not)."""
    row: rows.Row = {"name": label, "kind": spec["kind"], "status": "running"}
    if "keras_backend" in spec:
        row["keras_backend"] = spec["keras_backend"]
    if "engine_backend" in spec:
        row["engine_backend"] = spec["engine_backend"]
    if "workers" in spec:
        row["workers"] = spec["workers"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if spec.get("keras_backend", "jax") is None:
        # The default: as a user's shell with no KERAS_BACKEND, so that digitlab chooses.
        env.pop("KERAS_BACKEND", None)
        env.pop(backends.MARKER, None)
    else:
        env["KERAS_BACKEND"] = spec.get("keras_backend") or "jax"
        env.pop(backends.MARKER, None)  # A backend named here is chosen, as a user's KERAS_BACKEND is.
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "result.json"
        command = [
            sys.executable,
            "-m",
            "digitlab.bench.worker",
            "--worker",
            json.dumps({**spec, "output": str(output)}),
        ]
        process = subprocess.run(command, env=env, capture_output=True, text=True)
        if process.returncode != 0 or not output.exists():
            lines = [line for line in process.stderr.strip().splitlines() if line.strip()]
            row["status"] = f"failed: {lines[-1] if lines else f'exit code {process.returncode}'}"
            return row
        row.update(json.loads(output.read_text()))  # An EpochResult or a StepsResult.
    row["status"] = "ok"
    return row


def _add_ratios(table: list[rows.Row], gflops: float) -> None:
    anchors = {row["keras_backend"]: row for row in table if row["kind"] == "fit" and row["status"] == "ok"}
    for row in table:
        if row["status"] != "ok":
            continue
        row["limit_seconds_per_epoch"] = row["flops_per_epoch"] / (gflops * 1e9)
        row["times_limit"] = row["seconds_per_epoch"] / row["limit_seconds_per_epoch"]
        row["useful_limit_seconds_per_epoch"] = row["useful_flops_per_epoch"] / (gflops * 1e9)
        row["times_useful_limit"] = row["seconds_per_epoch"] / row["useful_limit_seconds_per_epoch"]
        # Per network trained: N seeds in one run count as N runs of fit.
        if "tensorflow" in anchors:
            row["speedup_vs_fit_tensorflow"] = _speedup(anchors["tensorflow"], row)
        if "jax" in anchors:
            row["speedup_vs_fit_jax"] = _speedup(anchors["jax"], row)


def _speedup(anchor: rows.Row, row: rows.Row) -> float:
    return anchor["projected_seconds"] * row["networks"] / row["projected_seconds"]


def seed_scaling(table: list[rows.Row]) -> dict[str, float]:
    """Per-network throughput of the engine's rows against one seed on one core (the "one core" row):
    how much the other cores add, for one network and for N seeds. Empty without that row."""
    engine_rows = [row for row in table if row["kind"] == "engine" and row["status"] == "ok"]
    anchor = next((row for row in engine_rows if row.get("workers") == 1), None)
    if anchor is None:
        return {}
    per_network = anchor["seconds_per_epoch"] / anchor["networks"]
    return {
        row["name"]: per_network / (row["seconds_per_epoch"] / row["networks"])
        for row in engine_rows
        if row is not anchor
    }


def _short(row: rows.Row) -> str:
    if row["status"] != "ok":
        return row["status"]
    return (
        f"{row['seconds_per_epoch']:.3f} s/epoch, val accuracy {row['val_accuracy']:.4f}, "
        f"peak {row['peak_memory_mb']:.0f} MB ({breakdown.describe_path(row)})"
    )


def to_markdown(results: rows.Results) -> str:
    """The bench results as a Markdown table with the machine it ran on."""
    machine, gflops = results["machine"], results["gflops"]
    book_epochs = MODEL_DEFAULTS[results["model"]]["epochs"]
    lines = [
        f"Book's {results['model']} net (MNIST, batch 128, validation every epoch), "
        f"{results['epochs']} epoch(s) measured"
        + (f" on {results['train_limit']} training images" if results["train_limit"] else "")
        + ".",
        f"Machine: {machine['cpu']}, {machine['cores']} cores; float32 matmul {gflops['all_cores']:.0f} GFLOP/s "
        f"({gflops['one_core']:.0f} on one core); Keras {machine['keras']}, JAX {machine['jax']}, "
        f"TensorFlow {machine['tensorflow']}, NumPy {machine['numpy']}; {results['created']}.",
        "",
        f"| Engine | s/epoch | 1st epoch s | {book_epochs} epochs (projected) | val accuracy | peak memory "
        "| × arithmetic limit (dense / useful) | speedup vs fit TF | speedup vs fit JAX |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        if row["status"] != "ok":
            lines.append(f"| {row['name']} | {row['status']} | | | | | | | |")
            continue
        speedups = [row.get("speedup_vs_fit_tensorflow"), row.get("speedup_vs_fit_jax")]
        lines.append(
            f"| {row['name']} ({breakdown.describe_path(row)}) | {row['seconds_per_epoch']:.3f} "
            f"| {row['first_epoch_seconds']:.2f} "
            f"| {row['projected_seconds']:.0f} s | {row['val_accuracy']:.4f} | {row['peak_memory_mb']:.0f} MB "
            f"| {row['times_limit']:.1f} / {row['times_useful_limit']:.1f} | "
            + " | ".join("" if s is None else f"{s:.1f}×" for s in speedups)
            + " |"
        )
    lines += [
        "",
        "s/epoch: median of the epochs after the first (the first includes compilation). "
        f"{book_epochs} epochs (the book's run): the first epoch plus {book_epochs - 1} more. "
        "Rows with N seeds train N networks; their times are for all N and their speedups are per network. "
        "× arithmetic limit: s/epoch over (the epoch's multiply-adds × 2 ÷ the measured "
        f"GFLOP/s, {gflops['limit']:.0f}); dense counts every pixel, useful only the nonzero ones (the first "
        "layer's products with zero pixels add nothing). Peak memory: the largest resident set of the process "
        "that trained.",
    ]
    if results.get("scaling"):
        lines += [
            "",
            "Per network, against one seed on one core (the other cores' worth): "
            + "; ".join(f"{name}: {ratio:.2f}×" for name, ratio in results["scaling"].items())
            + ".",
        ]
    bandwidth = results.get("bandwidth")
    for row in results["rows"]:
        if row.get("breakdown"):
            lines += ["", *breakdown.to_markdown(row, row["breakdown"])]
    if bandwidth:
        lines += [
            "",
            "limit: the phase's multiply-adds at the measured matrix-multiply speed (one core's where one thread "
            "ran, all cores' where one per core ran), or its bytes at the read bandwidth of the level they come "
            "from (one core's: "
            + ", ".join(f"{level} {value / 1e9:.0f} GB/s" for level, value in bandwidth.items())
            + ", times the threads that ran), whichever is longer; waiting, the loss, setup and Python have none. "
            "Each thread's phases add up to its epoch; validation runs on every thread.",
        ]
    comparison = results.get("comparison")
    if comparison:
        lines += ["", f"Accuracy check: {comparison['summary']}."]
    return "\n".join(lines) + "\n"


def machine_name() -> str:
    info = system.machine_info()
    return f"{info['cpu']} ({info['cores']} cores)"


def machine_info() -> dict:
    """The machine and the versions the table names, read without importing Keras or TensorFlow."""
    versions = system.software_versions()
    return {
        **system.machine_info(),
        "python": versions["python"],
        **{package: system.version_of(versions, package) for package in ("keras", "jax", "numpy", "tensorflow")},
    }


def matmul_gflops(size: int = 1024, repeats: int = 20, threads: int | None = None) -> float:
    """This machine's float32 matrix-multiply speed (best of `repeats`), all cores or `threads` of them."""
    from digitlab.engine import blas

    rng = np.random.default_rng(0)
    left, right = rng.random((size, size), dtype=np.float32), rng.random((size, size), dtype=np.float32)
    product = np.empty_like(left)
    best = float("inf")
    with blas.BlasThreads(threads):
        np.matmul(left, right, out=product)
        for _ in range(repeats):
            start = time.perf_counter()
            np.matmul(left, right, out=product)
            best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def useful_epoch_flops(
    layer_sizes: list[int], train_examples: int, valid_examples: int, train_nonzeros: int, valid_nonzeros: int
) -> int:
    """`epoch_flops` with the first layer's multiply-adds counted for nonzero inputs only.

    81% of MNIST's pixels are zero, and a product with zero adds nothing: this is the
    arithmetic an engine cannot avoid, where `epoch_flops` is what a dense product does.
    """
    first = layer_sizes[1]
    dense_first = 2 * 2 * layer_sizes[0] * first * train_examples + 2 * layer_sizes[0] * first * valid_examples
    useful_first = 2 * 2 * train_nonzeros * first + 2 * valid_nonzeros * first
    return epoch_flops(layer_sizes, train_examples, valid_examples) - dense_first + useful_first


def epoch_flops(layer_sizes: list[int], train_examples: int, valid_examples: int) -> int:
    """Floating-point operations of one epoch: forward and weight gradients, hidden-input gradients, validation.

    The gradient with respect to the images themselves is not counted; neither
    the engine nor XLA (which prunes it) computes it.
    """
    products = [inputs * outputs for inputs, outputs in itertools.pairwise(layer_sizes)]
    train = 2 * (2 * sum(products) + sum(products[1:]))
    return train * train_examples + 2 * sum(products) * valid_examples
