"""Ray for `digitlab sweep`: starting or joining Ray, the Tune trial and its retries.

    from digitlab.sweep import raytune
    with raytune.connect(None):               # an embedded Ray on this machine (loopback only), stopped afterwards
        raytune.run_trials(sweep, loaded, print)
    with raytune.connect("10.0.0.5:6379"):    # an existing cluster (or "auto")
        ...

Each trial is a Ray Tune function trial that calls `sweep_trial.train_trial`, which trains
an ordinary run folder with `training.train` (or continues one with
`training.resume`) and reports its epochs' metrics with `ray.tune.report` (every epoch with
`--early-stop`, else the first, then at most one a second, and the last: REPORT_EVERY_S). The
MNIST arrays go into Ray's object store once (`tune.with_parameters` puts them
there), so workers never read the data file. Each trial asks for `cpus_per_trial`
CPUs (1 by default), so an embedded Ray on a 2-core machine trains two at once.
`--early-stop` adds Tune's ASHA scheduler on val_accuracy, epoch by epoch. A worker
process trains one trial after another (Tune's `reuse_actors`, except with early
stopping), so Keras and JAX load once per worker, not once per trial. The first trials take the
worker processes an embedded Ray starts when it starts (`ray_patches`, patch 6); the store's actor has
a process of its own.

Run files on a cluster. A `RunStore` actor (`digitlab.sweep.store`) is placed on the driver's
node. A trial that finds the sweep's folder on its machine (the driver's machine, or a shared
`--out`) writes its run there, as on one machine; one that does not trains in a scratch folder
and sends its files to the store after every epoch. Every trial tells the store how it ended,
and the driver takes a trial for complete only when the store says so and its run in OUT is
complete. A trial whose machine is lost (its worker or node dies) is retried by Tune (up to
RETRIES times) on another machine, from the last checkpoint the store holds; a trial's own error
(bad values, a bug) is recorded as failed, not retried.

Listening. The embedded Ray is started in Ray's single-machine mode (the one it uses on macOS
and Windows), in which every Ray process listens on 127.0.0.1 only (`ray_patches.on_loopback`);
Ray's token (Ray's default, in ~/.ray/auth_token) is still asked for. A cluster given by `--address` is reached within
CONNECT_TIMEOUT_S or reported unreachable. Ray's clusters ask for a token by default, which Ray
sends to an explicit address only with RAY_AUTH_MODE=token in the driver's environment: the
error says so.

Ray's own console output (its trial tables, its workers' logs) is switched off (`ray_patches`:
every use of Ray's private parts is there, with why); a Tune callback (`sweep.progress`) keeps
`sweep.json` current and prints one progress line.
"""

from __future__ import annotations

from digitlab.sweep import ray_patches  # First: it sets what Ray must see when it is imported.

# isort: split
import contextlib
import logging
import os
import socket
import tempfile
import time
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from digitlab import errors, interrupts, runs
from digitlab.sweep import plan as sweep_plan
from digitlab.sweep import progress as sweep_progress
from digitlab.sweep import state as sweep_state
from digitlab.sweep import store as sweep_store
from digitlab.sweep import trial as sweep_trial

