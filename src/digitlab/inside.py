"""A look inside a trained network: what its first layer's neurons look for, and how they answer one digit.

    from digitlab import inside
    look = inside.look_inside(model, X_valid[0], flat=True)    # weights, activations, probabilities
    figures = inside.figures(model, X_valid[0], y_valid[0])     # {"hidden_units": Figure}, or for LeNet
                                                                # {"filters": ..., "feature_maps": ...}

Dense nets (chapters 5, 8, 9): the first Dense layer's kernel is 784 x units; its
column k, drawn as a 28x28 image, is the pattern of ink that drives hidden unit k up
(positive weights) or down (negative ones). For one digit, `activations` are that
layer's outputs and `probabilities` the network's ten outputs. LeNet (chapter 10): the
first Conv2D's 3x3 kernels and the 26x26 maps they make of the digit.

`digitlab evaluate` writes these figures as hidden_units.png (or filters.png and
feature_maps.png), `digitlab report` shows them, and the chapter notebooks draw them.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from digitlab import data
from digitlab.plots import inside as plots_inside

# The figures `figures` returns, by kind of first layer. They are many small images of weights, so
# they are saved with a 256-colour palette (`plots.figure_png(palette=True)`): a few times smaller.
FIGURE_NAMES = {"dense": ("hidden_units",), "convolution": ("filters", "feature_maps")}


def first_layer(model: keras.Model) -> layers.Layer:
    """The network's first layer, which must be a Dense or a Conv2D layer (as in the book's four nets)."""
    if not model.layers or not isinstance(model.layers[0], (layers.Dense, layers.Conv2D)):
        raise ValueError(
            "A look inside needs a network whose first layer is Dense or Conv2D, as in the book's nets; "
            f"this one starts with {type(model.layers[0]).__name__ if model.layers else 'no layer'}."
        )
    return model.layers[0]


def look_inside(model: keras.Model, image: np.ndarray, flat: bool = True) -> dict[str, np.ndarray]:
    """The first layer's kernel and bias, its output for one uint8 28x28 image, and the ten probabilities.

    `activations` has shape (units,) for a Dense layer and (height, width, filters) for a Conv2D.
    """
    layer = first_layer(model)
    inputs = data.to_inputs(np.asarray(image)[None], flat=flat)
    kernel, bias = (np.asarray(value) for value in layer.get_weights())
    activations = keras.ops.convert_to_numpy(layer(inputs))[0]
    probabilities = np.asarray(model.predict(inputs, verbose=0))[0]
    return {"kernel": kernel, "bias": bias, "activations": activations, "probabilities": probabilities}


def figures(
    model: keras.Model, image: np.ndarray, label: int, flat: bool | None = None, digit_name: str = "X_valid[0]"
) -> dict:
    """The look inside as Matplotlib figures: {"hidden_units"} for a dense net, {"filters",
    "feature_maps"} for a convolutional one. `flat` defaults to what the first layer takes."""
    layer = first_layer(model)
    convolutional = isinstance(layer, layers.Conv2D)
    if flat is None:
        flat = not convolutional
    look = look_inside(model, image, flat=flat)
    if not convolutional:
        return {
            "hidden_units": plots_inside.hidden_units(
                look["kernel"], look["activations"], look["probabilities"], image, label, digit_name=digit_name
            )
        }
    return {
        "filters": plots_inside.conv_filters(look["kernel"]),
        "feature_maps": plots_inside.feature_maps(
            image, label, look["activations"], look["probabilities"], digit_name=digit_name
        ),
    }


def is_inside_figure(name: str) -> bool:
    """True for the names of the figures `figures` makes (they are saved with a palette)."""
    return any(name in names for names in FIGURE_NAMES.values())
