"""Ray for `digitlab sweep`: starting or joining Ray, the Tune trial, and the one-line progress.

    from digitlab.sweep import raytune
    with raytune.connect(None):               # an embedded Ray on this machine, stopped afterwards
        raytune.run_trials(sweep, loaded, print)
    with raytune.connect("10.0.0.5:6379"):    # an existing cluster (or "auto")
        ...

Each trial is a Ray Tune function trial that calls `sweep_trial.train_trial`, which trains
an ordinary run folder with `training.train` (or continues one with
`training.resume`) and reports every epoch's metrics with `ray.tune.report`. The
MNIST arrays go into Ray's object store once (`tune.with_parameters` puts them
there), so workers never read the data file. Each trial asks for `cpus_per_trial`
CPUs (1 by default), so an embedded Ray on a 2-core machine trains two at once.
`--early-stop` adds Tune's ASHA scheduler on val_accuracy, epoch by epoch. A worker
process trains one trial after another (Tune's `reuse_actors`, except with early
stopping), so Keras and JAX load once per worker, not once per trial.

A cluster given by `--address` is reached within CONNECT_TIMEOUT_S or reported
unreachable. Ray's clusters ask for a token by default, which Ray sends to an explicit
address only with RAY_AUTH_MODE=token in the driver's environment: the error says so.

Ray's own console output (its trial tables, its workers' logs) is switched off; a
Tune callback keeps `sweep.json` current and prints one progress line: trials done,
running and failed, and the best so far.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from typing import Any

from digitlab import runs
from digitlab.sweep import plan as sweep_plan
from digitlab.sweep import trial as sweep_trial


def _quiet_environment() -> None:
    """Environment settings that keep Ray and Tune from printing or phoning home; set before Ray starts."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Ctrl-C reaches our code as KeyboardInterrupt, which marks the sweep interrupted and resumable.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"


_quiet_environment()
import ray
from ray import cloudpickle, tune
from ray.tune.progress_reporter import TrialProgressCallback
from ray.tune.schedulers import ASHAScheduler

# Seconds to reach a given --address before saying it is unreachable.
CONNECT_TIMEOUT_S = 10
# The embedded Ray's object store: MNIST is 55 MB; Ray's default (30% of memory) is far more than needed.
OBJECT_STORE_BYTES = 300 * 1024 * 1024


