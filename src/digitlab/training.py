"""Training: runs a TrainConfig from data to a complete run folder, and resumes cut runs.

    from digitlab import config, training
    run = training.train(config.TrainConfig(model="shallow", seed=0))   # the book's chapter 5
    run = training.resume("runs/20261125-101500-shallow-seed0")         # after a Ctrl-C or a kill

Two engines do the epochs. `fit` is Keras's own `model.fit`, exactly the book's
code. The fast engine (`digitlab.engine`) runs the same computation (same Keras
model and initial weights, same loss, optimizer and shuffled batches) faster,
and trains several seeds side by side; `engine="auto"` uses it whenever it
supports the model. After every epoch the history is written and, every
`checkpoint_every` epochs, a checkpoint, so an interrupted run loses at most the
epoch in progress and `resume` finishes it with the same history and weights as
an uninterrupted run.
"""

from __future__ import annotations

import csv
import io
import os
import platform
import secrets
import time
from pathlib import Path

import keras
import numpy as np

from digitlab import checkpoint, data, models, plots, runs
from digitlab.config import TrainConfig
from digitlab.runs import Run, RunError


class TrainingInterrupted(Exception):
    """Training stopped on Ctrl-C (or SIGTERM) after saving what it had."""

    def __init__(self, run: Run, epoch: int):
        super().__init__(f"Training interrupted after epoch {epoch}.")
        self.run = run
        self.epoch = epoch


