"""A sweep's results: one row per configuration from its trials' run folders, best first, and the files.

    from digitlab.sweep import results as sweep_results
    from digitlab.sweep import state as sweep_state
    sweep = sweep_state.open_sweep("sweeps/x")
    rows = sweep_results.results(sweep)       # mean, std, min and max final val accuracy over seeds, ...
    table = sweep_results.results_table(rows, sweep.state["settings"]["swept"])   # the cells every output shows
    sweep_results.finish(sweep)               # results.csv, .json, .md, curves.png, heatmap.png; prints the table

The rows are computed from the run folders themselves (their histories), not from what
Tune reported, so they are the same for a sweep run in one go and one killed and resumed.
A row keeps the swept values in its `params`, apart from its results, so that any field
can be swept (`epochs` too, which is also a result: `epochs_run`). The table (`results_table`)
is written once: results.csv, results.md and the HTML report (`digitlab.sweep.report`) render
the same cells.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from typing import Any, TypedDict

import numpy as np

from digitlab import atomic, runs, text
from digitlab.sweep import plan as sweep_plan
from digitlab.sweep import state as sweep_state
from digitlab.sweep.plan import Trial


class ResultRow(TypedDict):
    """One configuration's results over its seeds (`results`); results.json holds them without `curves`."""

    configuration: int
    params: dict[str, Any]  # The swept values, as in its trials' `params`.
    seeds: int  # Seeds with a history.
    val_accuracy_mean: float  # Of the final val accuracy over seeds (NaN when no seed trained).
    val_accuracy_std: float
    val_accuracy_min: float
    val_accuracy_max: float
    best_val_accuracy_mean: float  # The best epoch of the mean curve...
    best_epoch: int  # ...and which epoch that is.
    epochs_run: str  # "20", or "9-20" when seeds stopped at different epochs.
    wall_time_s: float  # Training time summed over seeds.
    retried: int  # Seeds whose trial Tune started again after its worker or machine was lost.
    status: str
    curves: list[list[float]]  # Each seed's val accuracy per epoch.


# The columns after the swept fields: name (results.csv's header, results.json's key) and title
# (results.md's and the report's header). None of these names is a field a sweep can sweep.
RESULT_COLUMNS = {
    "seeds": "seeds",
    "val_accuracy_mean": "val acc mean",
    "val_accuracy_std": "std",
    "val_accuracy_min": "min",
    "val_accuracy_max": "max",
    "best_val_accuracy_mean": "best mean",
    "best_epoch": "best epoch",
    "epochs_run": "epochs run",
    "wall_time_s": "time s",
    "retried": "retried",
    "status": "status",
}


@dataclasses.dataclass(frozen=True)
class Table:
    """The results table as every output shows it: each column's name (results.csv's header) and
    title (results.md's and the report's), whether it holds numbers, and each row's cells as text."""

    names: list[str]
    titles: list[str]
    numeric: list[bool]
    rows: list[list[str]]


def results(sweep: sweep_state.Sweep) -> list[ResultRow]:
    """One row per configuration, from its trials' run folders: best mean final val accuracy first."""
    groups: dict[int, list[Trial]] = {}
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
        if not epochs:
            epochs_run = "0"
        elif min(epochs) == max(epochs):
            epochs_run = str(epochs[0])
        else:
            epochs_run = f"{min(epochs)}-{max(epochs)}"
        rows.append(
            ResultRow(
                configuration=configuration,
                params=dict(trials[0]["params"]),
                seeds=len(curves),
                val_accuracy_mean=float(np.mean(finals)),
                val_accuracy_std=float(np.std(finals)),
                val_accuracy_min=float(np.min(finals)),
                val_accuracy_max=float(np.max(finals)),
                best_val_accuracy_mean=float(np.max(mean_curve)),
                best_epoch=int(np.argmax(mean_curve)) + 1 if common else 0,
                epochs_run=epochs_run,
                wall_time_s=round(wall, 1),
                retried=sum(bool(trial.get("retries")) for trial in trials),
                status=_group_status(trials),
                curves=curves,
            )
        )
    rows.sort(
        key=lambda row: (
            math.isnan(row["val_accuracy_mean"]),
            -np.nan_to_num(row["val_accuracy_mean"], nan=0.0),
            row["configuration"],
        )
    )
    return rows


def _history(sweep: sweep_state.Sweep, trial: Trial) -> list[float]:
    path = sweep.runs_dir / trial["run"]
    try:
        return runs.Run(path).history().get("val_accuracy") or []
    except runs.RunError:
        return []