@contextlib.contextmanager
def connect(address: str | None):
    """Starts an embedded Ray (address None) or joins a running one, and shuts it down afterwards.

    Raises SweepError (a ValueError) within about CONNECT_TIMEOUT_S when the address cannot
    be reached, or with Ray's reason when it cannot start.
    """
    if address and address != "auto":
        check_reachable(address)
        # Ray retries a cluster that does not let it in for 20 s; a few tries tell as much.
        os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "5")
    options: dict[str, Any] = dict(
        include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR, configure_logging=True
    )
    if not address:
        # "local" always starts a new instance, never joining a cluster someone else started here.
        options.update(object_store_memory=OBJECT_STORE_BYTES)
    # ray.init makes SIGTERM exit the process at once (sys.exit), which would leave the sweep's trials
    # marked running; digitlab's own handler (Ctrl-C's way: saved, resumable) is put back after it.
    sigterm = signal.getsignal(signal.SIGTERM)
    with tempfile.TemporaryFile() as log:
        try:
            with _stderr_to(log):  # Ray's C++ core logs each failed try on file descriptor 2.
                ray.init(address=address or "local", **options)
        except Exception as error:  # Ray raises ConnectionError, RuntimeError, ValueError and its own kinds.
            log.seek(0)
            said = log.read().decode("utf-8", "replace")
            where = f"the Ray cluster at {address}" if address else "an embedded Ray on this machine"
            hint = ""
            if "InvalidAuthToken" in said or "Unauthenticated" in said:
                hint = (
                    " The cluster asks for a token: set RAY_AUTH_MODE=token, with the cluster's token in "
                    "~/.ray/auth_token or RAY_AUTH_TOKEN (see `ray get-auth-token`)."
                )
            raise sweep_plan.SweepError(
                f"Could not start or reach {where}: {type(error).__name__}: {error}.{hint}"
            ) from None
    if sigterm is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, sigterm)
    for name in ("ray", "ray.tune", "ray.train", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        yield ray
    finally:
        ray.shutdown()


def check_resources(cpus_per_trial: float) -> None:
    """Refuses trials that ask for more CPUs than the whole cluster has (Tune would wait for them forever)."""
    cpus = ray.cluster_resources().get("CPU", 0)
    if cpus_per_trial > cpus:
        raise sweep_plan.SweepError(
            f"Each trial asks for {cpus_per_trial:g} CPUs (--cpus-per-trial), but this Ray has only {cpus:g}."
        )


def check_reachable(address: str) -> None:
    """A TCP connection to HOST:PORT within CONNECT_TIMEOUT_S, or a SweepError saying what to check."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise sweep_plan.SweepError(f"--address {address!r} is not HOST:PORT (or auto).")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as error:
        raise sweep_plan.SweepError(
            f"No Ray cluster reachable at {address} ({error.strerror or error}). Start one with "
            f"`ray start --head --port {port}` on {host}, or leave out --address for an embedded Ray."
        ) from None


def run_trials(sweep, loaded, print_fn=print) -> None:
    """Runs the sweep's unfinished trials on Ray Tune, keeping sweep.json and the progress line current."""
    settings = sweep.state["settings"]
    indices = [trial["index"] for trial in sweep.unfinished()]
    progress = Progress(sweep, print_fn)
    if not indices:
        return
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, loaded=loaded, trials=sweep.trials, runs_dir=str(sweep.runs_dir)),
        {"cpu": settings["cpus_per_trial"]},
    )
    scheduler = None
    if settings["early_stop"]:
        longest = max(trial["config"]["epochs"] for trial in sweep.trials)
        # stop_last_trials=False: a trial that reaches its last epoch finishes its run (model, metrics).
        scheduler = ASHAScheduler(
            time_attr="epoch",
            metric="val_accuracy",
            mode="max",
            max_t=longest,
            grace_period=max(1, longest // 8),
            reduction_factor=3,
            stop_last_trials=False,
        )
    storage = sweep.file(".tune")
    storage.mkdir(exist_ok=True)
    tuner = tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search(indices)},
        tune_config=tune.TuneConfig(
            # A worker process trains one trial after another, so Keras and JAX are imported once
            # per worker, not once per trial; every trial seeds everything itself. Not with early
            # stopping: a stopped trial's worker is ended, so nothing of it trains on beside the next.
            scheduler=scheduler,
            reuse_actors=not settings["early_stop"],
            trial_name_creator=lambda trial: sweep.trials[trial.config["trial"]]["run"],
            trial_dirname_creator=lambda trial: sweep.trials[trial.config["trial"]]["run"],
        ),
        run_config=tune.RunConfig(
            name=f"attempt-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str(storage),
            verbose=0,
            callbacks=[progress, _Silent()],
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
        ),
    )
    with open(storage / "ray-driver.log", "ab") as log, _stderr_to(log):
        tuner.fit()
    progress.close()


def _trainable(params: dict, loaded, trials: list[sweep_plan.Trial], runs_dir: str) -> None:
    """A Tune function trial: train the trial `params["trial"]`, reporting each epoch to Tune."""
    sweep_trial.train_trial(trials[params["trial"]], runs_dir, loaded, tune.report)


