"""Comparing runs: their val-accuracy curves overlaid in one PNG, and a table of their results.

    from digitlab import compare
    rows = compare.compare_runs(["runs/a", "runs/b"], out_path="compare.png")
    print(compare.format_table(rows))

Each run's curve is labelled with its name, model and learning rate; runs with
several seeds show their mean curve and the band between the lowest and the
highest seed. Interrupted runs take part with the epochs they reached, and the
table says so in its status column.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from digitlab import plots, runs, text


def compare_runs(run_paths, out_path: str | Path = "compare.png") -> list[dict]:
    """Writes the overlay of the runs' val-accuracy curves to `out_path`; returns one row per run."""
    run_paths = list(run_paths)
    if not run_paths:
        raise runs.RunError("Name at least one run folder to compare (see `digitlab runs`).")
    rows, series = [], []
    for path in run_paths:
        run = runs.open_run(path)
        config = run.config()
        histories = run.histories()
        curves = [history.get("val_accuracy") or [] for history in histories]
        if not curves[0]:
            raise runs.RunError(f"The run {run.path} has not finished an epoch yet; there is no curve to compare.")
        epochs = min(len(curve) for curve in curves)
        values = np.array([curve[:epochs] for curve in curves], dtype=float)
        mean = values.mean(axis=0)
        metrics = _metrics_or_empty(run)
        row = {
            "run": run.name,
            "path": str(run.path),
            "status": run.status().get("status", "unknown"),
            "model": config.model,
            "optimizer": config.optimizer,
            "learning_rate": config.learning_rate,
            "loss": config.loss,
            "batch_size": config.batch_size,
            "validation": config.validation,
            "seeds": len(histories),
            "epochs": epochs,
            "epochs_planned": config.epochs,
            "best_val_accuracy": float(mean.max()),
            "best_epoch": int(mean.argmax()) + 1,
            "final_val_accuracy": float(mean[-1]),
            "test_accuracy": metrics.get("test_accuracy"),
            "wall_time_s": metrics.get("wall_time_s"),
        }
        rows.append(row)
        series.append(
            {"label": f"{run.name} ({config.model}, lr {config.learning_rate:g})", "val_accuracy": values.tolist()}
        )
    out_path = Path(out_path)
    if not out_path.parent.is_dir():
        raise runs.RunError(f"Cannot write {out_path}: the folder {out_path.parent} does not exist.")
    plots.save_figure(plots.compare_curves(series), out_path)
    return rows


def _metrics_or_empty(run: runs.Run) -> dict:
    """The run's metrics.json, or an empty dict for a run that never finished."""
    try:
        metrics = run.metrics()
    except runs.RunError:
        return {}
    return metrics if isinstance(metrics, dict) else {}


def format_table(rows: list[dict]) -> str:
    """The comparison as an aligned plain-text table, best final val accuracy marked with '*'."""
    header = (
        "run",
        "status",
        "model",
        "optimizer",
        "lr",
        "validation",
        "epochs",
        "best val (epoch)",
        "final val",
        "test",
        "time s",
    )
    best = max(range(len(rows)), key=lambda index: rows[index]["final_val_accuracy"]) if rows else None
    return text.aligned_table(
        header,
        (
            (
                row["run"] + (" *" if index == best and len(rows) > 1 else ""),
                row["status"],
                row["model"],
                row["optimizer"],
                text.value_text(row["learning_rate"], "g"),
                row["validation"],
                f"{row['epochs']}/{row['epochs_planned']}",
                f"{row['best_val_accuracy']:.4f} ({row['best_epoch']})",
                text.value_text(row["final_val_accuracy"], ".4f"),
                text.value_text(row["test_accuracy"], ".4f", missing="-"),
                text.value_text(row["wall_time_s"], ".1f", missing="-"),
            )
            for index, row in enumerate(rows)
        ),
    )