def _group_status(trials: list[Trial]) -> str:
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


# The table, and the files that show it.


def results_table(rows: list[ResultRow], swept: list[str]) -> Table:
    """The results table: the swept fields' values, then RESULT_COLUMNS, one row per configuration."""
    return Table(
        names=[*swept, *RESULT_COLUMNS],
        titles=[*swept, *RESULT_COLUMNS.values()],
        numeric=[False] * len(swept) + [name != "status" for name in RESULT_COLUMNS],
        rows=[_cells(row, swept) for row in rows],
    )


def _cells(row: ResultRow, swept: list[str]) -> list[str]:
    values: dict[str, Any] = dict(row)
    cells = [text.value_text(row["params"][name]) for name in swept]
    for name in RESULT_COLUMNS:
        value = values[name]
        if name == "wall_time_s":
            cells.append(number_text(value, digits=1))
        else:
            cells.append(number_text(value) if isinstance(value, float) else str(value))
    return cells


def number_text(value: float | None, digits: int = 4) -> str:
    """A measured number as the tables show it: fixed decimals, "nan" when none was measured
    (a configuration whose every seed failed), "-" when there is none yet."""
    if value is None:
        return "-"
    return "nan" if math.isnan(value) else f"{value:.{digits}f}"


def results_csv(table: Table) -> str:
    """The results table as CSV (results.csv)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(table.names)
    writer.writerows(table.rows)
    return text.getvalue()


def results_markdown(table: Table) -> str:
    """The results table as Markdown (results.md), numeric columns right-aligned."""

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    rule = "|" + "".join("---:|" if numeric else "---|" for numeric in table.numeric)
    return "\n".join([line(table.titles), rule, *(line(cells) for cells in table.rows)])


def results_json(rows: list[ResultRow]) -> list[dict]:
    """The rows as results.json holds them: without their curves, NaN written as null."""
    return [
        {
            name: None if isinstance(value, float) and math.isnan(value) else value
            for name, value in row.items()
            if name != "curves"
        }
        for row in rows
    ]


def finish(sweep: sweep_state.Sweep, print_fn=print, cluster: bool = False) -> list[ResultRow]:
    """Writes results.csv, .json, .md, curves.png, parallel.png and (two swept fields) heatmap.png;
    prints the table and a line of totals (with the trials of each node, on a `cluster`)."""
    # Matplotlib is imported here, not with the module: a sweep's driver needs it only now, beside
    # Ray's shutdown (`sweep.runner`), not on its way to the first trial.
    from digitlab import plots
    from digitlab.plots import sweep as plots_sweep

    rows = results(sweep)
    swept = sweep.state["settings"]["swept"]
    table = results_table(rows, swept)
    atomic.write_text(sweep.file("results.csv"), results_csv(table))
    atomic.write_json(sweep.file("results.json"), results_json(rows))
    atomic.write_text(sweep.file("results.md"), results_markdown(table))
    series = [
        {"label": sweep_plan.label(row["params"]), "val_accuracy": row["curves"]} for row in rows if row["curves"]
    ]
    if series:
        plots.save_figure(plots_sweep.sweep_curves(series), sweep.file("curves.png"))
        plots.save_figure(plots_sweep.sweep_parallel(rows, swept), sweep.file("parallel.png"))
    grid = sweep.state["settings"].get("grid") or {}
    if len(swept) == 2 and len(grid) == 2:
        plots.save_figure(plots_sweep.sweep_heatmap(rows, swept, grid), sweep.file("heatmap.png"))
    print_fn(results_markdown(table))
    print_fn(done_line(sweep, cluster))
    return rows


def done_line(sweep: sweep_state.Sweep, cluster: bool = False) -> str:
    """The sweep's last line: "Done: 4 trials (4 complete, 0 stopped early, 0 failed). Results in OUT",
    with the retried trials and, on a cluster (or where trials ran on several nodes), each node's."""
    trials = sweep.trials
    counts = {status: sum(trial["status"] == status for trial in trials) for status in sweep_state.FINISHED}
    text = f"Done: {len(trials)} trials ({counts['complete']} complete, {counts['stopped']} stopped early, "
    text += f"{counts['failed']} failed"
    retried = sum(bool(trial.get("retries")) for trial in trials)
    if retried:
        text += f"; {retried} retried after a lost worker or machine"
    text += ")"
    if cluster or len({trial.get("node") for trial in trials if trial.get("node")}) > 1:
        text += f", {sweep_state.node_counts(trials)}"
    return f"{text}. Results in {sweep.path}"
