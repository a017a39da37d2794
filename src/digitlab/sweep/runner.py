"""`digitlab sweep`: many runs at once, one per configuration and seed, on Ray Tune.

    from digitlab.sweep import runner as sweep_runner
    from digitlab.sweep import plan as sweep_plan
    grid = sweep_plan.parse_grid(["activation=sigmoid,relu", "learning_rate=0.01,0.1"])
    rows = sweep_runner.run_sweep(TrainConfig(epochs=20), grid=grid, seeds=[0, 1, 2], out_dir="sweeps/x")
    rows = sweep_runner.resume_sweep("sweeps/x")        # after a kill or Ctrl-C: finishes what is left

A sweep is planned in full before anything runs (`digitlab.sweep.plan`): `--grid FIELD=V1,V2`
values (their product), `--sample FIELD=DIST:...` values drawn with a seeded generator, times
the seeds. Each trial (one configuration, one seed) is an ordinary run folder under
`OUT/runs/`, named in advance, trained by `training.train` (or continued by
`training.resume`) inside a Ray Tune trial (`digitlab.sweep.raytune`, `digitlab.sweep.trial`). The
sweep's own record is `OUT/sweep.json` (`digitlab.sweep.state`): the plan, and each trial's run
folder and status, written atomically whenever a trial starts, reports an epoch or ends.

Why our own record, not Ray Tune's experiment restore: everything a trial needs to
continue exactly is already in its run folder (the checkpoint holds the weights,
optimizer state, random state and history), and what trial is which is fixed by the
plan in sweep.json. So a resumed sweep just re-submits the unfinished trials, and each
one, looking at its own folder, either skips (complete), resumes from its checkpoint,
or starts afresh. That is exact by construction, and works the same on an embedded Ray
and on a cluster, whereas Tune's restore replays its own trial state and searcher and
would still have to be reconciled with the run folders. Random samples are drawn by
`sweep.plan`, not by a Tune searcher, for the same reason: the plan is written before any trial runs.

Results (`results.csv`, `.json`, `.md`, `curves.png`, `heatmap.png`) are computed from
the run folders, one row per configuration, best first (`digitlab.sweep.results`).

Start and end, overlapped. MNIST is read and hashed in a thread while Ray and Tune are imported
(both wait on the disk and on C code, and Ray is imported only to be started after the data's
check), and the results are written in a thread while Ray shuts down (which mostly waits for its
processes to end). When each step happened goes into sweep.json's `timeline` (`TIMELINE`), which
scripts/sweep_bench.py turns into its table of where the sweep's time went.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from digitlab import background, data, errors
from digitlab.config import TrainConfig
from digitlab.sweep import plan as sweep_plan
from digitlab.sweep import results as sweep_results
from digitlab.sweep import state as sweep_state
from digitlab.sweep import trial as sweep_trial

# The moments sweep.json's `timeline` records (seconds since the epoch) for the latest start of the
# sweep (or of its resume): Ray asked to start, Ray started, Tune's first trial started (its worker
# ready; `sweep.progress`), the last trial ended, the results written, Ray shut down.
TIMELINE = ("ray_starting", "ray_started", "first_trial_started", "trials_done", "results_written", "ray_stopped")


class SweepInterrupted(Exception):
    """The sweep stopped on Ctrl-C (or SIGTERM); `digitlab sweep --resume OUT` finishes it."""

    def __init__(self, out_dir: Path):
        super().__init__(f"The sweep in {out_dir} was interrupted.")
        self.out_dir = out_dir


def run_sweep(
    base: TrainConfig,
    grid: dict[str, list],
    seeds: list[int],
    out_dir: str | Path,
    sample: dict[str, tuple] | None = None,
    samples: int = 0,
    sample_seed: int = 0,
    data_path=None,
    address: str | None = None,
    early_stop: bool = False,
    cpus_per_trial: float = 1.0,
    yes: bool = False,
    command: str = "",
    print_fn=print,
) -> list[sweep_results.ResultRow]:
    """Plans, checks and runs a sweep, then writes and returns its results (one row per configuration).

    Every check (fields, values, trial count, folder, data, Ray) happens before any trial starts.
    """
    sample = sample or {}
    if not grid and not sample:
        raise errors.SweepError("Nothing to sweep: give at least one --grid FIELD=V1,V2 or --sample FIELD=DIST:...")
    both = sorted(set(grid) & set(sample))
    if both:
        raise errors.SweepError(f"{', '.join(both)} is given both as --grid and --sample; choose one.")
    if sample and samples < 1:
        raise errors.SweepError(f"--samples must be at least 1 with --sample, got {samples}.")
    if samples and not sample:
        raise errors.SweepError("--samples needs at least one --sample FIELD=DIST:...")
    if not seeds:
        raise errors.SweepError("--seeds must be at least 1.")
    if not cpus_per_trial > 0:
        raise errors.SweepError(f"--cpus-per-trial must be above 0, got {cpus_per_trial}.")
    trials = sweep_plan.plan_trials(base, grid, sweep_plan.draw_samples(sample, samples, sample_seed), seeds)
    if len(trials) > sweep_plan.TRIAL_LIMIT and not yes:
        raise errors.SweepError(
            f"This sweep has {len(trials)} trials (over {sweep_plan.TRIAL_LIMIT}); add --yes if you mean it."
        )
    out_dir = Path(out_dir)
    sweep_state.check_new_folder(out_dir)
    loading = background.Background(_read_data, data.load, data_path)
    from digitlab.sweep import raytune  # Imported here: Ray is started only once every other check has passed.

    loaded = loading.result()
    settings = {
        "swept": list(grid) + list(sample),
        "grid": grid,
        "sample": sample,
        "samples": samples,
        "sample_seed": sample_seed,
        "seeds": seeds,
        "early_stop": early_stop,
        "cpus_per_trial": cpus_per_trial,
        "command": command,
    }
    timeline = {"ray_starting": time.time()}
    with raytune.connect(address):
        raytune.check_resources(cpus_per_trial)
        timeline["ray_started"] = time.time()
        sweep = sweep_state.create(out_dir, trials, settings, loaded)
        sweep.state["timeline"] = timeline
        with _saved_on_interrupt(sweep):
            print_fn(
                f"digitlab: sweeping {len(trials)} trials ({len(trials) // len(seeds)} configurations x "
                f"{len(seeds)} seed(s)) in {sweep.path}"
            )
            raytune.run_trials(sweep, loaded, print_fn, cluster=address is not None)
        results = _results_beside_shutdown(sweep, print_fn, cluster=address is not None)
    return _finished(sweep, results)


def resume_sweep(
    out_dir: str | Path, data_path=None, address: str | None = None, print_fn=print
) -> list[sweep_results.ResultRow]:
    """Finishes an interrupted sweep: finished trials are kept, the others resume or start."""
    sweep = sweep_state.open_sweep(out_dir)
    loading = background.Background(_read_data, data.load_recorded, sweep.state.get("data") or {}, data_path)
    from digitlab.sweep import raytune

    loaded = loading.result()
    timeline = {"ray_starting": time.time()}
    # Stopped at any moment from here on (starting Ray included), the sweep can be resumed again.
    with _saved_on_interrupt(sweep), raytune.connect(address):
        raytune.check_resources(sweep.state["settings"]["cpus_per_trial"])
        timeline["ray_started"] = time.time()
        sweep.state["timeline"] = timeline
        left = sweep.unfinished()
        print_fn(
            f"digitlab: resuming the sweep in {sweep.path}: {len(sweep.trials) - len(left)} of "
            f"{len(sweep.trials)} trials finished, {len(left)} to go"
        )
        for trial in left:
            sweep_trial.settle_run(sweep, trial)
        raytune.run_trials(sweep, loaded, print_fn, cluster=address is not None)
        results = _results_beside_shutdown(sweep, print_fn, cluster=address is not None)
    return _finished(sweep, results)


@contextlib.contextmanager
def _saved_on_interrupt(sweep: sweep_state.Sweep):
    """Ctrl-C (or SIGTERM) inside: the trials cut short are marked interrupted, sweep.json saved,
    and SweepInterrupted raised, whose resume command finishes the sweep."""
    try:
        yield
    except KeyboardInterrupt:
        for trial in sweep.trials:
            if trial["status"] == "running":
                trial["status"] = "interrupted"
        sweep.save()
        raise SweepInterrupted(sweep.path) from None


def _read_data(load, *args) -> data.Loaded:
    """MNIST read (`load(*args)`) and hashed, as the sweep records it: in a thread beside Ray's import."""
    loaded = load(*args)
    loaded.sha256  # noqa: B018  (computed now, while Ray is imported; kept by the cached property)
    return loaded


def _results_beside_shutdown(sweep: sweep_state.Sweep, print_fn, cluster: bool) -> background.Background:
    """Once the trials are done: the results written (`sweep_results.finish`) in a thread, started
    while Ray still runs, so that they are written while Ray shuts down; `_finished` waits for them."""
    sweep.state["timeline"]["trials_done"] = time.time()

    def finish() -> tuple[list[sweep_results.ResultRow], float]:
        return sweep_results.finish(sweep, print_fn, cluster=cluster), time.time()

    return background.Background(finish)


def _finished(sweep: sweep_state.Sweep, results: background.Background) -> list[sweep_results.ResultRow]:
    """After Ray's shutdown: waits for the results, records the end of the timeline, returns the rows."""
    stopped = time.time()
    rows, written = results.result()
    sweep.state["timeline"].update(results_written=written, ray_stopped=stopped)
    sweep.save()
    return rows
