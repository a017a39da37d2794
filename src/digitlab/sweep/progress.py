"""The sweep's progress on Ray Tune: a Tune callback that keeps sweep.json current and prints one line.

    from digitlab.sweep import progress as sweep_progress
    progress = sweep_progress.Progress(sweep, store, print, cluster=False)   # in raytune.run_trials
    tune.RunConfig(callbacks=[progress, ...]); tuner.fit(); progress.close()

The line says trials done, running and failed, the best so far, and on a cluster the trials of
each node. A trial counts as complete only when it said so to the driver's RunStore
(`digitlab.sweep.store`) and its run in OUT is complete.
"""

from __future__ import annotations

from digitlab.sweep import ray_patches  # noqa: F401  (first: it sets what Ray must see when it is imported)

# isort: split
import sys
import time

import ray
from ray import cloudpickle, tune

from digitlab import runs
from digitlab.sweep import plan as sweep_plan
from digitlab.sweep import state as sweep_state


class Progress(tune.Callback):
    """A Tune callback: records each trial's start, epochs, retries and end in sweep.json, and prints one line.

    On a terminal the line is rewritten in place at every event; otherwise a new line is
    printed only when a trial ends or is retried (so a log shows one line per such event).
    A trial counts as complete only when it said so to the store and its run in OUT is
    complete: a trial whose files did not reach OUT is failed, never a result.
    """

    def __init__(self, sweep, store, print_fn=print, cluster: bool = False):
        self.sweep, self.store, self.print_fn, self.cluster = sweep, store, print_fn, cluster
        self.tty = print_fn is print and sys.stdout.isatty()
        self.last_line: str | None = None

    def _index(self, trial) -> int:
        return trial.config["trial"]

    def on_trial_start(self, iteration, trials, trial, **info):
        """Tune: a trial started; marked running (the first one's time goes into the sweep's timeline)."""
        self.sweep.state.setdefault("timeline", {}).setdefault("first_trial_started", time.time())
        self.sweep.update(self._index(trial), status="running")
        self.show()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        """Tune: a trial reported an epoch; its epochs, val accuracy, time and node recorded."""
        self.sweep.update(
            self._index(trial),
            status="running",
            epochs=result.get("epoch"),
            val_accuracy=result.get("val_accuracy"),
            wall_time_s=result.get("wall_time_s"),
            node=result.get("node"),
        )
        self.show()

    def on_trial_recover(self, iteration, trials, trial, **info):
        """Tune: a trial lost its worker or machine and is retried; counted, and said."""
        index = self._index(trial)
        record = self.sweep.trials[index]
        lost = record.get("node") or "its node"
        self.sweep.update(
            index, status="pending", retries=record.get("retries", 0) + 1, lost=[*record.get("lost", []), lost]
        )
        self.show(ended=True, note=f"{record['run']} lost its worker on {lost}; retrying it from its last checkpoint")

    def on_trial_complete(self, iteration, trials, trial, **info):
        """Tune: a trial ended; complete, stopped or failed by what the store and its run in OUT say."""
        index = self._index(trial)
        record = self.sweep.trials[index]
        outcome = ray.get(self.store.outcome.remote(record["run"])) or {}
        run_status = runs.Run(self.sweep.runs_dir / record["run"]).status().get("status")
        node = outcome.get("node") or record.get("node")
        if outcome.get("status") == "failed":
            self.sweep.update(index, status="failed", error=outcome.get("error") or "unknown error", node=node)
        elif run_status == "complete" and outcome.get("status") in (None, "complete"):
            # Its run reached OUT complete: a result, even where Tune ended its worker (an early stop
            # decided while the last epoch trained) before the trial could say so.
            self.sweep.update(index, status="complete", node=node)
        elif outcome.get("status") == "stopped" or (not outcome and self.sweep.state["settings"]["early_stop"]):
            # Stopped by the ASHA scheduler (Tune may end its worker before it says so).
            self.sweep.update(index, status="stopped", node=node)
        else:
            said = outcome.get("status") or "nothing"
            self.sweep.update(
                index,
                status="failed",
                node=node,
                error=f"its trial ended (it said: {said}) but its run in OUT is {run_status}; its files are lost",
            )
        self.show(ended=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        """Tune: a trial failed; recorded with its error in a line."""
        index = self._index(trial)
        self.sweep.update(index, status="failed", error=_error_message(self.sweep, index, trial))
        self.show(ended=True)

    def show(self, ended: bool = False, note: str = "") -> None:
        """Prints the progress line: in place on a terminal, else only when a trial ends (`ended`)."""
        line = self.line()
        if self.tty:
            if note:
                sys.stdout.write("\r\033[K" + note + "\n")
            sys.stdout.write("\r\033[K" + line)
            sys.stdout.flush()
        elif ended:
            if note:
                self.print_fn(note)
            self.print_fn(line)
        self.last_line = line

    def line(self) -> str:
        """The progress line: trials done, running, failed and retried, the best so far."""
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
        retried = sum(bool(trial.get("retries")) for trial in trials)
        if retried:
            text += f", {retried} retried"
        if self.cluster:
            text += "; " + sweep_state.node_counts(trials)
        scored = [trial for trial in trials if trial.get("val_accuracy") is not None]
        if scored:
            best = max(scored, key=lambda trial: trial["val_accuracy"])
            text += (
                f"; best so far val_accuracy {best['val_accuracy']:.4f} "
                f"({sweep_plan.label(best['params'])}, seed {best['seed']}, epoch {best.get('epochs')})"
            )
        return text

    def close(self) -> None:
        """Ends the line rewritten in place, on a terminal."""
        if self.tty and self.last_line is not None:
            sys.stdout.write("\n")
            sys.stdout.flush()


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
