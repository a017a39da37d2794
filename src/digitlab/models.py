"""The book's MNIST networks as Keras models, built and compiled from a TrainConfig.

    from digitlab import config, models
    cfg = config.TrainConfig(model="shallow").resolved()
    model = models.build_model(cfg)       # Dense(64, sigmoid) -> Dense(10, softmax)
    models.compile_model(model, cfg)      # MSE, SGD(learning_rate=0.01), accuracy
    model.summary()                       # 50,890 parameters

- `shallow` (chapter 5): Dense 64 sigmoid, Dense 10 softmax.
- `intermediate` (chapter 8): two Dense 64 ReLU layers, Dense 10 softmax.
- `deep` (chapter 9): three [Dense 64 ReLU, BatchNormalization], Dropout 0.2, Dense 10 softmax.
- `lenet` (chapter 10): two 3x3 convolutions (32, 64), max pooling, Dropout 0.25,
  Dense 128 ReLU, Dropout 0.5, Dense 10 softmax, on 28x28x1 images.
"""

from __future__ import annotations

import random

import keras
import numpy as np
from keras import layers

from digitlab.config import TrainConfig, is_convolutional  # noqa: F401  (models.is_convolutional, as always)

NUM_CLASSES = 10


def set_random_seed(seed: int) -> None:
    """Seeds everything that decides a run's initial weights and shuffles.

    Same effect as `keras.utils.set_random_seed`, whose initializers and Dropout
    seeds are drawn from Python's generator and whose shuffles from NumPy's. Under
    the JAX backend it skips Keras's call because that also imports TensorFlow
    whenever it is installed: seconds of start-up, hundreds of MB and log noise.
    """
    if keras.backend.backend() != "jax":
        keras.utils.set_random_seed(seed)
        return
    random.seed(seed)
    np.random.seed(seed)


def build_model(config: TrainConfig) -> keras.Sequential:
    """Builds the (uncompiled) Keras model that `config.model` names, with its settings."""
    units, filters, dropout = config.units, config.filters, config.dropout
    assert units is not None and filters is not None and dropout is not None, "build_model takes a resolved config"
    if config.model == "lenet":
        stack = [
            keras.Input(shape=(28, 28, 1)),
            layers.Conv2D(filters[0], kernel_size=(3, 3), activation=config.activation),
            layers.Conv2D(filters[1], kernel_size=(3, 3), activation=config.activation),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Dropout(dropout[0]),
            layers.Flatten(),
            layers.Dense(units[0], activation=config.activation),
            layers.Dropout(dropout[1]),
        ]
    else:
        stack = [keras.Input(shape=(784,))]
        for width in units:
            stack.append(layers.Dense(width, activation=config.activation))
            if config.batch_norm:
                stack.append(layers.BatchNormalization())
        for rate in dropout:
            stack.append(layers.Dropout(rate))
    stack.append(layers.Dense(NUM_CLASSES, activation="softmax"))
    return keras.Sequential(stack, name=f"{config.model}_net")


def make_optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    """The optimizer the config names, with its learning rate (and momentum for SGD)."""
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=config.learning_rate, momentum=config.momentum)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=config.learning_rate)
    if config.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=config.learning_rate)
    raise ValueError(f"Unknown optimizer {config.optimizer!r}; choose sgd, adam or rmsprop.")


def compile_model(model: keras.Model, config: TrainConfig) -> keras.Model:
    """Compiles the model as the book does: the config's loss and optimizer, accuracy metric."""
    model.compile(loss=config.loss, optimizer=make_optimizer(config), metrics=["accuracy"])
    return model


def create_model(config: TrainConfig) -> keras.Sequential:
    """`build_model` then `compile_model`."""
    return compile_model(build_model(config), config)


def create_seeded_models(config: TrainConfig) -> list[keras.Sequential]:
    """`config.seeds` compiled networks: network k is built right after seeding with `config.seed + k`,
    so it has the initial weights (and Dropout seeds) of a single run with that seed."""
    assert config.seed is not None, "create_seeded_models takes a resolved config with its seed"
    networks = []
    for index in range(config.seeds):
        set_random_seed(config.seed + index)
        networks.append(create_model(config))
    return networks