@contextlib.contextmanager
def _stderr_to(log):
    """Sends what Ray's C++ core and Tune write straight to file descriptor 2 into the open file
    `log`, so the terminal shows only the progress line; Python's sys.stderr stays the terminal."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    sys.stderr.flush()
    original = sys.stderr
    terminal = os.fdopen(os.dup(saved), "w", buffering=1)
    os.dup2(log.fileno(), 2)
    sys.stderr = terminal
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        sys.stderr = original
        terminal.close()


class Progress(tune.Callback):
    """A Tune callback: records each trial's start, epochs and end in sweep.json, and prints one line.

    On a terminal the line is rewritten in place at every event; otherwise a new line is
    printed only when a trial ends (so a log shows one line per finished trial).
    """

    def __init__(self, sweep, print_fn=print):
        self.sweep, self.print_fn = sweep, print_fn
        self.tty = print_fn is print and sys.stdout.isatty()
        self.last_line = None

    def _index(self, trial) -> int:
        return trial.config["trial"]

    def on_trial_start(self, iteration, trials, trial, **info):
        self.sweep.update(self._index(trial), status="running")
        self.show()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.sweep.update(
            self._index(trial),
            status="running",
            epochs=result.get("epoch"),
            val_accuracy=result.get("val_accuracy"),
            wall_time_s=result.get("wall_time_s"),
        )
        self.show()

    def on_trial_complete(self, iteration, trials, trial, **info):
        index = self._index(trial)
        run = runs.Run(self.sweep.runs_dir / self.sweep.trials[index]["run"])
        # A trial that ended without completing its run was stopped by the ASHA scheduler.
        complete = run.status().get("status") == "complete"
        self.sweep.update(index, status="complete" if complete else "stopped")
        self.show(ended=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        index = self._index(trial)
        self.sweep.update(index, status="failed", error=_error_message(self.sweep, index, trial))
        self.show(ended=True)

    def show(self, ended: bool = False) -> None:
        line = self.line()
        if self.tty:
            sys.stdout.write("\r\033[K" + line)
            sys.stdout.flush()
        elif ended:
            self.print_fn(line)
        self.last_line = line

    def line(self) -> str:
        trials = self.sweep.trials
        count = {
            status: sum(trial["status"] == status for trial in trials)
            for status in ("complete", "stopped", "failed", "running")
        }
        done = count["complete"] + count["stopped"] + count["failed"]
        text = f"sweep: {done}/{len(trials)} done"
        if count["stopped"]:
            text += f" ({count['stopped']} stopped early)"
        text += f", {count['running']} running, {count['failed']} failed"
        scored = [trial for trial in trials if trial.get("val_accuracy") is not None]
        if scored:
            best = max(scored, key=lambda trial: trial["val_accuracy"])
            text += (
                f"; best so far val_accuracy {best['val_accuracy']:.4f} "
                f"({sweep_plan.label(best['params'])}, seed {best['seed']}, epoch {best.get('epochs')})"
            )
        return text

    def close(self) -> None:
        if self.tty and self.last_line is not None:
            sys.stdout.write("\n")
            sys.stdout.flush()


class _Silent(TrialProgressCallback):
    """Tune's own per-trial printer, given so that Tune adds no other, and silenced: even at
    verbose=0 it prints "Trial ... completed" lines."""

    def _print(self, msg: str) -> None:
        pass


def _error_message(sweep, index: int, trial) -> str:
    """The error that ended a trial, in a line: from its run's status, else from the exception Tune
    kept for it (the trial's own error inside Ray's wrapper), else the last line of Tune's trace."""
    status = runs.Run(sweep.runs_dir / sweep.trials[index]["run"]).status()
    if status.get("status") == "failed" and status.get("message"):
        return status["message"]
    try:
        with open(trial.pickled_error_file, "rb") as handle:
            error = cloudpickle.load(handle)
        cause = getattr(error, "cause", None) or error
        return f"{type(cause).__name__}: {cause}"
    except Exception:  # No pickled error (a worker that died): fall back to the text trace.
        pass
    try:
        with open(trial.error_file) as handle:
            lines = [line.strip() for line in handle if line.strip()]
    except (OSError, TypeError):
        lines = []
    return lines[-1] if lines else "the trial's worker ended unexpectedly"
