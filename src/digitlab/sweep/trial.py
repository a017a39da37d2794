"""One trial of a sweep: training it into its run folder, and settling a run that a killed sweep left.

    from digitlab.sweep import trial as sweep_trial
    sweep_trial.train_trial(trial, "sweeps/x/runs", loaded, report)   # what a Ray Tune trial runs
    sweep_trial.settle_run(sweep, trial)                               # before a resumed sweep runs it again

A trial is an ordinary run folder, trained by `training.train` or continued by
`training.resume`; whether it is skipped, resumed or started afresh depends only on
what its folder holds, which is what makes a resumed sweep exact. Nothing here needs Ray.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from digitlab import data, runs
from digitlab.config import TrainConfig
from digitlab.sweep import state as sweep_state
from digitlab.sweep.plan import Trial


def settle_run(sweep: sweep_state.Sweep, trial: Trial, wait_s: float = 60.0) -> None:
    """Before a trial is resumed: waits for a process of the previous sweep still writing its run
    (a killed driver's workers end within seconds), else marks the run interrupted."""
    path = sweep.runs_dir / trial["run"]
    if not (path / runs.STATUS_FILE).is_file():
        return
    run = runs.Run(path)
    deadline = time.monotonic() + wait_s
    while run.status().get("status") == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
    status = run.status()
    if status.get("status") == "running":
        # A process on another host, or one that hung: the sweep that started it is gone.
        details = {key: status[key] for key in ("epoch", "checkpoint_epoch") if key in status}
        run.set_status("interrupted", note="its sweep's driver stopped", **details)


def train_trial(trial: Trial, runs_dir: str | Path, loaded: data.Loaded, report) -> None:
    """Trains one trial into its run folder: skips it if complete, resumes it from its checkpoint,
    or starts it afresh. `report(metrics)` gets each epoch's loss, accuracy, val_loss, val_accuracy.

    This is what a Ray Tune trial runs (`raytune`); it needs no Ray itself. When Tune stops
    the trial early, its `report` raises SystemExit in this thread: the run then ends as an
    interrupted run (its checkpoint intact, so `train --resume` could still finish it).
    """
    from digitlab import training

    runs_dir = Path(runs_dir)
    path = runs_dir / trial["run"]
    last_epoch, final = trial["config"]["epochs"], {}

    def on_epoch_end(epoch, histories, wall_time_s):
        history = histories[0]
        metrics = {"epoch": epoch, "wall_time_s": wall_time_s, **{key: history[key][-1] for key in runs.HISTORY_KEYS}}
        if epoch == last_epoch:
            final.update(metrics)  # Reported once the run is complete, so no stop can cut its saving.
            return
        try:
            report(metrics)
        except SystemExit:
            raise KeyboardInterrupt from None  # Training's own way to stop cleanly and resumably.

    def report_final():
        try:
            report(final)
        except SystemExit:
            pass  # A stop after the last epoch: the run is complete anyway.

    try:
        if (path / runs.CONFIG_FILE).is_file():
            run = runs.Run(path)
            if run.status().get("status") == "complete":
                history = run.history()
                report(
                    {
                        "epoch": len(history["val_accuracy"]),
                        "wall_time_s": run.metrics().get("wall_time_s"),
                        **{key: history[key][-1] for key in runs.HISTORY_KEYS},
                    }
                )
                return
            if run.file(runs.CHECKPOINT_FILE).is_file():
                training.resume(path, loaded=loaded, print_fn=_quiet, verbose=0, on_epoch_end=on_epoch_end)
                report_final()
                return
        if path.exists():
            shutil.rmtree(path)  # Killed before its first checkpoint: nothing to keep.
        training.train(
            TrainConfig.from_dict(trial["config"]),
            runs_dir,
            loaded=loaded,
            run_name=trial["run"],
            print_fn=_quiet,
            verbose=0,
            on_epoch_end=on_epoch_end,
        )
        report_final()
    except training.TrainingInterrupted as stop:
        status = stop.run.status()
        stop.run.set_status(
            "interrupted",
            epoch=stop.epoch,
            checkpoint_epoch=status.get("checkpoint_epoch"),
            note="stopped early by the sweep's scheduler",
        )


def _quiet(*args, **kwargs) -> None:
    """The print function of a trial's training: a worker's output goes nowhere."""
