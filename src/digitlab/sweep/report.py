"""One self-contained HTML page for a sweep folder: its command, results, figures and trials.

    from digitlab.sweep import report as sweep_report, state as sweep_state
    path = sweep_report.write_sweep_report(sweep_state.open_sweep("sweeps/x"))   # sweeps/x/report.html

`digitlab report OUT` writes it for a sweep folder (and `report.write_report` for a run
folder); it is built from the same pieces as a run's report (`digitlab.report`).
"""

from __future__ import annotations

import datetime
from pathlib import Path

from digitlab import atomic, report
from digitlab.sweep import plan as sweep_plan
from digitlab.sweep import results as sweep_results
from digitlab.sweep import state as sweep_state


def write_sweep_report(sweep: sweep_state.Sweep, out_path=None) -> Path:
    """Writes one HTML page for a sweep folder (default: report.html in it) and returns its path.

    The page holds the command, the results table (best first), the curves, the parallel
    coordinates and the heatmap (from the sweep's results files, which it writes first if they
    are missing), and every trial with its run folder, seed, status, final val accuracy, node
    and retries.
    """
    out_path = Path(out_path) if out_path is not None else sweep.file("report.html")
    report.check_out_path(out_path)
    rows = sweep_results.results(sweep)
    if not all(sweep.file(name).is_file() for name in ("curves.png", "parallel.png")):
        sweep_results.finish(sweep, print_fn=lambda *args: None)
    settings = sweep.state["settings"]
    swept = settings["swept"]
    results_table = sweep_results.results_table(rows, swept)
    trial_rows = [
        (
            trial["run"],
            sweep_plan.label(trial["params"]),
            trial["seed"],
            trial["status"],
            trial.get("epochs") or 0,
            sweep_results.number_text(trial.get("val_accuracy")),
            trial.get("node") or "",
            ", ".join(f"lost on {node}" for node in trial.get("lost", [])),
            trial.get("error") or "",
        )
        for trial in sweep.trials
    ]
    figures = [
        report.image(sweep.file(name).read_bytes(), alt)
        for name, alt in (
            ("curves.png", "Validation accuracy per epoch for each configuration, mean and min-max over seeds"),
            ("parallel.png", "Each trial's swept values and final validation accuracy, as parallel coordinates"),
            ("heatmap.png", "Mean final validation accuracy of each pair of values of the two swept fields"),
        )
        if sweep.file(name).is_file()
    ]
    base = {name: value for name, value in sweep.trials[0]["config"].items() if name not in (*swept, "seed", "seeds")}
    title = f"digitlab sweep {sweep.path.name}"
    sections = [
        f"<h1>{report.escape(title)}</h1>",
        f'<p class="subtitle">{len(sweep.trials)} trials: {len(rows)} configurations x '
        f"{len(settings['seeds'])} seed(s), swept over {report.escape(', '.join(swept))}; started "
        f"{report.escape(sweep.state.get('created', '?'))}; report written "
        f"{report.escape(datetime.datetime.now().strftime('%Y-%m-%d %H:%M'))}.</p>",
        f"<p><code>{report.escape(settings.get('command') or '')}</code></p>",
        "<h2>Results, best first</h2>",
        '<p class="note">One row per configuration; the statistics are over seeds, of the val accuracy '
        "after the last epoch each seed ran.</p>",
        # Wide with many swept fields: the table scrolls sideways rather than spilling past the page.
        '<div style="overflow-x: auto">' + report.table(results_table.titles, results_table.rows) + "</div>",
        "<h2>Figures</h2>",
        *figures,
        "<h2>Settings shared by every trial</h2>",
        report.table(["setting", "value"], [(name, report.value_text(value)) for name, value in base.items()]),
        "<h2>Trials</h2>",
        f'<p class="note">Each is a run folder under <code>{report.escape(str(sweep.runs_dir))}</code>; '
        "<code>digitlab report RUN</code> gives its own page.</p>",
        report.table(
            ["run", "configuration", "seed", "status", "epochs", "final val accuracy", "node", "retried", "error"],
            trial_rows,
        ),
    ]
    atomic.write_text(out_path, report.page(title, sections))
    return out_path
