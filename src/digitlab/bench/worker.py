"""The worker side of `digitlab bench`: one contender, in its own process, trains and writes one JSON row.

`bench/runner.py` starts each row as `python -m digitlab.bench.worker --worker '{json}'`: the spec
names the kind (Keras `fit`, the engine, or LeNet's `fit` steps), the seeds, the epochs and
the file to write. A worker measures each epoch's (or step's) time, the histories, the epoch's
floating-point work and the process's peak memory; `bench.py` turns the rows into the table.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

from digitlab import backends
from digitlab.bench import rows
from digitlab.bench.arithmetic import epoch_flops, useful_epoch_flops
from digitlab.bench.runner import MODEL, WARMUP_STEPS


def _worker(spec: rows.WorkerSpec) -> rows.EpochResult | rows.StepsResult:
    import digitlab  # noqa: F401  (sets KERAS_BACKEND if unset)
    from digitlab import config, data

    if spec["kind"] == "steps":
        return _steps_worker(spec)
    seeds = spec["seeds"]  # Consecutive: 0, 1, ..., N-1.
    model = spec.get("model", MODEL)
    cfg = config.TrainConfig(
        model=model, epochs=spec["epochs"], seed=seeds[0], seeds=len(seeds), train_limit=spec.get("train_limit")
    ).resolved()
    book_epochs = config.MODEL_DEFAULTS[model]["epochs"]
    loaded = data.load(spec.get("data_path"))
    (images, _), (valid_images, _), _ = data.split(loaded.arrays, cfg.validation, cfg.train_limit)
    # The images as rows of pixels, for counting the work (their nonzero pixels are the inputs' own).
    x, x_valid = images.reshape(len(images), -1), valid_images.reshape(len(valid_images), -1)
    if spec["kind"] == "fit":
        (inputs, y), validation, _ = data.prepared(loaded, cfg.validation, cfg.train_limit)
        durations, histories, engine_name = _fit_worker(cfg, inputs, y, validation)
        path = "Keras fit"
    else:
        durations, histories, fast = _engine_worker(
            cfg, loaded, spec["engine_backend"], spec.get("workers"), spec.get("profile", False)
        )
        engine_name, path = fast.name, fast.path
    first = float(np.mean(durations[:, 0]))
    later = durations[:, 1:].ravel()
    per_epoch = float(np.median(later)) if later.size else first
    assert cfg.units is not None, "the bench trains a resolved config"
    sizes = [784] + list(cfg.units) + [10]
    final = [history[-1]["val_accuracy"] for history in histories]
    networks_per_run = len(seeds) if spec["kind"] == "engine" else 1
    result: rows.EpochResult = {
        "engine": engine_name,
        "path": path,
        "networks": networks_per_run,
        "seeds": seeds,
        "epochs": spec["epochs"],
        "first_epoch_seconds": first,
        "seconds_per_epoch": per_epoch,
        "projected_seconds": first + (book_epochs - 1) * per_epoch,
        "total_seconds": float(durations.sum()),
        "val_accuracy": float(np.mean(final)),
        "final_val_accuracies": final,
        "flops_per_epoch": epoch_flops(sizes, len(x), len(x_valid)) * networks_per_run,
        "useful_flops_per_epoch": useful_epoch_flops(
            sizes, len(x), len(x_valid), int(np.count_nonzero(x)), int(np.count_nonzero(x_valid))
        )
        * networks_per_run,
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if spec["kind"] == "engine":
        from digitlab.engine import fast as fast_engine
        from digitlab.engine import timing

        result["kernel"] = fast.kernel
        result["thread_counts"] = {str(threads): epochs for threads, epochs in sorted(fast.thread_counts.items())}
        result["seed_threads"] = fast.seed_threads
        result["cores"] = spec.get("workers") or fast_engine.default_workers()
        if fast.profile is not None:
            result["profile"] = fast.profile.per_epoch()
            # Each phase's limit is counted for the shallow net's epoch (_train.c); the deep net's phases have none.
            result["work"] = timing.work(sizes, x, x_valid, cfg.batch_size) if model == MODEL else {}
    return result


def _steps_worker(spec: rows.WorkerSpec) -> rows.StepsResult:
    """Times `spec["steps"]` steps of Keras fit on the net `spec["model"]`, on the backend digitlab chooses."""
    from digitlab import config, data

    backend = backends.use_for(spec["model"])  # Before Keras is imported, as `digitlab train` does.
    import keras

    from digitlab import models

    cfg = config.TrainConfig(model=spec["model"], seed=0).resolved()
    images = spec["steps"] * cfg.batch_size
    (x, y), _, _ = data.prepare(
        data.load_arrays(spec.get("data_path")), train_limit=images, flat=not models.is_convolutional(cfg.model)
    )
    (network,) = models.create_seeded_models(cfg)
    stamps = []
    timer = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: stamps.append(time.perf_counter()))
    started = time.perf_counter()
    network.fit(x, y, batch_size=cfg.batch_size, epochs=1, verbose=0, shuffle=False, callbacks=[timer])
    durations = np.diff([started] + stamps)
    return {
        "keras_backend": keras.backend.backend(),
        "chosen": backend,
        "steps": len(durations),
        "first_steps_seconds": float(durations[:WARMUP_STEPS].sum()),
        "ms_per_step": 1000 * float(np.median(durations[WARMUP_STEPS:])),
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _fit_worker(cfg, x, y, validation):
    """Keras fit through `FitEngine`, one seed after another; returns epoch durations (seeds x epochs), histories.

    Seed s shuffles with `np.random.RandomState(s)`, as in the engine rows: both train on the same batches.
    """
    import keras

    from digitlab import engine, models

    durations, histories = [], []
    for index in range(cfg.seeds):
        single = dataclasses.replace(cfg, seed=cfg.seed + index, seeds=1)
        (network,) = models.create_seeded_models(single)
        fit = engine.FitEngine(network, single, verbose=0)
        timer = _EpochTimer(1)
        fit.fit(x, y, validation, epochs=single.epochs, rngs=[np.random.RandomState(single.seed)], on_epoch_end=timer)
        durations.append(timer.durations())
        histories += timer.histories
    return np.array(durations), histories, f"keras-fit-{keras.backend.backend()}"


def _engine_worker(cfg, loaded, backend, workers=None, profile=False):
    """The engine, all seeds at once (on `workers` cores; None: all); returns epoch durations (1 x epochs),
    per-seed histories and the engine. With `profile`, the engine's profile covers the epochs after the first.
    It trains on what `digitlab train` gives it (`training.training_inputs`): the images' rows where it trains
    from rows, so the process never makes the float32 inputs and its peak memory is the engine's."""
    from digitlab import engine, models, training

    # The same initial weights and batches as fit's run of each seed.
    # The thread count asked for, not one the epochs' times would choose (the load may still lower it).
    fast = engine.FastEngine(
        models.create_seeded_models(cfg), cfg, backend=backend, workers=workers, profile=profile, follow_speed=False
    )
    (x, y), validation, _ = training.training_inputs(loaded, cfg, True, fast)
    timer = _EpochTimer(cfg.seeds, after_first=fast.profile.reset if fast.profile is not None else None)
    fast.fit(
        x,
        y,
        validation,
        epochs=cfg.epochs,
        rngs=[np.random.RandomState(cfg.seed + k) for k in range(cfg.seeds)],
        on_epoch_end=timer,
    )
    return timer.durations()[None], timer.histories, fast


class _EpochTimer:
    """An engine's `on_epoch_end` for the workers: when each epoch ended, and each model's logs."""

    def __init__(self, count: int, after_first=None):
        self.stamps = [time.perf_counter()]
        self.histories: list[list[dict]] = [[] for _ in range(count)]
        self.after_first = after_first  # Called once, after the first epoch (which includes warming up).

    def __call__(self, epoch: int, logs: list[dict]) -> None:
        self.stamps.append(time.perf_counter())
        for history, entry in zip(self.histories, logs, strict=True):
            history.append(entry)
        if self.after_first is not None and len(self.stamps) == 2:
            self.after_first()

    def durations(self) -> np.ndarray:
        """Seconds of each epoch, from the timer's creation on."""
        return np.diff(self.stamps)


def main(argv: list[str] | None = None) -> int:
    """`python -m digitlab.bench.worker --worker JSON`: runs one contender (the command is `digitlab bench`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] != ["--worker"] or len(argv) != 2:
        print("This module runs the benchmark's workers; run the benchmark with `digitlab bench`.", file=sys.stderr)
        return 2
    spec: rows.WorkerSpec = json.loads(argv[1])
    Path(spec["output"]).write_text(json.dumps(_worker(spec)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
