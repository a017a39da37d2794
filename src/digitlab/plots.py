"""Figures: the book's views of the digits, and the curves of a training run.

Every function returns a Matplotlib `Figure` built without pyplot (so it works
headless, in a server thread, and inline in Jupyter); `save_figure` writes one
to a PNG atomically.

    from digitlab import plots
    plots.save_figure(plots.digit_grid(X_train, y_train), "digits.png")   # the 3x4 grid
    plots.save_figure(plots.digit_pixels(X_train[0]), "pixels.png")       # 0-255 in each cell
    plots.save_figure(plots.training_curves(histories), "curves.png")
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib import ticker

from digitlab import atomic


def save_figure(figure, path: str | Path, dpi: int = 110) -> Path:
    """Writes the figure to a PNG through a temporary file."""
    atomic.write_bytes(Path(path), figure_png(figure, dpi))
    return Path(path)


def figure_png(figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes (for embedding in reports)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def digit_grid(images: np.ndarray, labels: np.ndarray, rows: int = 3, columns: int = 4):
    """The book's first figure: the first rows x columns digits in the Greys colour map."""
    figure = Figure(figsize=(columns * 1.6, rows * 1.8))
    axes = figure.subplots(rows, columns)
    for index, axis in enumerate(axes.flat):
        axis.imshow(images[index], cmap="Greys")
        axis.set_title(f"label {labels[index]}", fontsize=10)
        axis.axis("off")
    figure.suptitle(f"The first {rows * columns} training digits", fontsize=12)
    figure.tight_layout()
    return figure


def digit_pixels(image: np.ndarray, label: int | None = None):
    """One digit drawn pixel by pixel, with each pixel's 0-255 darkness written in its cell."""
    figure = Figure(figsize=(9.5, 8.5))
    axis = figure.subplots()
    shown = axis.imshow(image, cmap="Greys", vmin=0, vmax=255)
    for row in range(image.shape[0]):
        for column in range(image.shape[1]):
            value = int(image[row, column])
            if value:
                axis.text(column, row, str(value), ha="center", va="center", fontsize=5.5,
                          color="white" if value > 127 else "black")
    axis.set_xticks(range(0, 28, 4))
    axis.set_yticks(range(0, 28, 4))
    axis.set_xticks(np.arange(-0.5, 28, 1), minor=True)
    axis.set_yticks(np.arange(-0.5, 28, 1), minor=True)
    axis.grid(which="minor", color="#dddddd", linewidth=0.3)
    axis.tick_params(which="minor", length=0)
    title = "One digit, pixel by pixel (darkness 0-255)"
    axis.set_title(title if label is None else f"{title}: a {label}")
    figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.04, label="darkness")
    return figure


def single_digit(image: np.ndarray, label: int, title: str = "X_valid[0]"):
    """One digit large, with its label: the book shows X_valid[0], a seven."""
    figure = Figure(figsize=(3.2, 3.5))
    axis = figure.subplots()
    axis.imshow(image, cmap="Greys")
    axis.set_title(f"{title}: label {label}")
    axis.axis("off")
    return figure


def class_counts(train_counts: np.ndarray, valid_counts: np.ndarray | None = None):
    """The number of images of each digit, training (and validation) side by side."""
    figure = Figure(figsize=(7, 3.6))
    axis = figure.subplots()
    digits = np.arange(10)
    width = 0.4 if valid_counts is not None else 0.7
    bars = axis.bar(digits - (width / 2 if valid_counts is not None else 0), train_counts, width,
                    label="training", color="#4c72b0")
    axis.bar_label(bars, fontsize=7, padding=2)
    if valid_counts is not None:
        bars = axis.bar(digits + width / 2, valid_counts, width, label="validation", color="#dd8452")
        axis.bar_label(bars, fontsize=7, padding=2)
    axis.set_xticks(digits)
    axis.set_xlabel("digit")
    axis.set_ylabel("images")
    axis.set_title("Images per digit")
    axis.legend(loc="upper right", fontsize=8)
    axis.margins(y=0.12)
    return figure


def training_curves(histories: list[dict], title: str = ""):
    """Accuracy and loss per epoch; several seeds show their mean and min-max band."""
    figure = Figure(figsize=(11, 4))
    (accuracy_axis, loss_axis) = figure.subplots(1, 2)
    for axis, metric in ((accuracy_axis, "accuracy"), (loss_axis, "loss")):
        for key, colour, name in ((metric, "#4c72b0", "training"), (f"val_{metric}", "#dd8452", "validation")):
            values = np.array([history[key] for history in histories], dtype=float)
            epochs = np.arange(1, values.shape[1] + 1)
            if len(histories) == 1:
                axis.plot(epochs, values[0], color=colour, label=name)
            else:
                axis.plot(epochs, values.mean(axis=0), color=colour, label=f"{name} (mean of {len(histories)})")
                axis.fill_between(epochs, values.min(axis=0), values.max(axis=0), color=colour, alpha=0.25,
                                  label=f"{name} min-max")
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    accuracy_axis.set_title("Accuracy")
    loss_axis.set_title("Loss")
    final = histories[0]["val_accuracy"][-1] if len(histories) == 1 else np.mean(
        [history["val_accuracy"][-1] for history in histories])
    label = "final val accuracy" if len(histories) == 1 else f"mean final val accuracy of {len(histories)} seeds"
    figure.suptitle(f"{title} — {label} {final:.4f}".strip(" —"))
    figure.tight_layout()
    return figure


