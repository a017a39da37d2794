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

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from digitlab import atomic, backends, data, errors, system
from digitlab.bench import arithmetic, breakdown, rows
from digitlab.bench import markdown as bench_markdown
from digitlab.config import MODEL_DEFAULTS
from digitlab.engine import sparse

MODEL = "shallow"
EPOCH_MODELS = ("shallow", "deep")  # The nets whose epochs `run_bench` times (LeNet: `run_lenet_bench`).
BOOK_EPOCHS = MODEL_DEFAULTS[MODEL]["epochs"]
# The defaults of `digitlab bench` (and of `run_bench`): a few epochs, and 8 seeds in the many-seeds row.
DEFAULTS = {"epochs": 3, "seeds": 8, "train_limit": None, "compare_epochs": BOOK_EPOCHS, "steps": 100}
WARMUP_STEPS = bench_markdown.WARMUP_STEPS
NOT_INSTALLED = f"{system.NOT_INSTALLED} (pip install tensorflow-cpu)"
# The packages whose versions bench.json and bench.md name beside the machine.
MACHINE_VERSIONS = ("keras", "jax", "numpy", "tensorflow")


def cores_handover(reads: int = 5) -> float | None:
    """The median of `reads` reads of the cores' hand-over (`sparse.handover_ns`, ns), or None on one core or where
    none could be read. Two threads of one network gain only while it is short: on the 2-core machine of
    docs/engine.md its host moves the cores between 60-80 ns and 200-345 ns, and two threads then take twice as
    long, so every bench says where the cores were before and after its rows."""
    if system.machine_info()["cores"] < 2:
        return None
    found = [ns for ns in (sparse.handover_ns(limit_s=0.05) for _ in range(reads)) if ns is not None]
    return statistics.median(found) if found else None


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
    _check_data(data_path)
    common: rows.WorkerSpec = {
        "data_path": str(data_path) if data_path else None,
        "train_limit": train_limit,
        "model": model,
    }
    print_fn(f"Benchmarking the book's {model} net for {epochs} epoch(s) on {system.machine_name()}...")
    gflops = {"all_cores": arithmetic.matmul_gflops(), "one_core": arithmetic.matmul_gflops(threads=1)}
    print_fn(f"float32 matrix multiply: {gflops['all_cores']:.0f} GFLOP/s ({gflops['one_core']:.0f} on one core)")
    bandwidth = breakdown.measure_bandwidth() if profile else {}
    if bandwidth:
        print_fn(
            "read bandwidth, one core: "
            + ", ".join(f"{level} {value / 1e9:.0f} GB/s" for level, value in bandwidth.items())
        )
    table: list[rows.Row] = []
    handover = {"before": cores_handover()}  # Where the host has the cores now (docs/engine.md, "The eighth round").
    for backend in backends:
        table.append(_keras_row(backend, {"kind": "fit", "epochs": epochs, "seeds": [0], **common}))
        print_fn(f"  {table[-1]['name']}: {bench_markdown.short(table[-1])}")
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
        print_fn(f"  {label}: {bench_markdown.short(table[-1])}")
    handover["after"] = cores_handover()
    if handover["before"] is not None or handover["after"] is not None:
        print_fn(f"cores' hand-over (a cache line there and back): {bench_markdown.handover_text(handover)}")
    # The machine's limit is its faster measured figure (a second BLAS thread can lose on a busy machine).
    gflops["limit"] = max(gflops["all_cores"], gflops["one_core"])
    _add_ratios(table, gflops["limit"])
    for row in table:
        if row["status"] == "ok" and "profile" in row:
            row["breakdown"] = list(breakdown.phases(row, gflops, bandwidth))
    scaling = seed_scaling(table)
    results: rows.Results = {
        "machine": system.machine_info(versions_of=MACHINE_VERSIONS),
        "gflops": gflops,
        "model": model,
        "epochs": epochs,
        "train_limit": train_limit,
        "rows": table,
        "scaling": scaling,
        "handover_ns": handover,
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
    write_results(out_dir, results, bench_markdown.to_markdown(results), print_fn)
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
    _check_data(data_path)
    common: rows.WorkerSpec = {
        "kind": "steps",
        "model": "lenet",
        "steps": steps,
        "data_path": str(data_path) if data_path else None,
    }
    print_fn(f"Benchmarking LeNet's fit for {steps} steps per backend on {system.machine_name()}...")
    table: list[rows.Row] = []
    for backend in backends:
        table.append(_keras_row(backend, common))
        print_fn(f"  {table[-1]['name']}: {bench_markdown.short_steps(table[-1])}")
    default = _run_worker("`digitlab train --model lenet`, its default backend", {**common, "keras_backend": None})
    default["default"] = True
    table.append(default)
    print_fn(f"  {default['name']}: {bench_markdown.short_steps(default)}")
    timed = [row["ms_per_step"] for row in table if row["status"] == "ok"]
    for row in table:
        if row["status"] == "ok":
            row["times_fastest"] = row["ms_per_step"] / min(timed)
    results: rows.Results = {
        "machine": system.machine_info(versions_of=MACHINE_VERSIONS),
        "model": "lenet",
        "steps": steps,
        "rows": table,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    write_results(out_dir, results, bench_markdown.lenet_markdown(results), print_fn)
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


def _check_data(data_path) -> None:
    """Finds and checks MNIST as each row's worker will (a DataError where it cannot), once, before any of them
    starts: a wrong path or a damaged file is one clear error, not a failed row per contender and a table of
    failures written over the last bench.json; where it has to be downloaded, that happens here, once."""
    data.load(data_path)


def _keras_row(backend: str, spec: rows.WorkerSpec) -> rows.Row:
    """The row of Keras `fit` on `backend` (spec's kind), or its name and NOT_INSTALLED without that package."""
    label = f"Keras fit, {'TensorFlow' if backend == 'tensorflow' else 'JAX'} backend"
    if not backends.installed(backend):
        return {"name": label, "kind": spec["kind"], "keras_backend": backend, "status": NOT_INSTALLED}
    return _run_worker(label, {**spec, "keras_backend": backend})


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
