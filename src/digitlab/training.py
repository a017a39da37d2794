"""Training: runs a TrainConfig from data to a complete run folder, and resumes cut runs.

    from digitlab import config, training
    run = training.train(config.TrainConfig(model="shallow", seed=0))   # the book's chapter 5
    run = training.resume("runs/20261125-101500-shallow-seed0")         # after a Ctrl-C or a kill

Two engines do the epochs. `fit` is Keras's own `model.fit`, exactly the book's code. The fast
engine (`digitlab.engine`) runs the same computation (same Keras model and initial weights, same
loss, optimizer and shuffled batches) faster, and trains several seeds side by side; `engine="auto"`
uses it whenever it supports the model. After every epoch the history and status are written
(renamed into place, without waiting for the disk, by a thread beside the epochs: `epoch_files`),
and a checkpoint at most every `checkpoint_seconds` (after an epoch that `checkpoint_every` allows),
after the last epoch, and on an interrupt (Ctrl-C, SIGTERM, the page's stop, a sweep's early stop),
which saves the newest finished epoch. So an interrupted run loses at most the epoch in progress, a
killed one at most `checkpoint_seconds` of epochs, and `resume` finishes either with the same
history and weights as an uninterrupted run. With `record_epochs`, every epoch's weights are kept
too (at float16, `Run.write_epoch`), so that `digitlab serve` can show and ask the network of any
epoch.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import keras
import numpy as np

from digitlab import (
    atomic,
    backends,
    checkpoint,
    data,
    engine,
    epoch_files,
    interrupts,
    models,
    runlock,
    runs,
    system,
)
from digitlab.config import TrainConfig
from digitlab.engine import FastEngine, FitEngine, sparse
from digitlab.engine.spec import weight_names
from digitlab.runs import Run, RunError


class TrainingInterrupted(Exception):
    """Training stopped on Ctrl-C (or SIGTERM) after saving what it had."""

    def __init__(self, run: Run, epoch: int):
        super().__init__(f"Training interrupted after epoch {epoch}.")
        self.run = run
        self.epoch = epoch


def quiet(*args, **kwargs) -> None:
    """A `print_fn` that prints nothing, for training whose progress lines go nowhere (a sweep's trial)."""


def train(
    config: TrainConfig,
    runs_dir: str | Path = runs.RUNS_DIR,
    data_path=None,
    print_fn=print,
    verbose: int | None = None,
    loaded: data.Loaded | None = None,
    run_name: str | None = None,
    on_epoch_end=None,
    metadata: dict | None = None,
) -> Run:
    """Trains the configured net and returns its complete run folder.

    `loaded` gives the data already in memory (else it is loaded from `data_path`);
    `run_name` names the run folder (else a time stamp does); `on_epoch_end(epoch,
    histories, wall_time_s)` is called after each epoch's history and checkpoint are written (a
    sweep reports them to Ray Tune); `metadata`'s entries are added to metrics.json (a sweep's
    trial records the machine it trained on). Raises DigitlabError (DataError, RunError, ...) for bad
    input before any training, and TrainingInterrupted on Ctrl-C after saving the run's state.
    """
    config = config.resolved()
    if config.seed is None:
        # Every run gets a seed, recorded in its config, so that any run can be repeated.
        config.seed = secrets.randbelow(2**31 - config.seeds)
    session = _Session(config, loaded or data.load(data_path), print_fn, verbose, on_epoch_end, metadata)
    run = runs.new_run(runs_dir, config, name=run_name)
    # The folder is new (made by this process), so the lock is free; taken before config.json
    # is there, so that no resume can take the run before it is whole.
    with runlock.RunLock(run.path).acquire("training it"):
        config.save(run.file(runs.CONFIG_FILE))
        run.write_json(runs.DATA_FILE, session.data.record())
        run.set_status("running", epoch=0)
        print_fn(f"digitlab: training the {config.model} net in {run.path}\n{config.describe()}")
        session.networks[0].summary(print_fn=lambda line, *args, **kwargs: print_fn(line))
        return session.run(run, saved=None)


def resume(
    run_path: str | Path,
    data_path=None,
    print_fn=print,
    verbose: int | None = None,
    loaded: data.Loaded | None = None,
    on_epoch_end=None,
    metadata: dict | None = None,
    lock: runlock.RunLock | None = None,
) -> Run:
    """Continues an interrupted run from its last checkpoint to the end (`loaded`, `on_epoch_end`
    and `metadata` as for `train`; given data must be the run's own, by its SHA-256s).

    The run's lock is taken first, so a run that another process writes is refused (RunBusy, naming
    that process) before anything is read or changed; a caller that holds the lock already (the
    page, a sweep trial) passes it as `lock` and lets it go itself."""
    run = runs.open_run(run_path)
    runs.check_writable(run.path)  # A read-only run says so (and what to do) before its lock is asked for.
    if lock is None:
        with runlock.RunLock(run.path).acquire("resuming it"):
            return _resume(run, data_path, print_fn, verbose, loaded, on_epoch_end, metadata)
    if not lock.held or not lock.folder.samefile(run.path):
        raise ValueError(f"resume was given {lock!r}, which is not a held lock of {run.path}")
    return _resume(run, data_path, print_fn, verbose, loaded, on_epoch_end, metadata)


def _resume(run: Run, data_path, print_fn, verbose, loaded, on_epoch_end, metadata) -> Run:
    # With the lock held, a "running" status is a writer's that died: the run is interrupted.
    if run.status()["status"] == "complete":
        raise RunError(f"The run {run.path} is already complete; there is nothing to resume.")
    config = run.config()
    saved = checkpoint.load(run.file(runs.CHECKPOINT_FILE))
    config.check_resumable(saved["epoch"], run.file(runs.CONFIG_FILE))
    # The run's own data, found from its record (a run from before data.json: the usual search).
    record = run.read_json(runs.DATA_FILE) if run.file(runs.DATA_FILE).is_file() else {}
    session = _Session(config, data.load_recorded(record, data_path, loaded), print_fn, verbose, on_epoch_end, metadata)
    session.restore(saved)
    if session.data.record()["path"] != record.get("path"):
        run.write_json(runs.DATA_FILE, session.data.record())  # Found elsewhere: the next resume looks there.
    # A killed writer leaves its temporary files (the real ones intact), its history behind the checkpoint's.
    atomic.remove_leftovers(run.path)
    run.write_history(session.histories, durable=False)
    run.set_status("running", epoch=saved["epoch"])
    print_fn(f"digitlab: resuming {run.path} after epoch {saved['epoch']} of {config.epochs}")
    return session.run(run, saved=saved)


class _Session:
    """Everything a run needs before its folder is touched: data, networks, engine.

    Building it first means that a configuration the engine cannot train, or a
    checkpoint that does not fit, is reported before a run folder is created or changed.
    """

    def __init__(self, config: TrainConfig, loaded: data.Loaded, print_fn, verbose, on_epoch_end=None, metadata=None):
        self.config, self.data, self.print_fn = config, loaded, print_fn
        self.on_epoch_end, self.metadata = on_epoch_end, metadata or {}
        self.flat = not models.is_convolutional(config.model)
        assert config.seed is not None and config.epochs is not None, "a session takes a resolved config with its seed"
        self.seed, self.epochs = config.seed, config.epochs
        self.networks = models.create_seeded_models(config)
        self.engine = engine.make_engine(self.networks, config, verbose=_default_verbose(verbose))
        (self.train_inputs, self.train_targets), self.validation_data, self.test = training_inputs(
            loaded, config, self.flat, self.engine
        )
        self.rngs = [np.random.RandomState(self.seed + index) for index in range(config.seeds)]
        self.histories: list[dict[str, list[float]]] = [
            {key: [] for key in runs.HISTORY_KEYS} for _ in range(config.seeds)
        ]

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
                f"The checkpoint does not match this model ({error}); it was written for a different configuration."
            ) from None
        self.rngs, self.histories = saved["rngs"], saved["histories"]

    def run(self, run: Run, saved: dict | None) -> Run:
        """Trains from the start (or from `saved`) to the end, keeping the run folder current."""
        config, engine = self.config, self.engine
        initial_epoch = 0 if saved is None else saved["epoch"]
        progress = _EpochEnd(
            run,
            config,
            engine,
            self.rngs,
            self.histories,
            self.print_fn,
            wall_time_before=0.0 if saved is None else saved["wall_time_s"],
            hook=self.on_epoch_end,
        )
        try:
            path = getattr(engine, "path", None)
            self.print_fn(
                f"Engine: {engine.name} on the {keras.backend.backend()} backend" + (f" ({path})" if path else "")
            )
            note = backends.mismatch_note(config.model, keras.backend.backend())
            if note:
                self.print_fn(note)
            progress.start()
            with interrupts.requests_stop():  # Ctrl-C stops training between batches, never inside Keras.
                engine.fit(
                    self.train_inputs,
                    self.train_targets,
                    self.validation_data,
                    epochs=self.epochs,
                    initial_epoch=initial_epoch,
                    rngs=self.rngs,
                    on_epoch_end=progress,
                )
            progress.close()  # history.json and status.json hold the last epoch before the run's end is written.
            engine.sync_to_models()
            _finish(
                run,
                config,
                engine,
                self.networks,
                self.histories,
                self.test,
                self.flat,
                progress.wall_time(),
                self.data,
                self.print_fn,
                self.metadata,
            )
        except KeyboardInterrupt:
            epoch_reached = progress.epochs_done or initial_epoch
            progress.close(raise_error=False)
            progress.save_pending()
            _record_status(run, "interrupted", epoch=epoch_reached, checkpoint_epoch=progress.checkpoint_epoch)
            raise TrainingInterrupted(run, epoch_reached) from None
        except BaseException as error:
            progress.close(raise_error=False)
            _record_status(
                run, "failed", epoch=progress.epochs_done or initial_epoch, message=f"{type(error).__name__}: {error}"
            )
            raise
        finally:
            progress.close(raise_error=False)
        return run


