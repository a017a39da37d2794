"""Figures of a look inside the network (see `digitlab.inside`): first-layer weights, filters, feature maps.

    from digitlab import plots
    from digitlab.plots import inside as plots_inside
    figure = plots_inside.hidden_units(kernel, activations, probabilities, X_valid[0], y_valid[0])
    plots.save_figure(figure, "hidden_units.png", palette=True)
    plots_inside.conv_filters(kernel)                   # LeNet's first convolution, 3x3 weights written in
    plots_inside.feature_maps(X_valid[0], y_valid[0], maps, probabilities)

Like every figure of `digitlab.plots`, each is a Matplotlib `Figure` built without pyplot.
Weights share one diverging colour scale symmetric around 0 (WEIGHT_COLOURS). `weight_tiles_png`
draws the first layer's tiles alone as a small 256-colour PNG (the server's tiles of each epoch), and
`weight_palette` is its colours (the page draws its own tiles with them).
"""

from __future__ import annotations

import functools
import io

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from PIL import Image

from digitlab import imaging

# Weights share one diverging scale, symmetric around 0: red pixels push a neuron up,
# blue ones pull it down, white ones do nothing.
WEIGHT_COLOURS = "RdBu_r"
# White pixels between the tiles of weight_tiles_png.
TILE_GAP = 2


