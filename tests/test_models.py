"""The book's networks: layers, shapes, parameter counts, compile settings; and the config."""

from __future__ import annotations

import pytest

from digitlab import config, models


def test_shallow_net_is_the_books():
    cfg = config.TrainConfig().resolved()
    model = models.create_model(cfg)
    dense, output = model.layers
    assert dense.units == 64 and dense.activation.__name__ == "sigmoid"
    assert output.units == 10 and output.activation.__name__ == "softmax"
    assert model.input_shape == (None, 784)
    assert dense.count_params() == 50_240 and output.count_params() == 650
    assert model.count_params() == 50_890
    assert model.loss == "mean_squared_error"
    assert type(model.optimizer).__name__ == "SGD"
    assert float(model.optimizer.learning_rate) == pytest.approx(0.01)
    assert (cfg.batch_size, cfg.epochs) == (128, 200)


@pytest.mark.parametrize(
    "name, parameters, layer_types",
    [
        ("intermediate", 784 * 64 + 64 + 64 * 64 + 64 + 650, ["Dense", "Dense", "Dense"]),
        (
            "deep",
            50_240 + 256 + 4160 + 256 + 4160 + 256 + 650,
            ["Dense", "BatchNormalization"] * 3 + ["Dropout", "Dense"],
        ),
        (
            "lenet",
            320 + 18_496 + 9216 * 128 + 128 + 1290,
            ["Conv2D", "Conv2D", "MaxPooling2D", "Dropout", "Flatten", "Dense", "Dropout", "Dense"],
        ),
    ],
)
def test_later_nets(name, parameters, layer_types):
    cfg = config.TrainConfig(model=name).resolved()
    model = models.create_model(cfg)
    assert [type(layer).__name__ for layer in model.layers] == layer_types
    assert model.count_params() == parameters
    assert model.output_shape == (None, 10)
    assert model.loss == "categorical_crossentropy"
    expected_input = (None, 28, 28, 1) if name == "lenet" else (None, 784)
    assert model.input_shape == expected_input


def test_flags_change_the_net():
    cfg = config.TrainConfig(
        model="intermediate", units=[32, 16], activation="tanh", optimizer="adam", learning_rate=0.005
    ).resolved()
    model = models.create_model(cfg)
    assert [layer.units for layer in model.layers] == [32, 16, 10]
    assert model.layers[0].activation.__name__ == "tanh"
    assert type(model.optimizer).__name__ == "Adam"
    assert float(model.optimizer.learning_rate) == pytest.approx(0.005)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(model="resnet"), "Unknown model 'resnet'"),
        (dict(units=[64, 64]), "give 1 value"),
        (dict(units=[0]), "units must be whole numbers"),
        (dict(learning_rate=-1.0), "learning_rate must be a number above 0"),
        (dict(learning_rate=float("nan")), "learning_rate must be a number above 0"),
        (dict(batch_size=0), "batch_size must be a whole number"),
        (dict(epochs=0), "epochs must be a whole number"),
        (dict(activation="swish!"), "Unknown activation"),
        (dict(model="deep", dropout=[1.5]), "each at least 0 and below 1"),
        (dict(seeds=0), "seeds must be a whole number"),
        (dict(seed=-3), "seed must be a whole number"),
        (dict(momentum=1.0), "momentum must be at least 0"),
        (dict(checkpoint_every=-1), "checkpoint_every must be 0"),
        (dict(checkpoint_seconds=-1.0), "checkpoint_seconds must be a number from 0"),
        (dict(checkpoint_seconds=float("nan")), "checkpoint_seconds must be a number from 0"),
    ],
)
def test_bad_config_values_are_explained(overrides, message):
    with pytest.raises(ValueError, match=message):
        config.TrainConfig(**overrides).resolved()


def test_config_round_trip_and_unknown_fields(tmp_path):
    cfg = config.TrainConfig(model="deep", epochs=3, seed=7).resolved()
    path = tmp_path / "config.json"
    cfg.save(path)
    assert config.TrainConfig.load(path) == cfg
    path.write_text('{"model": "shallow", "colour": "blue"}')
    with pytest.raises(ValueError, match="Unknown config field"):
        config.TrainConfig.load(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not readable JSON"):
        config.TrainConfig.load(path)
    with pytest.raises(ValueError, match="No config file"):
        config.TrainConfig.load(tmp_path / "missing.json")