# The run-file store's runtime environment: any but the empty one, which the trials' actors ask for.
STORE_RUNTIME_ENV = {"env_vars": {"DIGITLAB_SWEEP_ROLE": "run-file store"}}
# Seconds to reach a given --address before saying it is unreachable.
CONNECT_TIMEOUT_S = 10
# The embedded Ray's object store: MNIST is 55 MB; Ray's default (30% of memory) is far more than needed.
OBJECT_STORE_BYTES = 300 * 1024 * 1024
# How many times Tune starts a trial again after its worker or machine was lost.
RETRIES = 3
# How many times an embedded Ray is started before its failure is reported (see `_init`).
STARTS = 2
# How often a trial reports its epochs to Tune without early stopping (seconds; always its first and last).
# Tune's function trials report synchronously: the trial's training waits at each report until Tune's
# driver has taken the result (its callbacks, sweep.json written and synced) and asked for the next,
# a round trip per epoch. Without a scheduler nothing but the progress line needs every epoch, so a
# trial reports at most once a second. With --early-stop every epoch is reported, as ASHA's rungs are
# epochs.
REPORT_EVERY_S = 1.0


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
    embedded = _embedded_environment() if not address else contextlib.nullcontext()
    with tempfile.TemporaryFile() as log, embedded:
        try:
            # ray.init makes SIGTERM exit the process at once (sys.exit), which would leave the sweep's
            # trials marked running; digitlab's own handler (Ctrl-C's way: saved, resumable) is put back.
            # Ray's C++ core logs each failed try on file descriptor 2.
            with interrupts.sigterm_kept(), ray_patches.stderr_to(log):
                _init(address, options)
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
            raise errors.SweepError(
                f"Could not start or reach {where}: {type(error).__name__}: {error}.{hint}"
            ) from None
        for name in ("ray", "ray.tune", "ray.train", "ray.data"):
            logging.getLogger(name).setLevel(logging.ERROR)
        try:
            yield ray
        finally:
            ray.shutdown()


def _init(address: str | None, options: dict) -> None:
    """ray.init, tried once more where an embedded Ray's node timed out while it started: on a busy
    machine Ray's Python agents can take longer to start than its raylet waits for them (about 15 s)."""
    for attempt in range(1, STARTS + 1):
        try:
            ray.init(address=address or "local", **options)
            return
        except Exception as error:
            if address or attempt == STARTS or "timed out during startup" not in str(error):
                raise
            ray.shutdown()


@contextlib.contextmanager
def _embedded_environment():
    """What the embedded Ray's processes are started with: loopback only, and without the import they never use."""
    with ray_patches.on_loopback(), ray_patches.without_unused_import():
        yield


def check_resources(cpus_per_trial: float) -> None:
    """Refuses trials that ask for more CPUs than the whole cluster has (Tune would wait for them forever)."""
    cpus = ray.cluster_resources().get("CPU", 0)
    if cpus_per_trial > cpus:
        raise errors.SweepError(
            f"Each trial asks for {cpus_per_trial:g} CPUs (--cpus-per-trial), but this Ray has only {cpus:g}."
        )