def grid_shape(count: int) -> tuple[int, int]:
    """Rows and columns of a grid for `count` tiles: at least 8 wide (64 -> 8 x 8, 32 -> 4 x 8)."""
    columns = min(count, max(int(np.ceil(np.sqrt(count))), 8))
    return -(-count // columns), columns


def symmetric_limit(values: np.ndarray) -> float:
    """The largest absolute value, for a colour scale centred on zero (1.0 where all are zero)."""
    limit = float(np.max(np.abs(values)))
    return limit if limit > 0 else 1.0


def hidden_units(
    weights: np.ndarray,
    activations: np.ndarray,
    probabilities: np.ndarray,
    image: np.ndarray,
    label: int,
    digit_name: str = "X_valid[0]",
):
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
    rows, columns = grid_shape(units)
    limit = symmetric_limit(weights)
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
    assert shown is not None  # The loop above drew at least one image.
    figure.colorbar(
        shown,
        ax=figure.axes[:units],
        orientation="horizontal",
        fraction=0.035,
        pad=0.02,
        label="weight from each pixel (one scale for all units; red excites, blue inhibits)",
    )

    right = outer[1].subgridspec(2, 2, height_ratios=[1, 0.8], width_ratios=[0.8, 1.2], hspace=0.35, wspace=0.25)
    digit_axis = figure.add_subplot(right[0, 0])
    digit_axis.set_label("digit")
    digit_axis.imshow(image, cmap="Greys")
    digit_axis.set_title(f"{digit_name}: a {int(label)}", fontsize=10)
    digit_axis.axis("off")

    activation_axis = figure.add_subplot(right[0, 1])
    activation_axis.set_label("activations")
    cells = np.full(rows * columns, np.nan)
    cells[:units] = activations
    grid = cells.reshape(rows, columns)
    high = max(float(np.nanmax(grid)), 1e-6)
    activation_axis.imshow(grid, cmap="Greens", vmin=min(0.0, float(np.nanmin(grid))), vmax=high)
    for unit in range(units):
        value = activations[unit]
        activation_axis.text(
            unit % columns,
            unit // columns,
            f"{value:.2f}",
            ha="center",
            va="center",
            fontsize=6,
            color="white" if value > 0.6 * high else "black",
        )
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
    probability_axis.set_title(
        f"The output: predicted {predicted} with p = {probabilities[predicted]:.3f}", fontsize=10
    )
    figure.suptitle(
        f"Inside the network: what the first layer's {units} neurons look for, and how they answer {digit_name}",
        fontsize=13,
    )
    return figure


def conv_filters(kernel: np.ndarray):
    """The first convolution's filters (a 3x3 x 1 x filters kernel), each with its nine weights
    written in, on one diverging colour scale symmetric around 0."""
    kernel = np.asarray(kernel)
    if kernel.ndim != 4 or kernel.shape[2] != 1:
        raise ValueError(
            f"Give a height x width x 1 x filters kernel of a convolution on grey images; got {kernel.shape}."
        )
    count = kernel.shape[3]
    rows, columns = grid_shape(count)
    limit = symmetric_limit(kernel)
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
            axis.text(
                column,
                row,
                f"{value:.2f}",
                ha="center",
                va="center",
                fontsize=5.5,
                color="white" if abs(value) > 0.6 * limit else "black",
            )
        axis.set_title(f"filter {index}", fontsize=8)
    assert shown is not None  # The loop above drew at least one image.
    figure.colorbar(
        shown,
        ax=list(axes),
        orientation="horizontal",
        fraction=0.04,
        pad=0.04,
        label="weight (one scale for all filters; red excites, blue inhibits)",
    )
    figure.suptitle(
        f"The first convolution's {count} filters ({kernel.shape[0]}x{kernel.shape[1]} pixels each)", fontsize=12
    )
    return figure


def feature_maps(
    image: np.ndarray, label: int, maps: np.ndarray, probabilities: np.ndarray, digit_name: str = "X_valid[0]"
):
    """One digit and the maps the first convolution makes of it (height x width x filters),
    all on one colour scale from 0 to the largest activation."""
    maps = np.asarray(maps)
    probabilities = np.asarray(probabilities, dtype=float).reshape(-1)
    if maps.ndim != 3:
        raise ValueError(f"Give the feature maps as height x width x filters; got {maps.shape}.")
    count = maps.shape[2]
    rows, columns = grid_shape(count)
    low, high = min(0.0, float(maps.min())), max(float(maps.max()), 1e-6)
    figure = Figure(figsize=(columns * 1.45 + 2.6, rows * 1.5 + 1.0))
    outer = figure.add_gridspec(1, 2, width_ratios=[2.2, columns * 1.45], wspace=0.08)
    digit_axis = figure.add_subplot(outer[0])
    digit_axis.set_label("digit")
    digit_axis.imshow(image, cmap="Greys")
    predicted = int(np.argmax(probabilities))
    digit_axis.set_title(
        f"{digit_name}: a {int(label)}\npredicted {predicted}, p = {probabilities[predicted]:.3f}", fontsize=9
    )
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
    assert shown is not None  # The loop above drew at least one image.
    figure.colorbar(
        shown, ax=axes, orientation="horizontal", fraction=0.05, pad=0.04, label="activation (one scale for all maps)"
    )
    figure.suptitle(
        f"The first convolution's {count} feature maps of {digit_name} ({maps.shape[0]}x{maps.shape[1]} each)",
        fontsize=12,
    )
    return figure


@functools.cache
def weight_palette() -> list[int]:
    """hidden_units.png's diverging colour map in 255 steps, then white (index 255, between the tiles),
    as a PIL palette (R, G, B, R, ...); the page draws its tiles with the same 255 colours (page.json)."""
    table = np.rint(colormaps[WEIGHT_COLOURS](np.linspace(0, 1, 255))[:, :3] * 255).astype(np.uint8)
    return [*table.ravel().tolist(), 255, 255, 255]


def weight_tiles_png(kernel: np.ndarray) -> bytes:
    """A 784 x units kernel as a grid of 28x28 tiles (`grid_shape`'s grid, TILE_GAP white pixels between
    them), on one colour scale symmetric around 0, as a 256-colour PNG (a third of the size of an RGB one)."""
    kernel = np.nan_to_num(np.asarray(kernel, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    units = kernel.shape[1]
    rows, columns = grid_shape(units)
    limit = symmetric_limit(kernel)
    levels = np.rint((np.clip(kernel / limit, -1, 1) + 1) * 127).astype(np.uint8)  # 0-254
    step = imaging.FIELD + TILE_GAP
    picture = np.full((rows * step - TILE_GAP, columns * step - TILE_GAP), 255, np.uint8)
    for unit in range(units):
        top, left = (unit // columns) * step, (unit % columns) * step
        picture[top : top + imaging.FIELD, left : left + imaging.FIELD] = levels[:, unit].reshape(
            imaging.FIELD, imaging.FIELD
        )
    image = Image.fromarray(picture, mode="P")
    image.putpalette(weight_palette())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
