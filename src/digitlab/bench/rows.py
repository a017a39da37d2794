"""The rows of `digitlab bench`, as they cross its modules: what a worker is asked, what it measures, what
the runner adds, and the whole run's results (`bench.json`).

    from digitlab.bench import rows
    spec: rows.WorkerSpec = {"kind": "engine", "engine_backend": "auto", "epochs": 3, "seeds": [0]}
    row: rows.Row = runner._run_worker("digitlab engine, 1 seed", spec)

`runner.py` writes a `WorkerSpec`, `worker.py` answers with an `EpochResult` (the shallow net's epochs)
or a `StepsResult` (LeNet's steps), and the runner merges it into a `Row` with its name and status,
then adds the ratios against the arithmetic limit and the `fit` rows. A row whose status is not "ok"
holds only its name, kind, backends and status.
"""

from __future__ import annotations

from typing import TypedDict


class WorkerSpec(TypedDict, total=False):
    """One contender, as `python -m digitlab.bench.worker --worker JSON` reads it."""

    kind: str  # "fit", "engine" (the shallow net's epochs) or "steps" (LeNet's fit steps).
    keras_backend: str | None  # None: the one digitlab chooses, as a user's shell without KERAS_BACKEND.
    engine_backend: str
    workers: int | None  # The engine's cores (None: all).
    epochs: int
    seeds: list[int]
    data_path: str | None
    train_limit: int | None
    model: str
    steps: int
    profile: bool  # The engine rows: measure where their epochs go (engine.timing).
    output: str  # The JSON file the worker writes its result to.


class _Measured(TypedDict, total=False):
    peak_memory_mb: float  # The largest resident set of the process that trained.


class EpochResult(_Measured, total=False):
    """What an epoch worker measures (the fit rows and the engine rows); the engine rows say what ran.

    Each key is listed once, here: `Row` takes them all by inheriting (none is required there, as a
    failed row has none of them; every epoch worker writes all up to `useful_flops_per_epoch`)."""

    engine: str
    path: str  # How the engine ran, in words ("Keras fit" for the fit rows).
    networks: int
    seeds: list[int]
    epochs: int
    first_epoch_seconds: float
    seconds_per_epoch: float
    projected_seconds: float
    total_seconds: float
    val_accuracy: float
    final_val_accuracies: list[float]
    flops_per_epoch: int
    useful_flops_per_epoch: int
    kernel: str  # The first layer's code: "AVX-512", "AVX2", "portable C", "NumPy" or "JAX".
    thread_counts: dict[str, int]  # Epochs per number of threads each network ran on.
    seed_threads: int  # Threads sharing the seeds.
    cores: int  # The cores the process could use.
    profile: dict  # `engine.timing.Profile.per_epoch()`, over the epochs after the first.
    work: dict  # `engine.timing.work(...)`: each phase's multiply-adds and bytes, one network's epoch.


class _StepsKeys(_Measured, total=False):
    chosen: str
    steps: int
    first_steps_seconds: float
    ms_per_step: float


class StepsResult(_StepsKeys, total=False):
    """What a steps worker measures (`digitlab bench --model lenet`)."""

    keras_backend: str


class _RowName(TypedDict):
    name: str
    kind: str
    status: str  # "ok", or why the row has no figures.


class Row(_RowName, EpochResult, _StepsKeys, total=False):
    """One row of the table: the spec's names, the worker's result (`EpochResult` or `StepsResult`'s
    keys, inherited), and the ratios the runner adds."""

    keras_backend: str | None
    engine_backend: str
    workers: int | None
    default: bool  # LeNet: the row of the backend `digitlab train --model lenet` chooses.
    # Added by the runner.
    limit_seconds_per_epoch: float
    times_limit: float
    useful_limit_seconds_per_epoch: float
    times_useful_limit: float
    speedup_vs_fit_tensorflow: float
    speedup_vs_fit_jax: float
    times_fastest: float
    breakdown: list  # --profile: `bench.breakdown.phases`, one entry per phase.


class Comparison(TypedDict, total=False):
    """`--compare-seeds`: the full runs of fit and of the engine, and their mean final val accuracies."""

    seeds: int
    epochs: int
    fit: Row
    engine: Row
    fit_mean: float
    engine_mean: float
    difference: float
    within_one_point: bool
    summary: str


class Results(TypedDict, total=False):
    """A whole `digitlab bench` run, as bench.json holds it (`model` "lenet": steps, no gflops)."""

    machine: dict
    gflops: dict[str, float]
    bandwidth: dict[str, float]  # --profile: one core's read bandwidth, bytes/s, at "l1", "l2" and "memory".
    model: str
    epochs: int
    steps: int
    train_limit: int | None
    rows: list[Row]
    scaling: dict[str, float]
    handover_ns: dict[str, float | None]  # The cores' hand-over before and after the rows (runner.cores_handover).
    comparison: Comparison
    created: str
