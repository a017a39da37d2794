"""Figures: the book's views of the digits, and the curves, confusion matrix and mistakes of a run.

Every function returns a Matplotlib `Figure` built without pyplot (so it works
headless, in a server thread, and inline in Jupyter); `save_figure` writes one
to a PNG atomically, `figure_png` gives its bytes. The look inside the network
draws with `plots.inside`, a sweep with `plots.sweep`.

    from digitlab import plots
    plots.save_figure(plots.digit_grid(X_train, y_train), "digits.png")   # the 3x4 grid
    plots.save_figure(plots.digit_pixels(X_train[0]), "pixels.png")       # 0-255 in each cell
    plots.save_figure(plots.training_curves(histories), "curves.png")
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure

from digitlab import atomic


def save_figure(figure, path: str | Path, dpi: int = 110, palette: bool = False) -> Path:
    """Writes the figure to a PNG through a temporary file (`palette`: see `figure_png`)."""
    atomic.write_bytes(Path(path), figure_png(figure, dpi, palette))
    return Path(path)


def figure_png(figure, dpi: int = 110, palette: bool = False) -> bytes:
    """The figure as PNG bytes (for embedding in reports). `palette=True` stores at most 256
    colours, which makes figures of many small images (weights, noise) several times smaller:
    the notebooks save theirs that way."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    if not palette:
        return buffer.getvalue()
    from PIL import Image

    image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    compact = io.BytesIO()
    image.quantize(colors=256, method=Image.Quantize.MAXCOVERAGE, dither=Image.Dither.NONE).save(
        compact, format="png", optimize=True
    )
    return compact.getvalue()


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
                axis.text(
                    column,
                    row,
                    str(value),
                    ha="center",
                    va="center",
                    fontsize=5.5,
                    color="white" if value > 127 else "black",
                )
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
    bars = axis.bar(
        digits - (width / 2 if valid_counts is not None else 0), train_counts, width, label="training", color="#4c72b0"
    )
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
                axis.fill_between(
                    epochs, values.min(axis=0), values.max(axis=0), color=colour, alpha=0.25, label=f"{name} min-max"
                )
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    accuracy_axis.set_title("Accuracy")
    loss_axis.set_title("Loss")
    final = (
        histories[0]["val_accuracy"][-1]
        if len(histories) == 1
        else np.mean([history["val_accuracy"][-1] for history in histories])
    )
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
            axis.text(
                predicted,
                true,
                str(count),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if dark else ("#999999" if count == 0 else "black"),
                fontweight="bold" if true == predicted else "normal",
            )
    digits = np.arange(matrix.shape[0])
    axis.set_xticks(digits)
    axis.set_yticks(digits)
    axis.set_xlabel("predicted digit")
    axis.set_ylabel("true digit")
    axis.set_title(title)
    figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.04, label="images (power scale)")
    figure.tight_layout()
    return figure


def mistakes_gallery(
    images: np.ndarray,
    true_labels,
    predicted_labels,
    probabilities,
    title: str = "The most confidently wrong digits",
    columns: int = 6,
):
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
    for item, colour in zip(series, colours, strict=True):
        values = np.array(item["val_accuracy"], dtype=float)
        values = values.reshape(1, -1) if values.ndim == 1 else values
        epochs = np.arange(1, values.shape[1] + 1)
        axis.plot(
            epochs,
            values.mean(axis=0),
            color=colour,
            label=item["label"],
            marker="o" if values.shape[1] <= 25 else None,
            markersize=3,
        )
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