def training_inputs(loaded: data.Loaded, config: TrainConfig, flat: bool, trainer):
    """What a run trains on: `data.prepared`'s arrays `((x, y), (x_valid, y_valid), test)`, or where the fast
    engine trains whole epochs in C, the images' sparse rows in place of the float32 inputs (the same values:
    `sparse.prepared_rows`): the C epochs read only the rows, and the inputs were the start's largest block of
    new memory (219 MB: `digitlab train --seed 0` peaked at 617 MB with them, 408 MB without)."""
    if flat and isinstance(trainer, FastEngine) and trainer.trains_from_rows:
        rows, valid_rows = sparse.prepared_rows(loaded, config.validation, config.train_limit)
        if rows.density() <= sparse.MAX_DENSITY:
            (y, y_valid), test = data.prepared_targets(loaded, config.validation, config.train_limit)
            return (rows, y), (valid_rows, y_valid), test
    return data.prepared(loaded, config.validation, config.train_limit, flat)


def _record_status(run: Run, status: str, **details) -> None:
    """Records how a run ended; if even that cannot be written (a full disk), the error that
    stopped the run is the one to report, and a dead "running" run reads as interrupted anyway."""
    try:
        run.set_status(status, **details)
    except atomic.WriteError:
        pass


class _EpochEnd:
    """Called after every epoch: records history, hands it to the thread that writes it (`epoch_files`),
    checkpoints, prints progress."""

    def __init__(self, run, config, engine, rngs, histories, print_fn, wall_time_before, hook=None):
        self.run, self.config, self.engine, self.hook = run, config, engine, hook
        self.rngs, self.histories, self.print_fn = rngs, histories, print_fn
        self.wall_time_before = wall_time_before
        self.epochs_done = 0
        self.checkpoint_epoch = None
        # The newest finished epoch not checkpointed yet (its state, random states and history, copied):
        # what an interrupt saves.
        self.pending: dict | None = None
        self.next_checkpoint = 0.0
        self.files = epoch_files.EpochFiles(run)
        self.tensorboard = None
        if config.tensorboard:
            from tensorboardX import SummaryWriter

            self.tensorboard = SummaryWriter(str(run.file("tensorboard")))

    def start(self):
        self.started = self.epoch_started = time.perf_counter()
        self.next_checkpoint = self.started + self.config.checkpoint_seconds

    def close(self, raise_error: bool = True) -> None:
        """Writes the newest history and status, stops their thread (`EpochFiles.close`), and writes out the
        TensorBoard events still queued (flush alone leaves the last one)."""
        tensorboard, self.tensorboard = self.tensorboard, None
        try:
            self.files.close(raise_error)
        finally:
            if tensorboard is not None:
                tensorboard.close()

    def wall_time(self) -> float:
        return self.wall_time_before + time.perf_counter() - self.started

    def __call__(self, epoch: int, logs: list[dict]) -> None:
        seconds = time.perf_counter() - self.epoch_started
        for history, values in zip(self.histories, logs, strict=True):
            for key in runs.HISTORY_KEYS:
                history[key].append(float(values[key]))
        self.epochs_done = epoch + 1
        every = self.config.checkpoint_every
        if every and (self.epochs_done % every == 0 or self.epochs_done == self.config.epochs):
            if self.epochs_done == self.config.epochs or time.perf_counter() >= self.next_checkpoint:
                self._checkpoint(self.epochs_done, self.engine.get_state(), self.rngs, self.histories)
            else:
                rngs = [rng.get_state() for rng in self.rngs]  # A tenth of a deep copy's time.
                histories = [{key: list(values) for key, values in history.items()} for history in self.histories]
                state = self.engine.get_state()
                self.pending = dict(epoch=self.epochs_done, state=state, rngs=rngs, histories=histories)
        # Renamed into place by a thread, not flushed: a resume reads the (flushed) checkpoint's history.
        self.files.update(self.histories, epoch=self.epochs_done, checkpoint_epoch=self.checkpoint_epoch)
        if self.config.record_epochs:
            # An epoch's weights only once history.json has the epoch: a page that follows the run reads one
            # for the other, even when the process stops right after (Ctrl-Z, SIGSTOP: tests/test_live_server.py).
            self.files.flush()
            self.run.write_epoch(self.epochs_done, _first_network_weights(self.engine))
        if self.tensorboard is not None:
            for key, value in logs[0].items():
                split = "validation" if key.startswith("val_") else "train"
                self.tensorboard.add_scalar(f"epoch_{key.removeprefix('val_')}/{split}", value, epoch + 1)
            self.tensorboard.flush()
        if self.engine.name != "fit":
            self.print_fn(_progress_line(epoch + 1, self.config.epochs, seconds, logs))
        if self.hook is not None:
            self.files.flush()  # The hook (a sweep's mirror) finds the epoch in the run's files.
            self.hook(self.epochs_done, self.histories, self.wall_time())
        self.epoch_started = time.perf_counter()

    def _checkpoint(self, epoch: int, state: dict, rngs: list, histories: list[dict]) -> None:
        checkpoint.save(
            self.run.file(runs.CHECKPOINT_FILE),
            engine=self.engine.name,
            epoch=epoch,
            state=state,
            rngs=rngs,
            histories=histories,
            wall_time_s=self.wall_time(),
        )
        self.checkpoint_epoch, self.pending = epoch, None
        self.next_checkpoint = time.perf_counter() + self.config.checkpoint_seconds

    def save_pending(self) -> None:
        """On an interrupt: checkpoints the newest finished epoch, if it has none yet. A checkpoint
        that cannot be written (a full disk) leaves the previous one, which resumes as well."""
        if self.pending is not None:
            rngs = [np.random.RandomState() for _ in self.pending["rngs"]]
            for rng, state in zip(rngs, self.pending["rngs"], strict=True):
                rng.set_state(state)
            try:
                self._checkpoint(**dict(self.pending, rngs=rngs))
            except atomic.WriteError:
                pass


