"""A sweep's results: one row per configuration from its trials' run folders, best first, and the files.

    from digitlab.sweep import results as sweep_results
    from digitlab.sweep import state as sweep_state
    sweep = sweep_state.open_sweep("sweeps/x")
    rows = sweep_results.results(sweep)       # mean, std, min and max final val accuracy over seeds, ...
    sweep_results.finish(sweep)               # results.csv, .json, .md, curves.png, heatmap.png; prints the table

The rows are computed from the run folders themselves (their histories), not from what
Tune reported, so they are the same for a sweep run in one go and one killed and resumed.
"""

from __future__ import annotations

import csv
import io
import math

import numpy as np

from digitlab import atomic, plots, runs
from digitlab.plots import sweep as plots_sweep
from digitlab.sweep import plan as sweep_plan
from digitlab.sweep import state as sweep_state

RESULT_COLUMNS = (
    "seeds",
    "val_accuracy_mean",
    "val_accuracy_std",
    "val_accuracy_min",
    "val_accuracy_max",
    "best_val_accuracy_mean",
    "best_epoch",
    "epochs",
    "wall_time_s",
    "status",
)


def results(sweep: sweep_state.Sweep) -> list[dict]:
    """One row per configuration, from its trials' run folders: best mean final val accuracy first."""
    groups: dict[int, list[dict]] = {}
    for trial in sweep.trials:
        groups.setdefault(trial["configuration"], []).append(trial)
    rows = []
    for configuration, trials in groups.items():
        curves, epochs, wall = [], [], 0.0
        for trial in trials:
            history = _history(sweep, trial)
            if history:
                curves.append(history)
                epochs.append(len(history))
            wall += trial.get("wall_time_s") or 0.0
        finals = np.array([curve[-1] for curve in curves]) if curves else np.array([np.nan])
        common = min(epochs) if epochs else 0
        mean_curve = np.mean([curve[:common] for curve in curves], axis=0) if common else np.array([np.nan])
        row = dict(trials[0]["params"])
        row.update(
            configuration=configuration,
            seeds=len(curves),
            val_accuracy_mean=float(np.mean(finals)),
            val_accuracy_std=float(np.std(finals)),
            val_accuracy_min=float(np.min(finals)),
            val_accuracy_max=float(np.max(finals)),
            best_val_accuracy_mean=float(np.max(mean_curve)),
            best_epoch=int(np.argmax(mean_curve)) + 1 if common else 0,
            epochs=(
                f"{min(epochs)}"
                if epochs and min(epochs) == max(epochs)
                else f"{min(epochs)}-{max(epochs)}"
                if epochs
                else "0"
            ),
            wall_time_s=round(wall, 1),
            status=_group_status(trials),
            curves=[curve for curve in curves],
        )
        rows.append(row)
    rows.sort(
        key=lambda row: (
            math.isnan(row["val_accuracy_mean"]),
            -np.nan_to_num(row["val_accuracy_mean"], nan=0.0),
            row["configuration"],
        )
    )
    return rows


def _history(sweep: sweep_state.Sweep, trial: dict) -> list[float]:
    path = sweep.runs_dir / trial["run"]
    try:
        return runs.Run(path).history().get("val_accuracy") or []
    except runs.RunError:
        return []


def _group_status(trials: list[dict]) -> str:
    statuses = [trial["status"] for trial in trials]
    failed = [trial for trial in trials if trial["status"] == "failed"]
    if failed:
        return f"failed ({len(failed)} of {len(trials)} seeds): {failed[0].get('error') or 'unknown error'}"
    unfinished = sum(status not in sweep_state.FINISHED for status in statuses)
    if unfinished:
        return f"incomplete ({unfinished} of {len(trials)} seeds unfinished)"
    stopped = statuses.count("stopped")
    if stopped:
        return f"stopped early ({stopped} of {len(trials)} seeds)"
    return "complete"


def finish(sweep: sweep_state.Sweep, print_fn=print) -> list[dict]:
    """Writes results.csv, .json, .md, curves.png and (two swept fields) heatmap.png; prints the table."""
    rows = results(sweep)
    swept = sweep.state["settings"]["swept"]
    atomic.write_text(sweep.file("results.csv"), results_csv(rows, swept))
    atomic.write_json(
        sweep.file("results.json"), [{key: value for key, value in row.items() if key != "curves"} for row in rows]
    )
    atomic.write_text(sweep.file("results.md"), results_markdown(rows, swept))
    series = [
        {"label": sweep_plan.label({name: row[name] for name in swept}), "val_accuracy": row["curves"]}
        for row in rows
        if row["curves"]
    ]
    if series:
        plots.save_figure(plots_sweep.sweep_curves(series), sweep.file("curves.png"))
    grid = sweep.state["settings"].get("grid") or {}
    if len(swept) == 2 and len(grid) == 2:
        plots.save_figure(plots_sweep.sweep_heatmap(rows, swept, grid), sweep.file("heatmap.png"))
    print_fn(results_markdown(rows, swept))
    counts = {status: sum(trial["status"] == status for trial in sweep.trials) for status in sweep_state.FINISHED}
    print_fn(
        f"Done: {len(sweep.trials)} trials ({counts['complete']} complete, {counts['stopped']} stopped early, "
        f"{counts['failed']} failed). Results in {sweep.path}"
    )
    return rows


def results_csv(rows: list[dict], swept: list[str]) -> str:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow([*swept, *RESULT_COLUMNS])
    for row in rows:
        writer.writerow(
            [sweep_plan.value_text(row[name]) for name in swept] + [_cell(row[column]) for column in RESULT_COLUMNS]
        )
    return text.getvalue()


def results_markdown(rows: list[dict], swept: list[str]) -> str:
    header = [*swept, "seeds", "val acc mean", "std", "min", "max", "best mean (epoch)", "epochs", "time s", "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(swept) + "---:|" * 8 + "---|"]
    for row in rows:
        cells = [sweep_plan.value_text(row[name]) for name in swept] + [
            str(row["seeds"]),
            _cell(row["val_accuracy_mean"]),
            _cell(row["val_accuracy_std"]),
            _cell(row["val_accuracy_min"]),
            _cell(row["val_accuracy_max"]),
            f"{_cell(row['best_val_accuracy_mean'])} ({row['best_epoch']})",
            row["epochs"],
            f"{row['wall_time_s']:.1f}",
            row["status"],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)