class FitEngine:
    """Keras's own `model.fit`, the book's code, behind the interface the fast engine has."""

    name = "fit"

    def __init__(self, model: keras.Model, config: TrainConfig, verbose: int = 2):
        self.model = model
        self.config = config
        self.verbose = verbose

    def fit(self, x, y, validation_data, epochs, initial_epoch=0, rngs=(), on_epoch_end=None):
        # Keras shuffles NumPy data with the global NumPy generator (np.random.permutation),
        # so the run's own generator is loaded into it, and copied back after every epoch.
        rng = rngs[0]
        # The first `fit` of a fresh model draws one batch (and so one permutation) just to build
        # its metrics. Building them here, on one unshuffled image, keeps that draw out of the run's
        # generator: epoch e then always shuffles with the generator's e-th permutation, in a fresh
        # run and in a resumed one alike, and the same as the fast engine.
        self.model.evaluate(x[:1], y[:1], verbose=0)
        np.random.set_state(rng.get_state())

        class Bridge(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                rng.set_state(np.random.get_state())
                if on_epoch_end is not None:
                    on_epoch_end(epoch, [dict(logs or {})])

        self.model.fit(
            x, y, batch_size=self.config.batch_size, epochs=epochs, initial_epoch=initial_epoch,
            verbose=self.verbose, validation_data=validation_data, shuffle=True, callbacks=[Bridge()],
        )

    def get_state(self) -> dict[str, np.ndarray]:
        state = {f"variable/{i}": np.asarray(v.numpy()) for i, v in enumerate(self.model.variables)}
        for i, variable in enumerate(self.model.optimizer.variables):
            state[f"optimizer/{i}"] = np.asarray(variable.numpy())
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        if not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        for prefix, variables in (("variable", self.model.variables), ("optimizer", self.model.optimizer.variables)):
            for i, variable in enumerate(variables):
                value = state.get(f"{prefix}/{i}")
                if value is None or tuple(value.shape) != tuple(variable.shape):
                    raise RunError(
                        "The checkpoint does not match this model (a variable is missing or has "
                        "another shape); it was written for a different configuration."
                    )
                variable.assign(value)

    def sync_to_models(self) -> None:
        """The Keras model already holds the weights."""


def train(config: TrainConfig, runs_dir: str | Path = "runs", data_path=None, print_fn=print,
          verbose: int | None = None) -> Run:
    """Trains the configured net and returns its complete run folder.

    Raises ValueError (DataError, RunError) for bad input before any training,
    and TrainingInterrupted on Ctrl-C after saving the run's state.
    """
    config = config.resolved()
    if config.seed is None:
        # Every run gets a seed, recorded in its config, so that any run can be repeated.
        config.seed = secrets.randbelow(2**31 - config.seeds)
    session = _Session(config, data.load_arrays(data_path), print_fn, verbose)
    run = runs.new_run(runs_dir, config)
    config.save(run.file("config.json"))
    run.set_status("running", epoch=0)
    print_fn(f"digitlab: training the {config.model} net in {run.path}\n{config.describe()}")
    session.networks[0].summary(print_fn=lambda line, *args, **kwargs: print_fn(line))
    return session.run(run, saved=None)


def resume(run_path: str | Path, data_path=None, print_fn=print, verbose: int | None = None) -> Run:
    """Continues an interrupted run from its last checkpoint to the end."""
    run = runs.open_run(run_path)
    status = run.status()
    if status["status"] == "complete":
        raise RunError(f"The run {run.path} is already complete; there is nothing to resume.")
    if status["status"] == "running":
        raise RunError(
            f"The run {run.path} is still being trained by process {status.get('pid')}; "
            "stop that process first (Ctrl-C), then resume."
        )
    config = run.config()
    saved = checkpoint.load(run.file("checkpoint.npz"))
    session = _Session(config, data.load_arrays(data_path), print_fn, verbose)
    session.restore(saved)
    runs.check_writable(run.path)
    for leftover in run.path.glob(".*.tmp*"):
        # A process killed while writing leaves its temporary file; the real file is intact.
        leftover.unlink()
    run.set_status("running", epoch=saved["epoch"])
    print_fn(f"digitlab: resuming {run.path} after epoch {saved['epoch']} of {config.epochs}")
    return session.run(run, saved=saved)


class _Session:
    """Everything a run needs before its folder is touched: data, networks, engine.

    Building it first means that a configuration the engine cannot train, or a
    checkpoint that does not fit, is reported before a run folder is created or changed.
    """

    def __init__(self, config: TrainConfig, arrays, print_fn, verbose):
        self.config, self.arrays, self.print_fn = config, arrays, print_fn
        self.flat = not models.is_convolutional(config.model)
        (x_train, y_train), (x_valid, y_valid), self.test = data.split(arrays, config.validation, config.train_limit)
        self.train_inputs, self.train_targets = data.to_inputs(x_train, self.flat), data.to_targets(y_train)
        self.validation_data = (data.to_inputs(x_valid, self.flat), data.to_targets(y_valid))
        self.networks = []
        for index in range(config.seeds):
            models.set_random_seed(config.seed + index)
            self.networks.append(models.create_model(config))
        self.engine = make_engine(self.networks, config, verbose=_default_verbose(verbose))
        self.rngs = [np.random.RandomState(config.seed + index) for index in range(config.seeds)]
        self.histories = [{key: [] for key in runs.HISTORY_KEYS} for _ in range(config.seeds)]

    def restore(self, saved: dict) -> None:
        """Loads a checkpoint's weights, optimizer state, random state and history."""
        if saved["engine"] != self.engine.name or saved["seeds"] != self.config.seeds:
            raise RunError(
                f"The checkpoint was written by the {saved['engine']} engine with {saved['seeds']} "
                f"seed(s), but this run would use {self.engine.name} with {self.config.seeds}. Resume "
                f"with --engine {'fit' if saved['engine'] == 'fit' else 'fast'}."
            )
        try:
            self.engine.set_state(saved["state"])
        except RunError:
            raise
        except ValueError as error:
            raise RunError(
                f"The checkpoint does not match this model ({error}); it was written for a "
                "different configuration."
            ) from None
        self.rngs, self.histories = saved["rngs"], saved["histories"]

    def run(self, run: Run, saved: dict | None) -> Run:
        """Trains from the start (or from `saved`) to the end, keeping the run folder current."""
        config, engine = self.config, self.engine
        initial_epoch = 0 if saved is None else saved["epoch"]
        progress = _EpochEnd(run, config, engine, self.rngs, self.histories, self.print_fn,
                             wall_time_before=0.0 if saved is None else saved["wall_time_s"])
        try:
            self.print_fn(f"Engine: {engine.name} on the {keras.backend.backend()} backend")
            progress.start()
            engine.fit(
                self.train_inputs, self.train_targets, self.validation_data, epochs=config.epochs,
                initial_epoch=initial_epoch, rngs=self.rngs, on_epoch_end=progress,
            )
            engine.sync_to_models()
            _finish(run, config, engine, self.networks, self.histories, self.test, self.flat,
                    progress.wall_time(), self.arrays, self.print_fn)
        except KeyboardInterrupt:
            epoch_reached = progress.epochs_done or initial_epoch
            _record_status(run, "interrupted", epoch=epoch_reached, checkpoint_epoch=progress.checkpoint_epoch)
            raise TrainingInterrupted(run, epoch_reached) from None
        except BaseException as error:
            _record_status(run, "failed", epoch=progress.epochs_done or initial_epoch,
                           message=f"{type(error).__name__}: {error}")
            raise
        finally:
            progress.close()
        return run


def _record_status(run: Run, status: str, **details) -> None:
    """Records how a run ended; if even that cannot be written (a full disk), the error that
    stopped the run is the one to report, and a dead "running" run reads as interrupted anyway."""
    try:
        run.set_status(status, **details)
    except RunError:
        pass


def make_engine(networks: list[keras.Model], config: TrainConfig, verbose: int = 2):
    """The engine `config.engine` asks for; "auto" prefers the fast engine where it applies."""
    reason = None
    if config.engine != "fit":
        from digitlab import engine as fast

        reason = fast.unsupported_reason(networks[0], config)
        if reason is None:
            return fast.FastEngine(networks, config)
        if config.engine == "fast":
            raise ValueError(f"--engine fast cannot train the {config.model} net: {reason} Use --engine fit.")
    if config.seeds > 1:
        raise ValueError(
            f"--seeds {config.seeds} trains networks side by side with the fast engine, which "
            f"cannot run here: {reason or '--engine fit trains one network at a time.'}"
        )
    return FitEngine(networks[0], config, verbose=verbose)


class _EpochEnd:
    """Called after every epoch: records history, writes it, checkpoints, prints progress."""

    def __init__(self, run, config, engine, rngs, histories, print_fn, wall_time_before):
        self.run, self.config, self.engine = run, config, engine
        self.rngs, self.histories, self.print_fn = rngs, histories, print_fn
        self.wall_time_before = wall_time_before
        self.epochs_done = 0
        self.checkpoint_epoch = None
        self.tensorboard = None
        if config.tensorboard:
            from tensorboardX import SummaryWriter

            self.tensorboard = SummaryWriter(str(run.file("tensorboard")))

    def start(self):
        self.started = self.epoch_started = time.perf_counter()

    def close(self) -> None:
        """Writes out the TensorBoard events still queued (flush alone leaves the last one)."""
        if self.tensorboard is not None:
            self.tensorboard.close()

    def wall_time(self) -> float:
        return self.wall_time_before + time.perf_counter() - self.started

    def __call__(self, epoch: int, logs: list[dict]) -> None:
        seconds = time.perf_counter() - self.epoch_started
        for history, values in zip(self.histories, logs):
            for key in runs.HISTORY_KEYS:
                history[key].append(float(values[key]))
        self.epochs_done = epoch + 1
        self._write_history()
        every = self.config.checkpoint_every
        if every and (self.epochs_done % every == 0 or self.epochs_done == self.config.epochs):
            checkpoint.save(
                self.run.file("checkpoint.npz"), engine=self.engine.name, epoch=self.epochs_done,
                state=self.engine.get_state(), rngs=self.rngs, histories=self.histories,
                wall_time_s=self.wall_time(),
            )
            self.checkpoint_epoch = self.epochs_done
        if self.tensorboard is not None:
            for key, value in logs[0].items():
                split = "validation" if key.startswith("val_") else "train"
                self.tensorboard.add_scalar(f"epoch_{key.removeprefix('val_')}/{split}", value, epoch + 1)
            self.tensorboard.flush()
        if self.engine.name != "fit":
            self.print_fn(_progress_line(epoch + 1, self.config.epochs, seconds, logs))
        self.epoch_started = time.perf_counter()

    def _write_history(self) -> None:
        self.run.write_json("history.json", {"seeds": self.histories})
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        if len(self.histories) == 1:
            writer.writerow(["epoch", *runs.HISTORY_KEYS])
            for epoch, row in enumerate(zip(*(self.histories[0][key] for key in runs.HISTORY_KEYS)), start=1):
                writer.writerow([epoch, *(f"{v:.6f}" for v in row)])
        else:
            writer.writerow(["seed", "epoch", *runs.HISTORY_KEYS])
            for seed, history in enumerate(self.histories, start=1):
                for epoch, row in enumerate(zip(*(history[key] for key in runs.HISTORY_KEYS)), start=1):
                    writer.writerow([seed, epoch, *(f"{v:.6f}" for v in row)])
        runs.atomic_write_text(self.run.file("history.csv"), text.getvalue())
        self.run.set_status("running", epoch=self.epochs_done, checkpoint_epoch=self.checkpoint_epoch)


def _progress_line(epoch: int, epochs: int, seconds: float, logs: list[dict]) -> str:
    head = f"Epoch {epoch}/{epochs} - {seconds:.2f}s"
    if len(logs) == 1:
        return head + "".join(f" - {key}: {logs[0][key]:.4f}" for key in runs.HISTORY_KEYS)
    accuracy = np.array([values["val_accuracy"] for values in logs])
    loss = np.mean([values["loss"] for values in logs])
    return (
        f"{head} - {len(logs)} seeds - mean loss: {loss:.4f} - val_accuracy mean {accuracy.mean():.4f} "
        f"(min {accuracy.min():.4f}, max {accuracy.max():.4f})"
    )


def _default_verbose(verbose: int | None) -> int:
    if verbose is not None:
        return verbose
    # Keras's per-step progress bar (verbose=1, the book's) only makes sense on a terminal.
    return 1 if os.isatty(1) else 2


def _finish(run, config, engine, networks, histories, test, flat, wall_time, arrays, print_fn):
    """Writes the trained model(s), curves and metrics, then marks the run complete."""
    runs.atomic_save(run.file("model.keras"), networks[0].save)
    if len(networks) > 1:
        run.file("seeds").mkdir(exist_ok=True)
        for index, network in enumerate(networks[1:], start=1):
            runs.atomic_save(run.model_path(index), network.save)
    plots.save_figure(plots.training_curves(histories, title=f"{config.model} net"), run.file("curves.png"))
    final = [history["val_accuracy"][-1] for history in histories]
    metrics = {
        "model": config.model,
        "engine": engine.name,
        "epochs": len(histories[0]["val_accuracy"]),
        "seeds": len(histories),
        "final_val_accuracy": final[0],
        "final_val_loss": histories[0]["val_loss"][-1],
        "best_val_accuracy": max(histories[0]["val_accuracy"]),
        "wall_time_s": round(wall_time, 3),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "validation": config.validation,
        "backend": keras.backend.backend(),
        "versions": software_versions(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "data_sha256": data.fingerprint(arrays),
    }
    if len(histories) > 1:
        metrics.update(
            final_val_accuracy_mean=float(np.mean(final)),
            final_val_accuracy_min=float(np.min(final)),
            final_val_accuracy_max=float(np.max(final)),
        )
    if test is not None:
        # With --validation holdout the test images are touched once, here, at the very end.
        test_loss, test_accuracy = networks[0].evaluate(
            data.to_inputs(test[0], flat), data.to_targets(test[1]), batch_size=1000, verbose=0
        )
        metrics.update(test_accuracy=float(test_accuracy), test_loss=float(test_loss))
    run.write_json("metrics.json", metrics)
    run.set_status("complete", epoch=metrics["epochs"])
    summary = f"val_accuracy {final[0]:.4f}"
    if len(histories) > 1:
        summary = (f"val_accuracy mean {np.mean(final):.4f} over {len(final)} seeds "
                   f"(min {np.min(final):.4f}, max {np.max(final):.4f})")
    if test is not None:
        summary += f", test_accuracy {metrics['test_accuracy']:.4f}"
    print_fn(
        f"Done: {config.model} net, {metrics['epochs']} epochs in {wall_time:.1f} s "
        f"({engine.name} engine, {metrics['backend']} backend): {summary}. Saved in {run.path}"
    )


def software_versions() -> dict[str, str]:
    """Versions of Python and the libraries that decide a run's numbers."""
    import importlib.metadata

    versions = {"python": platform.python_version()}
    for package in ("digitlab", "keras", "jax", "jaxlib", "numpy", "tensorflow", "tensorflow-cpu", "torch"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions
