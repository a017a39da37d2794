"""Figures of a sweep (see `digitlab.sweep.results`): each configuration's curves, and a heatmap of two fields.

    from digitlab import plots
    from digitlab.plots import sweep as plots_sweep
    plots.save_figure(plots_sweep.sweep_curves(series), "sweeps/x/curves.png")
    plots.save_figure(plots_sweep.sweep_heatmap(rows, ["activation", "learning_rate"], grid), "sweeps/x/heatmap.png")

Like every figure of `digitlab.plots`, each is a Matplotlib `Figure` built without pyplot. Swept
values are written as the sweep's tables write them (`digitlab.sweep.plan.value_text`).
"""

from __future__ import annotations

import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure

from digitlab.sweep import plan as sweep_plan


def sweep_curves(series: list[dict], title: str = "Validation accuracy per epoch, mean and min-max over seeds"):
    """A sweep's configurations, one small panel each (best first), with every other configuration's
    mean curve in light grey behind it, so that 8, 12 or 24 configurations stay readable.

    Each item of `series` has `label` and `val_accuracy` (one list per seed, possibly of different
    lengths when some seeds were stopped early: the mean and band cover the epochs all seeds reached).
    """
    count = len(series)
    columns = 1 if count == 1 else 2 if count <= 4 else 3 if count <= 9 else 4
    rows = -(-count // columns)
    figure = Figure(figsize=(3.6 * columns + 0.6, 2.6 * rows + 0.9))
    axes = np.atleast_1d(figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False)).reshape(-1)
    means = []
    for item in series:
        curves = [curve for curve in item["val_accuracy"] if curve]
        common = min(len(curve) for curve in curves)
        values = np.array([curve[:common] for curve in curves], dtype=float)
        means.append(values)
    for index, axis in enumerate(axes):
        if index >= count:
            axis.axis("off")
            continue
        for other, values in enumerate(means):
            if other != index:
                axis.plot(np.arange(1, values.shape[1] + 1), values.mean(axis=0), color="#cccccc", linewidth=0.8)
        values = means[index]
        epochs = np.arange(1, values.shape[1] + 1)
        colour = f"C{index % 10}"
        axis.fill_between(epochs, values.min(axis=0), values.max(axis=0), color=colour, alpha=0.3, linewidth=0)
        axis.plot(
            epochs,
            values.mean(axis=0),
            color=colour,
            linewidth=1.8,
            marker="o" if values.shape[1] <= 25 else None,
            markersize=2.5,
        )
        seeds = values.shape[0]
        axis.set_title(
            f"#{index + 1}  {_wrap(series[index]['label'], 44)}\n"
            f"final {values.mean(axis=0)[-1]:.4f} (mean of {seeds} seed{'s' * (seeds > 1)})",
            fontsize=8,
        )
        axis.grid(alpha=0.3)
        axis.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        if index % columns == 0:
            axis.set_ylabel("val accuracy")
        if index >= count - columns:
            axis.set_xlabel("epoch")
            axis.xaxis.set_tick_params(labelbottom=True)
    figure.suptitle(f"{title}\n(grey: the other configurations' means)", fontsize=11)
    figure.tight_layout()
    return figure


def sweep_heatmap(rows, fields: list[str], grid: dict[str, list], title: str = ""):
    """The mean final val accuracy of each pair of values of two swept fields, written in each cell.

    Each row (a `digitlab.sweep.results.ResultRow`) has its swept values in `params` and its mean
    in `val_accuracy_mean`.
    """
    (row_field, column_field) = fields
    row_values, column_values = grid[row_field], grid[column_field]
    matrix = np.full((len(row_values), len(column_values)), np.nan)
    for row in rows:
        params = row["params"]
        i, j = row_values.index(params[row_field]), column_values.index(params[column_field])
        matrix[i, j] = row["val_accuracy_mean"]
    figure = Figure(figsize=(1.6 * len(column_values) + 3.2, 0.75 * len(row_values) + 2.2))
    axis = figure.subplots()
    shown = axis.imshow(matrix, cmap="viridis", aspect="auto")
    finite = matrix[np.isfinite(matrix)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.5
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            value = matrix[i, j]
            text = "failed" if np.isnan(value) else f"{value:.4f}"
            axis.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=9,
                color="black" if np.isfinite(value) and value > middle else "white",
            )
    axis.set_xticks(range(len(column_values)), [sweep_plan.value_text(value) for value in column_values])
    axis.set_yticks(range(len(row_values)), [sweep_plan.value_text(value) for value in row_values])
    axis.set_xlabel(column_field)
    axis.set_ylabel(row_field)
    axis.set_title(title or "Mean final validation accuracy over seeds")
    figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.04, label="val accuracy")
    figure.tight_layout()
    return figure


def _wrap(text: str, width: int) -> str:
    """Breaks a label at its ", " separators into lines of at most about `width` characters."""
    lines, line = [], ""
    for part in text.split(", "):
        if line and len(line) + len(part) + 2 > width:
            lines.append(line + ",")
            line = part
        else:
            line = f"{line}, {part}" if line else part
    return "\n".join(lines + [line])
