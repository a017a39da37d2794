"""The class board's rows, as JSON, CSV and one HTML file (serve/classroom.py serves them).

rows = class_board.rows("runs")          # every class run: student, status, settings, history, own digits
class_board.csv_text(rows)               # one line a run (CSV_COLUMNS)
class_board.html("runs", rows)           # `digitlab report`'s style: the table, `compare`'s overlaid curves
"""

from __future__ import annotations

import csv
import io
import secrets
from pathlib import Path

from digitlab import atomic, compare, report, runs

CLASS_FILE = "class.json"


def rows(runs_dir: Path) -> list[dict]:
    """Every class run in `runs_dir`: student, status, settings, history, handwriting accuracy."""
    rows = []
    for path in sorted(Path(runs_dir).glob("class-*")):
        run = runs.Run(path)
        try:
            record = run.read_json(CLASS_FILE)
            config = run.config()
            history = run.history()
        except runs.RunError:
            continue
        accuracy = history.get("val_accuracy") or []
        handwriting = [value for value in record.get("handwriting", []) if value is not None]
        rows.append(
            {
                "run": run.name,
                "student": record.get("student", "?"),
                "status": run.status().get("status", "unknown"),
                "epochs": len(accuracy),
                "epochs_planned": config.epochs,
                "model": config.model,
                "learning_rate": config.learning_rate,
                "loss": config.loss,
                "optimizer": config.optimizer,
                "batch_size": config.batch_size,
                "activation": getattr(config, "activation", None),
                "seed": config.seed,
                "train_limit": config.train_limit,
                "final_val_accuracy": accuracy[-1] if accuracy else None,
                "best_val_accuracy": max(accuracy) if accuracy else None,
                "final_val_loss": (history.get("val_loss") or [None])[-1],
                "handwriting_accuracy": handwriting[-1] if handwriting else None,
                "updated": record.get("updated", record.get("began")),
                "history": history,
                "handwriting": record.get("handwriting", []),
            }
        )
    return rows


CSV_COLUMNS = [
    "student",
    "run",
    "status",
    "epochs",
    "epochs_planned",
    "model",
    "learning_rate",
    "loss",
    "optimizer",
    "batch_size",
    "activation",
    "seed",
    "train_limit",
    "final_val_accuracy",
    "best_val_accuracy",
    "final_val_loss",
    "handwriting_accuracy",
]


def csv_text(rows: list[dict]) -> str:
    """The board's rows as CSV, one line a run, the columns of CSV_COLUMNS."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def html(runs_dir: Path, rows: list[dict]) -> str:
    """The board as one HTML file in `digitlab report`'s style: the table and `compare`'s overlaid curves."""
    folder = report.escape(Path(runs_dir).name)
    sections = [f"<h1>The class board</h1><p>{len(rows)} runs of the class, in {folder}/.</p>"]
    header = ["student", "run", "status", "epochs", "model", "learning rate", "loss", "final val acc", "handwriting"]
    table_rows = [
        [
            row["student"],
            row["run"],
            row["status"],
            f"{row['epochs']}/{row['epochs_planned']}",
            row["model"],
            report.value_text(row["learning_rate"]),
            row["loss"],
            report.value_text(row["final_val_accuracy"]),
            report.value_text(row["handwriting_accuracy"]),
        ]
        for row in sorted(rows, key=lambda row: -(row["final_val_accuracy"] or 0))
    ]
    sections.append("<h2>Runs</h2>" + report.table(header, table_rows))
    with_epochs = [row for row in rows if row["epochs"]]
    if with_epochs:
        path = Path(runs_dir) / f".class-compare-{secrets.token_hex(4)}.png"
        try:
            compare.compare_runs([Path(runs_dir) / row["run"] for row in with_epochs], out_path=path)
            sections.append("<h2>Val accuracy, overlaid</h2>" + report.image(path.read_bytes(), "overlaid curves"))
        finally:
            atomic.remove_quietly(path)
    return report.page("digitlab class board", sections)