def check_reachable(address: str) -> None:
    """A TCP connection to HOST:PORT within CONNECT_TIMEOUT_S, or a SweepError saying what to check."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise errors.SweepError(f"--address {address!r} is not HOST:PORT (or auto).")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as error:
        raise errors.SweepError(
            f"No Ray cluster reachable at {address} ({error.strerror or error}). Start one with "
            f"`ray start --head --port {port}` on {host}, or leave out --address for an embedded Ray."
        ) from None


def run_trials(sweep, loaded, print_fn=print, cluster: bool = False) -> None:
    """Runs the sweep's unfinished trials on Ray Tune, keeping sweep.json and the progress line current
    (which, on a `cluster`, counts the trials of each node)."""
    settings = sweep.state["settings"]
    indices = [trial["index"] for trial in sweep.unfinished()]
    if not indices:
        return
    sweep.mark_runs_folder()
    store = (
        ray.remote(sweep_store.RunStore)
        .options(
            num_cpus=0,
            # On the driver's node, where OUT is; soft=False: nowhere else, even if that node is busy.
            scheduling_strategy=NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False),
            # On the embedded Ray, a process of its own: the workers Ray started beforehand are left to the
            # trials (patch 6).
            runtime_env=None if cluster else STORE_RUNTIME_ENV,
        )
        .remote(str(sweep.runs_dir))
    )
    progress = sweep_progress.Progress(sweep, store, print_fn, cluster=cluster)
    trainable = tune.with_resources(
        tune.with_parameters(
            _trainable,
            loaded=loaded,
            trials=sweep.trials,
            runs_dir=str(sweep.runs_dir),
            store=store,
            sweep_id=sweep.id,
            report_every_s=0.0 if settings["early_stop"] else REPORT_EVERY_S,
        ),
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
            callbacks=[progress, ray_patches.SilentTrialPrinter()],
            # Only a lost worker or machine fails a trial in Tune's eyes (a trial's own error is
            # caught in _trainable and recorded): such a trial is started again, elsewhere if need be.
            failure_config=tune.FailureConfig(max_failures=RETRIES, fail_fast=False),
        ),
    )
    with (
        open(storage / "ray-driver.log", "ab") as log,
        ray_patches.stderr_to(log),
        # On the embedded Ray only: a cluster's trials start as Tune starts them, in processes of their own,
        # so that Ray spreads them over the machines as it placed them before (tests/test_sweep_cluster.py).
        contextlib.nullcontext() if cluster else ray_patches.trial_workers_prestarted(),
    ):
        tuner.fit()
    progress.close()


def _trainable(
    params: dict,
    loaded,
    trials: list[sweep_plan.Trial],
    runs_dir: str,
    store,
    sweep_id: str,
    report_every_s: float = 0.0,
) -> None:
    """A Tune function trial: train the trial `params["trial"]` where the sweep's folder is, or in a
    scratch folder mirrored to the store, reporting each epoch to Tune and the outcome to the store."""
    trial = trials[params["trial"]]
    run = trial["run"]
    node = ray.util.get_node_ip_address()
    here = sweep_state.holds_sweep(runs_dir, sweep_id)
    attempt, files = ray.get(store.begin.remote(run, node, want_files=not here))
    refusal = None if here else ray.get(store.claim.remote(run))  # The run's lock, held by the store.
    if refusal is not None:  # Another process writes the run in the sweep's folder: said, not retried.
        ray.get(store.finish.remote(run, attempt, sweep_store.Outcome(status="failed", error=refusal)))
        return
    channel = None if here else _StoreChannel(store, run, attempt, files)
    where = {"address": node, "hostname": socket.gethostname(), "attempt": attempt}

    def report(metrics: dict) -> None:
        tune.report(dict(metrics, node=node))

    try:
        outcome = sweep_store.Outcome(
            status=sweep_trial.train_trial(
                trial, runs_dir, loaded, report, channel, metadata={"node": where}, report_every_s=report_every_s
            )
        )
    except (ray.exceptions.RayError, sweep_trial.AttemptSuperseded):
        raise  # Ray's own failures (a lost machine, the store out of reach) are Tune's to retry.
    except Exception as error:  # The trial's own: bad values, a bug. Recorded, not retried.
        outcome = sweep_store.Outcome(status="failed", error=_run_error(runs_dir, run, here) or _describe(error))
    ray.get(store.finish.remote(run, attempt, outcome))


class _StoreChannel:
    """A trial's way to the driver's RunStore (`digitlab.sweep.trial.Channel`)."""

    def __init__(self, store, run: str, attempt: int, files: dict[str, bytes]):
        self.store, self.run, self.attempt, self.files = store, run, attempt, files

    def fetch(self) -> dict[str, bytes]:
        return self.files

    def send(self, files: list[tuple[str, bytes]]) -> None:
        if not ray.get(self.store.write.remote(self.run, self.attempt, files)):
            raise sweep_trial.AttemptSuperseded(f"{self.run}: attempt {self.attempt} was taken over by a newer one.")

    def clear(self) -> None:
        if not ray.get(self.store.clear.remote(self.run, self.attempt)):
            raise sweep_trial.AttemptSuperseded(f"{self.run}: attempt {self.attempt} was taken over by a newer one.")


def _describe(error: BaseException) -> str:
    """A trial's error in a line: a user's mistake (bad values) by its message, a bug by its kind too."""
    return str(error) if isinstance(error, errors.DigitlabError) else f"{type(error).__name__}: {error}"


def _run_error(runs_dir: str, run: str, here: bool) -> str | None:
    """The error a failed run recorded in its own status (training writes it there), if it is here."""
    if not here:
        return None
    status = runs.Run(os.path.join(runs_dir, run)).status()
    return status.get("message") if status.get("status") == "failed" else None