def _first_network_weights(engine) -> list[np.ndarray]:
    """The (first) network's weights now, in the order of Keras's `model.get_weights()`."""
    if isinstance(engine, FitEngine):
        return engine.model.get_weights()
    state = engine.get_state()
    return [state[name][0] for name in weight_names(engine.network)]


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


def complete_metrics(
    config: TrainConfig, engine_name: str, histories: list[dict], wall_time_s: float, machine: str, data_sha256: dict
) -> dict:
    """metrics.json of a complete run, as every trainer writes it (`digitlab train`, a page run kept:
    `browser.page_runs`): the net, its engine, epochs and seeds, the first seed's final and best
    validation scores, the wall time, when it finished, the backend, versions, machine and data."""
    return {
        "model": config.model,
        "engine": engine_name,
        "epochs": len(histories[0]["val_accuracy"]),
        "seeds": len(histories),
        "final_val_accuracy": histories[0]["val_accuracy"][-1],
        "final_val_loss": histories[0]["val_loss"][-1],
        "best_val_accuracy": max(histories[0]["val_accuracy"]),
        "wall_time_s": round(wall_time_s, 3),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "validation": config.validation,
        "backend": keras.backend.backend(),
        "versions": system.software_versions(),
        "machine": machine,
        "data_sha256": data_sha256,
    }


