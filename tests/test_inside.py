"""A look inside the network: the plotted weights, activations and probabilities are the model's own.

Each figure's axes carry labels ("weights 7", "activations", "filter 3", "map 3", ...),
so the tests read back the very arrays drawn and compare them with the model's
weights and with a plain NumPy forward pass of its first layer.
"""

from __future__ import annotations

import numpy as np
import pytest

from digitlab import config, data, evaluation, inside, models
from digitlab.plots import inside as plots_inside


def _axes(figure) -> dict:
    return {axis.get_label(): axis for axis in figure.axes if axis.get_label()}


def _drawn(axis) -> np.ndarray:
    return np.ma.getdata(axis.images[0].get_array())


@pytest.fixture(scope="module")
def lenet():
    """A seeded LeNet (untrained: the test is about drawing its real weights, whatever they are)."""
    models.set_random_seed(3)
    return models.create_model(config.TrainConfig(model="lenet").resolved())


def test_hidden_units_draw_the_first_layers_weights_activations_and_probabilities(quick_model, mnist):
    _, (x_valid, y_valid) = mnist
    image, label = x_valid[0], int(y_valid[0])
    figure = inside.figures(quick_model, image, label)["hidden_units"]
    axes = _axes(figure)
    kernel, bias = quick_model.layers[0].get_weights()
    assert kernel.shape == (784, 64)
    # 64 tiles, tile k drawing column k of the kernel as 28x28, all on one scale symmetric around 0.
    tiles = [axes[f"weights {unit}"] for unit in range(64)]
    limit = np.abs(kernel).max()
    for unit, tile in enumerate(tiles):
        np.testing.assert_array_equal(_drawn(tile), kernel[:, unit].reshape(28, 28))
        assert tile.images[0].get_clim() == pytest.approx((-limit, limit))
        assert tile.images[0].get_cmap().name == plots_inside.WEIGHT_COLOURS
    # The tiles form an 8 x 8 grid: 8 distinct rows and columns of positions.
    positions = np.array([tile.get_position().bounds[:2] for tile in tiles])
    assert len(np.unique(positions[:, 0].round(4))) == 8 and len(np.unique(positions[:, 1].round(4))) == 8
    # The activations are the hidden layer's real output for this digit: sigmoid(x W + b).
    inputs = data.to_inputs(image[None])
    expected = 1 / (1 + np.exp(-(inputs @ kernel + bias)))
    np.testing.assert_allclose(_drawn(axes["activations"]).reshape(-1), expected[0], rtol=1e-5, atol=1e-6)
    # The bars are the network's ten output probabilities.
    probabilities = quick_model.predict(inputs, verbose=0)[0]
    heights = [bar.get_height() for bar in axes["probabilities"].patches]
    np.testing.assert_allclose(heights, probabilities, rtol=1e-6)
    np.testing.assert_array_equal(_drawn(axes["digit"]), image)
    assert (
        "a 7" in axes["digit"].get_title()
        and f"predicted {np.argmax(probabilities)}" in axes["probabilities"].get_title()
    )


def test_lenet_filters_and_feature_maps_are_the_convolutions_own(lenet, mnist):
    _, (x_valid, y_valid) = mnist
    image = x_valid[0]
    figures = inside.figures(lenet, image, int(y_valid[0]))
    assert set(figures) == {"filters", "feature_maps"}
    kernel, bias = lenet.layers[0].get_weights()
    assert kernel.shape == (3, 3, 1, 32)
    filters = _axes(figures["filters"])
    limit = np.abs(kernel).max()
    for index in range(32):
        tile = filters[f"filter {index}"]
        np.testing.assert_array_equal(_drawn(tile), kernel[:, :, 0, index])
        assert tile.images[0].get_clim() == pytest.approx((-limit, limit))
    # A plain NumPy reference of the first convolution: valid 3x3 cross-correlation, bias, ReLU.
    pixels = image.astype(np.float32) / 255
    windows = np.lib.stride_tricks.sliding_window_view(pixels, (3, 3))  # 26 x 26 x 3 x 3
    expected = np.maximum(np.einsum("ijkl,klf->ijf", windows, kernel[:, :, 0, :]) + bias, 0)
    maps = _axes(figures["feature_maps"])
    low, high = maps["map 0"].images[0].get_clim()
    for index in range(32):
        tile = maps[f"map {index}"]
        np.testing.assert_allclose(_drawn(tile), expected[:, :, index], rtol=1e-4, atol=1e-5)
        assert tile.images[0].get_clim() == (low, high)  # One colour scale for every map.
    assert high == pytest.approx(expected.max(), rel=1e-4)


def test_evaluate_model_adds_the_look_inside_and_names_its_files(lenet, mnist):
    _, (x_valid, y_valid) = mnist
    _, figures = evaluation.evaluate_model(lenet, x_valid[:50], y_valid[:50], flat=False)
    assert {"confusion", "mistakes", "filters", "feature_maps"} == set(figures)
    names = evaluation.output_names("test", figures)
    assert names["filters"] == "filters-test.png" and names["feature_maps"] == "feature_maps-test.png"


def test_a_network_without_a_dense_or_convolution_first_is_refused():
    import keras

    model = keras.Sequential([keras.Input(shape=(784,)), keras.layers.Dropout(0.1), keras.layers.Dense(10)])
    with pytest.raises(ValueError, match="first layer is Dense or Conv2D"):
        inside.figures(model, np.zeros((28, 28), np.uint8), 0)
