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
        compact, format="png", optimize=True)
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


# A look inside the network (see digitlab.inside). Weights share one diverging scale,
# symmetric around 0: red pixels push a neuron up, blue ones pull it down, white ones do nothing.
WEIGHT_COLOURS = "RdBu_r"


def _grid_shape(count: int) -> tuple[int, int]:
    """Rows and columns of a grid for `count` tiles: at least 8 wide (64 -> 8 x 8, 32 -> 4 x 8)."""
    columns = min(count, max(int(np.ceil(np.sqrt(count))), 8))
    return -(-count // columns), columns


def _symmetric_limit(values: np.ndarray) -> float:
    limit = float(np.max(np.abs(values)))
    return limit if limit > 0 else 1.0


def hidden_units(weights: np.ndarray, activations: np.ndarray, probabilities: np.ndarray,
                 image: np.ndarray, label: int, digit_name: str = "X_valid[0]"):
    """What each neuron of the first Dense layer looks for, and how they all answer one digit.

    Left: column k of the layer's 784 x units kernel drawn as a 28x28 image, for every
    unit, on one diverging colour scale symmetric around 0. Right: the digit, the units'
    activations for it (in the same grid order as the weight tiles, each value written in
    its cell) and the network's ten output probabilities.
    """
    weights = np.asarray(weights)
    activations = np.asarray(activations, dtype=float).reshape(-1)
    probabilities = np.asarray(probabilities, dtype=float).reshape(-1)
    if weights.ndim != 2 or weights.shape[0] != 784 or activations.size != weights.shape[1]:
        raise ValueError(
            f"Give a 784 x units kernel and one activation per unit; got {weights.shape} and {activations.size}."
        )
    units = weights.shape[1]
    rows, columns = _grid_shape(units)
    limit = _symmetric_limit(weights)
    figure = Figure(figsize=(14, 7.4))
    outer = figure.add_gridspec(1, 2, width_ratios=[1.15, 1], wspace=0.12)
    tiles = outer[0].subgridspec(rows, columns, wspace=0.06, hspace=0.06)
    shown = None
    for unit in range(units):
        axis = figure.add_subplot(tiles[unit // columns, unit % columns])
        axis.set_label(f"weights {unit}")
        shown = axis.imshow(weights[:, unit].reshape(28, 28), cmap=WEIGHT_COLOURS, vmin=-limit, vmax=limit)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.colorbar(shown, ax=figure.axes[:units], orientation="horizontal", fraction=0.035, pad=0.02,
                    label="weight from each pixel (one scale for all units; red excites, blue inhibits)")

    right = outer[1].subgridspec(2, 2, height_ratios=[1, 0.8], width_ratios=[0.8, 1.2], hspace=0.35, wspace=0.25)
    digit_axis = figure.add_subplot(right[0, 0])
    digit_axis.set_label("digit")
    digit_axis.imshow(image, cmap="Greys")
    digit_axis.set_title(f"{digit_name}: a {int(label)}", fontsize=10)
    digit_axis.axis("off")

    activation_axis = figure.add_subplot(right[0, 1])
    activation_axis.set_label("activations")
    grid = np.full(rows * columns, np.nan)
    grid[:units] = activations
    grid = grid.reshape(rows, columns)
    high = max(float(np.nanmax(grid)), 1e-6)
    activation_axis.imshow(grid, cmap="Greens", vmin=min(0.0, float(np.nanmin(grid))), vmax=high)
    for unit in range(units):
        value = activations[unit]
        activation_axis.text(unit % columns, unit // columns, f"{value:.2f}", ha="center", va="center", fontsize=6,
                             color="white" if value > 0.6 * high else "black")
    activation_axis.set_title(f"The {units} hidden activations\n(placed as the weight tiles)", fontsize=10)
    activation_axis.set_xticks([])
    activation_axis.set_yticks([])

    probability_axis = figure.add_subplot(right[1, :])
    probability_axis.set_label("probabilities")
    predicted = int(np.argmax(probabilities))
    colours = ["#dd8452" if digit == predicted else "#4c72b0" for digit in range(len(probabilities))]
    bars = probability_axis.bar(np.arange(len(probabilities)), probabilities, color=colours)
    probability_axis.bar_label(bars, labels=[f"{p:.2f}" for p in probabilities], fontsize=7, padding=2)
    probability_axis.set_xticks(np.arange(len(probabilities)))
    probability_axis.set_xlabel("digit")
    probability_axis.set_ylabel("probability")
    probability_axis.set_ylim(0, 1.12)
    probability_axis.set_title(f"The output: predicted {predicted} with p = {probabilities[predicted]:.3f}",
                               fontsize=10)
    figure.suptitle(f"Inside the network: what the first layer's {units} neurons look for, "
                    f"and how they answer {digit_name}", fontsize=13)
    return figure


def conv_filters(kernel: np.ndarray):
    """The first convolution's filters (a 3x3 x 1 x filters kernel), each with its nine weights
    written in, on one diverging colour scale symmetric around 0."""
    kernel = np.asarray(kernel)
    if kernel.ndim != 4 or kernel.shape[2] != 1:
        raise ValueError(f"Give a height x width x 1 x filters kernel of a convolution on grey images; got {kernel.shape}.")
    count = kernel.shape[3]
    rows, columns = _grid_shape(count)
    limit = _symmetric_limit(kernel)
    figure = Figure(figsize=(columns * 1.35, rows * 1.45 + 0.9))
    axes = np.atleast_1d(figure.subplots(rows, columns)).reshape(-1)
    shown = None
    for index, axis in enumerate(axes):
        axis.set_xticks([])
        axis.set_yticks([])
        if index >= count:
            axis.axis("off")
            continue
        axis.set_label(f"filter {index}")
        weights = kernel[:, :, 0, index]
        shown = axis.imshow(weights, cmap=WEIGHT_COLOURS, vmin=-limit, vmax=limit)
        for (row, column), value in np.ndenumerate(weights):
            axis.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=5.5,
                      color="white" if abs(value) > 0.6 * limit else "black")
        axis.set_title(f"filter {index}", fontsize=8)
    figure.colorbar(shown, ax=list(axes), orientation="horizontal", fraction=0.04, pad=0.04,
                    label="weight (one scale for all filters; red excites, blue inhibits)")
    figure.suptitle(f"The first convolution's {count} filters ({kernel.shape[0]}x{kernel.shape[1]} pixels each)",
                    fontsize=12)
    return figure


def feature_maps(image: np.ndarray, label: int, maps: np.ndarray, probabilities: np.ndarray,
                 digit_name: str = "X_valid[0]"):
    """One digit and the maps the first convolution makes of it (height x width x filters),
    all on one colour scale from 0 to the largest activation."""
    maps = np.asarray(maps)
    probabilities = np.asarray(probabilities, dtype=float).reshape(-1)
    if maps.ndim != 3:
        raise ValueError(f"Give the feature maps as height x width x filters; got {maps.shape}.")
    count = maps.shape[2]
    rows, columns = _grid_shape(count)
    low, high = min(0.0, float(maps.min())), max(float(maps.max()), 1e-6)
    figure = Figure(figsize=(columns * 1.45 + 2.6, rows * 1.5 + 1.0))
    outer = figure.add_gridspec(1, 2, width_ratios=[2.2, columns * 1.45], wspace=0.08)
    digit_axis = figure.add_subplot(outer[0])
    digit_axis.set_label("digit")
    digit_axis.imshow(image, cmap="Greys")
    predicted = int(np.argmax(probabilities))
    digit_axis.set_title(f"{digit_name}: a {int(label)}\npredicted {predicted}, p = {probabilities[predicted]:.3f}",
                         fontsize=9)
    digit_axis.axis("off")
    tiles = outer[1].subgridspec(rows, columns, wspace=0.08, hspace=0.3)
    shown, axes = None, []
    for index in range(count):
        axis = figure.add_subplot(tiles[index // columns, index % columns])
        axis.set_label(f"map {index}")
        shown = axis.imshow(maps[:, :, index], cmap="viridis", vmin=low, vmax=high)
        axis.set_title(f"{index}", fontsize=7, pad=2)
        axis.set_xticks([])
        axis.set_yticks([])
        axes.append(axis)
    figure.colorbar(shown, ax=axes, orientation="horizontal", fraction=0.05, pad=0.04,
                    label="activation (one scale for all maps)")
    figure.suptitle(f"The first convolution's {count} feature maps of {digit_name} "
                    f"({maps.shape[0]}x{maps.shape[1]} each)", fontsize=12)
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