def confusion_matrix(matrix: np.ndarray, title: str = "Confusion matrix"):
    """Counts of (true digit, predicted digit) with the number written in every cell.

    The colour scale is a power law (gamma 0.35) so that the few dozen mistakes
    off the diagonal stay visible beside the thousand-odd hits on it.
    """
    from matplotlib import colors

    matrix = np.asarray(matrix)
    figure = Figure(figsize=(7.2, 6.2))
    axis = figure.subplots()
    scale = colors.PowerNorm(gamma=0.35, vmin=0, vmax=max(int(matrix.max()), 1))
    shown = axis.imshow(matrix, cmap="Blues", norm=scale)
    for true in range(matrix.shape[0]):
        for predicted in range(matrix.shape[1]):
            count = int(matrix[true, predicted])
            dark = scale(count) > 0.55
            axis.text(predicted, true, str(count), ha="center", va="center", fontsize=8,
                      color="white" if dark else ("#999999" if count == 0 else "black"),
                      fontweight="bold" if true == predicted else "normal")
    digits = np.arange(matrix.shape[0])
    axis.set_xticks(digits)
    axis.set_yticks(digits)
    axis.set_xlabel("predicted digit")
    axis.set_ylabel("true digit")
    axis.set_title(title)
    figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.04, label="images (power scale)")
    figure.tight_layout()
    return figure


def mistakes_gallery(images: np.ndarray, true_labels, predicted_labels, probabilities,
                     title: str = "The most confidently wrong digits", columns: int = 6):
    """Misclassified digits, each titled with its true label, the prediction and its probability."""
    count = len(images)
    rows = max(1, -(-count // columns))
    figure = Figure(figsize=(columns * 1.65, rows * 1.95 + 0.5))
    axes = np.atleast_1d(figure.subplots(rows, columns)).reshape(-1)
    for index, axis in enumerate(axes):
        axis.axis("off")
        if index >= count:
            continue
        axis.imshow(images[index], cmap="Greys")
        axis.set_title(
            f"true {int(true_labels[index])}, predicted {int(predicted_labels[index])}\n"
            f"p = {float(probabilities[index]):.3f}",
            fontsize=8.5,
        )
    if count == 0:
        axes[0].text(0.5, 0.5, "No mistakes", ha="center", va="center", fontsize=12)
    figure.suptitle(title, fontsize=12)
    figure.tight_layout()
    return figure


def compare_curves(series: list[dict], title: str = "Validation accuracy per epoch"):
    """Several runs' val-accuracy curves in one plot.

    Each item of `series` has `label` and `val_accuracy` (a list per seed); runs
    with several seeds show their mean as the line and the min-max as a band.
    """
    figure = Figure(figsize=(9, 5))
    axis = figure.subplots()
    colours = [f"C{index % 10}" for index in range(len(series))]
    for item, colour in zip(series, colours):
        values = np.array(item["val_accuracy"], dtype=float)
        values = values.reshape(1, -1) if values.ndim == 1 else values
        epochs = np.arange(1, values.shape[1] + 1)
        axis.plot(epochs, values.mean(axis=0), color=colour, label=item["label"],
                  marker="o" if values.shape[1] <= 25 else None, markersize=3)
        if values.shape[0] > 1:
            axis.fill_between(epochs, values.min(axis=0), values.max(axis=0), color=colour, alpha=0.2)
    axis.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    axis.set_xlabel("epoch")
    axis.set_ylabel("validation accuracy")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    return figure


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
        axis.plot(epochs, values.mean(axis=0), color=colour, linewidth=1.8,
                  marker="o" if values.shape[1] <= 25 else None, markersize=2.5)
        seeds = values.shape[0]
        axis.set_title(f"#{index + 1}  {_wrap(series[index]['label'], 44)}\n"
                       f"final {values.mean(axis=0)[-1]:.4f} (mean of {seeds} seed{'s' * (seeds > 1)})",
                       fontsize=8)
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


def sweep_heatmap(rows: list[dict], fields: list[str], grid: dict[str, list], title: str = ""):
    """The mean final val accuracy of each pair of values of two swept fields, written in each cell."""
    (row_field, column_field) = fields
    row_values, column_values = grid[row_field], grid[column_field]
    matrix = np.full((len(row_values), len(column_values)), np.nan)
    for row in rows:
        i, j = row_values.index(row[row_field]), column_values.index(row[column_field])
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
            axis.text(j, i, text, ha="center", va="center", fontsize=9,
                      color="black" if np.isfinite(value) and value > middle else "white")
    axis.set_xticks(range(len(column_values)), [_value_text(value) for value in column_values])
    axis.set_yticks(range(len(row_values)), [_value_text(value) for value in row_values])
    axis.set_xlabel(column_field)
    axis.set_ylabel(row_field)
    axis.set_title(title or "Mean final validation accuracy over seeds")
    figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.04, label="val accuracy")
    figure.tight_layout()
    return figure


def _value_text(value) -> str:
    if isinstance(value, list):
        return " ".join(_value_text(item) for item in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


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
