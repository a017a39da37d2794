"""Figures of a sweep (see `digitlab.sweep.results`): each configuration's curves, a heatmap of two
fields, and parallel coordinates of every trial.

    from digitlab import plots
    from digitlab.plots import sweep as plots_sweep
    plots.save_figure(plots_sweep.sweep_curves(series), "sweeps/x/curves.png")
    plots.save_figure(plots_sweep.sweep_heatmap(rows, ["activation", "learning_rate"], grid), "sweeps/x/heatmap.png")
    plots.save_figure(plots_sweep.sweep_parallel(rows, ["activation", "learning_rate"]), "sweeps/x/parallel.png")

Like every figure of `digitlab.plots`, each is a Matplotlib `Figure` built without pyplot. Swept
values are written as the sweep's tables write them (`digitlab.text.value_text`).
"""

from __future__ import annotations

from typing import Any

import matplotlib
import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure

from digitlab import text


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
            cell = "failed" if np.isnan(value) else f"{value:.4f}"
            axis.text(
                j,
                i,
                cell,
                ha="center",
                va="center",
                fontsize=9,
                color="black" if np.isfinite(value) and value > middle else "white",
            )
    axis.set_xticks(range(len(column_values)), [text.value_text(value) for value in column_values])
    axis.set_yticks(range(len(row_values)), [text.value_text(value) for value in row_values])
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


def sweep_parallel(rows, fields: list[str], title: str = ""):
    """Parallel coordinates: one line per trial, through its swept values to its final val accuracy.

    Each row (a `digitlab.sweep.results.ResultRow`) is one configuration: its `params`, its seeds'
    `curves` and their `val_accuracy_mean`. A configuration's seeds share a colour (its mean, on the
    heatmap's scale) and run together as one ribbon, beside the other configurations' ribbons, to
    the last axis, where it fans out to each seed's accuracy: the fan is the spread over seeds.
    That axis is spaced by error rate on a log scale (when the errors span a factor of 3 or more),
    so that 0.97 and 0.98 are as far apart as 0.6 and 0.8. A field whose values are all numbers
    is spaced by value (logarithmically when they span a factor of 10 or more, as learning rates
    do); any other field by its values in the order swept.
    """
    rows = [row for row in rows if row["curves"]]
    figure = Figure(figsize=(max(6.0, 2.2 * (len(fields) + 1) + 1.6), 4.8))
    axis = figure.subplots()
    if not rows:
        axis.text(0.5, 0.5, "no trial has a result yet", ha="center", va="center")
        axis.set_axis_off()
        return figure
    scales = [_axis_scale([row["params"][name] for row in rows]) for name in fields]
    final = _accuracy_scale([curve[-1] for row in rows for curve in row["curves"]])
    colours = matplotlib.colormaps["viridis"]
    x = np.arange(len(fields) + 1)
    ordered = sorted(rows, key=lambda row: row["val_accuracy_mean"])  # The best drawn last, on top.
    ribbon = min(0.012, 0.1 / len(ordered))  # Each configuration's place beside the others.
    for rank, row in enumerate(ordered):
        seeds = len(row["curves"])
        for seed, curve in enumerate(row["curves"]):
            offset = (rank - (len(ordered) - 1) / 2) * ribbon + (seed - (seeds - 1) / 2) * ribbon / (seeds + 1)
            y = [scale(row["params"][name]) + offset for scale, name in zip(scales, fields, strict=True)]
            y.append(final(curve[-1]))
            axis.plot(x, y, color=colours(final(row["val_accuracy_mean"])), linewidth=1.1, alpha=0.9)
    label: dict[str, Any] = dict(
        fontsize=8, va="center", bbox=dict(facecolor="white", edgecolor="none", alpha=0.8, pad=1)
    )
    for position, scale in enumerate(scales):
        axis.axvline(position, color="#444444", linewidth=1)
        for value in scale.values:
            axis.text(position - 0.05, scale(value), text.value_text(value), ha="right", **label)
    axis.axvline(len(fields), color="#444444", linewidth=1)
    for tick in final.values:
        axis.text(len(fields) + 0.05, final(tick), f"{tick:.4f}", ha="left", **label)
    axis.set_xticks(x, [*fields, "final val accuracy"])
    axis.set_xlim(-0.7, len(fields) + 0.6)
    axis.set_ylim(-0.08, 1.08)
    axis.set_yticks([])
    for side in ("left", "right", "top"):
        axis.spines[side].set_visible(False)
    count = sum(len(row["curves"]) for row in rows)
    axis.set_title(
        title or f"{count} trials, from their swept values to their final val accuracy (one colour per configuration)",
        fontsize=10,
    )
    bar = figure.colorbar(
        matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(0, 1), cmap=colours),
        ax=axis,
        fraction=0.035,
        pad=0.09,
        label="configuration's mean val accuracy",
    )
    bar.set_ticks([final(tick) for tick in final.values], labels=[f"{tick:.4f}" for tick in final.values])
    figure.tight_layout()
    return figure


class _AxisScale:
    """Where each value of a swept field sits on its axis, from 0 (bottom) to 1 (top)."""

    def __init__(self, values: list, position):
        self.values, self.position = values, position

    def __call__(self, value) -> float:
        return self.position(value)


def _axis_scale(values: list) -> _AxisScale:
    distinct: list = []
    for value in values:
        if value not in distinct:
            distinct.append(value)
    numeric = all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in distinct)
    if numeric and len(distinct) > 1:
        distinct.sort()
        low, high = float(distinct[0]), float(distinct[-1])
        if low > 0 and high / low >= 10:
            return _AxisScale(distinct, lambda value: (np.log(value) - np.log(low)) / (np.log(high) - np.log(low)))
        return _AxisScale(distinct, lambda value: (value - low) / (high - low))
    if len(distinct) == 1:
        return _AxisScale(distinct, lambda value: 0.5)
    return _AxisScale(distinct, lambda value: distinct.index(value) / (len(distinct) - 1))


def _accuracy_scale(accuracies: list[float]) -> _AxisScale:
    """The last axis: by error rate on a log scale where the errors span a factor of 3, else
    linearly; its `values` are five accuracies to label it with, its ends the best and worst."""
    best, worst = max(accuracies), min(accuracies)
    low_error, high_error = max(1 - best, 1e-4), max(1 - worst, 1e-4)
    if high_error / low_error >= 3:
        span = np.log(high_error) - np.log(low_error)
        ticks = [float(1 - error) for error in np.geomspace(low_error, high_error, 5)]
        return _AxisScale(ticks, lambda accuracy: (np.log(high_error) - np.log(max(1 - accuracy, 1e-4))) / span)
    margin = max(best - worst, 0.002) * 0.1
    low, high = worst - margin, best + margin
    ticks = sorted({round(float(tick), 4) for tick in np.linspace(worst, best, 5)})
    return _AxisScale(ticks, lambda accuracy: (accuracy - low) / (high - low))