def _finish(run, config, engine, networks, histories, test, flat, wall_time, loaded, print_fn, metadata):
    """Writes the trained model(s), curves and metrics, then marks the run complete."""
    with backends.saving_without_tensorflow():
        atomic.atomic_save(run.model_path(), networks[0].save)
        if len(networks) > 1:
            run.file(runs.SEEDS_FOLDER).mkdir(exist_ok=True)
            for index, network in enumerate(networks[1:], start=1):
                atomic.atomic_save(run.model_path(index), network.save)
    from digitlab import plots  # Matplotlib, imported here: nothing before the run's end draws.

    plots.save_figure(plots.training_curves(histories, title=f"{config.model} net"), run.file(runs.CURVES_FILE))
    final = [history["val_accuracy"][-1] for history in histories]
    metrics = {
        **complete_metrics(config, engine.name, histories, wall_time, system.machine_summary(), loaded.sha256),
        **metadata,
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
    run.write_json(runs.METRICS_FILE, metrics)
    run.set_status("complete", epoch=metrics["epochs"])
    summary = f"val_accuracy {final[0]:.4f}"
    if len(histories) > 1:
        summary = (
            f"val_accuracy mean {np.mean(final):.4f} over {len(final)} seeds "
            f"(min {np.min(final):.4f}, max {np.max(final):.4f})"
        )
    if test is not None:
        summary += f", test_accuracy {metrics['test_accuracy']:.4f}"
    print_fn(
        f"Done: {config.model} net, {metrics['epochs']} epochs in {wall_time:.1f} s "
        f"({engine.name} engine, {metrics['backend']} backend): {summary}. Saved in {run.path}"
    )
