"""Reads a compiled Keras model into a `NetworkSpec`: what the fast engine trains, or why it cannot.

    from digitlab.engine import spec
    network = spec.read_network(model, config)          # raises spec.UnsupportedModel
    reason = spec.unsupported_reason(model, config)  # None, or a sentence why not

`read_network` checks the model against what `FastEngine` supports (a `keras.Sequential`
of Dense, BatchNormalization and Dropout layers, mean squared error or categorical cross-entropy, SGD,
Adam or RMSprop) and returns its layers, loss and optimizer as plain frozen
dataclasses. Both backends compute from a `NetworkSpec` alone, and share the names
and constants defined here (`weight_names`, `slot_names`, `CROSSENTROPY_CLIP`).
"""

from __future__ import annotations

import dataclasses
import itertools

import keras
import numpy as np
from keras import layers

from digitlab import errors
from digitlab.config import TrainConfig

ACTIVATIONS = ("sigmoid", "relu", "tanh", "elu", "selu", "linear", "softmax")
# Keras's fuzz factor for clipping probabilities in the cross-entropy (keras.config.epsilon()).
CROSSENTROPY_CLIP = 1e-7


@dataclasses.dataclass(frozen=True)
class NormSpec:
    """A BatchNormalization layer right after a Dense layer's activation: Keras's momentum and epsilon.

    Training normalizes with the batch's mean and (biased) variance and moves the moving statistics
    toward them (moving = moving * momentum + batch * (1 - momentum)); evaluation uses the moving ones.
    """

    momentum: float = 0.99
    epsilon: float = 1e-3


@dataclasses.dataclass(frozen=True)
class DenseSpec:
    """One Dense layer: its sizes, activation, the Dropout rate applied to its input, and the
    BatchNormalization applied to its output (None: none)."""

    inputs: int
    units: int
    activation: str
    dropout: float = 0.0
    norm: NormSpec | None = None


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """The optimizer's kind and hyperparameters, read from the Keras optimizer."""

    name: str
    learning_rate: float
    momentum: float = 0.0
    nesterov: bool = False
    beta_1: float = 0.9
    beta_2: float = 0.999
    rho: float = 0.9
    epsilon: float = 1e-7


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
    """Everything the engine needs to know about a compiled Keras model."""

    dense: tuple[DenseSpec, ...]
    loss: str
    optimizer: OptimizerSpec


class UnsupportedModel(errors.DigitlabError):
    """The fast engine cannot train this model; the message says why."""


def unsupported_reason(model: keras.Model, config: TrainConfig) -> str | None:
    """None if `FastEngine` can train this compiled model with this config, else a sentence why."""
    try:
        read_network(model, config)
    except UnsupportedModel as error:
        return str(error)
    return None


def read_network(model: keras.Model, config: TrainConfig) -> NetworkSpec:
    """Reads a compiled Keras model into a NetworkSpec, raising UnsupportedModel if it cannot."""
    if not isinstance(model, keras.Sequential):
        raise UnsupportedModel("The fast engine trains keras.Sequential models only.")
    if not getattr(model, "compiled", False) or model.optimizer is None:
        raise UnsupportedModel("The model is not compiled; compile it with a loss and an optimizer first.")
    if not isinstance(config.batch_size, int) or config.batch_size < 1:
        raise UnsupportedModel(f"batch_size must be a positive whole number, got {config.batch_size!r}.")
    dense, dropout = [], 0.0
    for layer in model.layers:
        if isinstance(layer, layers.Dropout):
            if dropout or layer.noise_shape is not None:
                raise UnsupportedModel(
                    "Two Dropout layers in a row, or a Dropout noise_shape, are not supported by the fast engine."
                )
            dropout = float(layer.rate)
        elif isinstance(layer, layers.Dense):
            dense.append(_dense_spec(layer, dropout))
            dropout = 0.0
        elif isinstance(layer, layers.BatchNormalization):
            if not dense or dropout or dense[-1].norm is not None:
                raise UnsupportedModel(
                    "The fast engine runs a BatchNormalization layer only right after a Dense layer "
                    "(one per Dense layer, before any Dropout); use the fit engine."
                )
            dense[-1] = dataclasses.replace(dense[-1], norm=_norm_spec(layer))
        else:
            raise UnsupportedModel(
                f"{type(layer).__name__} layers are not supported by the fast engine "
                "(it runs Dense, BatchNormalization and Dropout layers only); use the fit engine."
            )
    if not dense:
        raise UnsupportedModel("The model has no Dense layer for the fast engine to train.")
    if dropout:
        raise UnsupportedModel("A Dropout layer after the last Dense layer is not supported by the fast engine.")
    if dense[-1].norm is not None:
        raise UnsupportedModel(
            "A BatchNormalization layer after the last Dense layer is not supported by the fast engine."
        )
    if any(spec.activation == "softmax" for spec in dense[:-1]):
        raise UnsupportedModel("The fast engine supports softmax on the last layer only.")
    for before, after in itertools.pairwise(dense):
        if before.units != after.inputs:
            raise UnsupportedModel("The Dense layers' sizes do not chain; the model is not a plain stack.")
    loss = _loss_name(model.loss)
    if loss == "categorical_crossentropy" and dense[-1].activation != "softmax":
        raise UnsupportedModel("Categorical cross-entropy needs a softmax last layer in the fast engine.")
    return NetworkSpec(tuple(dense), loss, _optimizer_spec(model.optimizer))


def _dense_spec(layer: layers.Dense, dropout: float) -> DenseSpec:
    name = type(layer).__name__
    if type(layer) is not layers.Dense:
        raise UnsupportedModel(f"{name} layers are not supported by the fast engine; use the fit engine.")
    if not layer.use_bias:
        raise UnsupportedModel("Dense layers without a bias are not supported by the fast engine.")
    extras = ("kernel_regularizer", "bias_regularizer", "activity_regularizer", "kernel_constraint", "bias_constraint")
    if any(getattr(layer, extra, None) is not None for extra in extras) or getattr(layer, "lora_enabled", False):
        raise UnsupportedModel(
            "Dense layers with regularizers, constraints or LoRA are not supported by the fast engine."
        )
    if layer.compute_dtype != "float32" or layer.variable_dtype != "float32":
        raise UnsupportedModel("The fast engine computes in float32 only; the model uses another dtype policy.")
    activation = next((act for act in ACTIVATIONS if layer.activation is keras.activations.get(act)), None)
    if activation is None:
        raise UnsupportedModel(
            f"The activation of layer {layer.name} is not one the fast engine supports ({', '.join(ACTIVATIONS)})."
        )
    kernel_shape = tuple(layer.kernel.shape)
    return DenseSpec(int(kernel_shape[0]), int(kernel_shape[1]), activation, dropout)


def _norm_spec(layer: layers.BatchNormalization) -> NormSpec:
    axis = layer.axis if isinstance(layer.axis, int) else -1
    extras = ("beta_regularizer", "gamma_regularizer", "beta_constraint", "gamma_constraint")
    if (
        axis not in (-1, 1)
        or not (layer.center and layer.scale)
        or layer.renorm
        or getattr(layer, "synchronized", False)
        or any(getattr(layer, extra, None) is not None for extra in extras)
        or not layer.trainable
    ):
        raise UnsupportedModel(
            f"The BatchNormalization layer {layer.name} is not the plain kind the fast engine runs (last axis, "
            "center and scale, trainable, no renorm, regularizers or constraints); use the fit engine."
        )
    if layer.compute_dtype != "float32" or layer.variable_dtype != "float32":
        raise UnsupportedModel("The fast engine computes in float32 only; the model uses another dtype policy.")
    return NormSpec(momentum=float(layer.momentum), epsilon=float(layer.epsilon))


def _loss_name(loss) -> str:
    names = {
        "mean_squared_error": "mean_squared_error",
        "mse": "mean_squared_error",
        "MeanSquaredError": "mean_squared_error",
        "categorical_crossentropy": "categorical_crossentropy",
        "CategoricalCrossentropy": "categorical_crossentropy",
    }
    if isinstance(loss, str) and loss in names:
        return names[loss]
    if loss is keras.losses.mean_squared_error:
        return "mean_squared_error"
    if loss is keras.losses.categorical_crossentropy:
        return "categorical_crossentropy"
    if isinstance(loss, keras.losses.Loss) and loss.reduction == "sum_over_batch_size":
        if type(loss) is keras.losses.MeanSquaredError:
            return "mean_squared_error"
        if (
            type(loss) is keras.losses.CategoricalCrossentropy
            and not loss.from_logits
            and not loss.label_smoothing
            and loss.axis == -1
        ):
            return "categorical_crossentropy"
    raise UnsupportedModel(
        f"The loss {loss!r} is not supported by the fast engine; it runs mean_squared_error "
        "and categorical_crossentropy (probabilities, no label smoothing)."
    )


def _optimizer_spec(optimizer) -> OptimizerSpec:
    if isinstance(optimizer._learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        raise UnsupportedModel("Learning-rate schedules are not supported by the fast engine.")
    extras = (
        "weight_decay",
        "clipnorm",
        "clipvalue",
        "global_clipnorm",
        "gradient_accumulation_steps",
        "loss_scale_factor",
    )
    if any(getattr(optimizer, extra, None) for extra in extras) or getattr(optimizer, "use_ema", False):
        raise UnsupportedModel(
            "Optimizers with weight decay, gradient clipping, gradient accumulation, loss scaling "
            "or EMA are not supported by the fast engine."
        )
    learning_rate = float(np.asarray(optimizer.learning_rate))
    kind = type(optimizer)
    if kind is keras.optimizers.SGD:
        return OptimizerSpec(
            "sgd", learning_rate, momentum=float(optimizer.momentum), nesterov=bool(optimizer.nesterov)
        )
    if kind is keras.optimizers.Adam:
        if optimizer.amsgrad:
            raise UnsupportedModel("Adam with amsgrad=True is not supported by the fast engine.")
        return OptimizerSpec(
            "adam",
            learning_rate,
            beta_1=float(optimizer.beta_1),
            beta_2=float(optimizer.beta_2),
            epsilon=float(optimizer.epsilon),
        )
    if kind is keras.optimizers.RMSprop:
        if optimizer.centered:
            raise UnsupportedModel("RMSprop with centered=True is not supported by the fast engine.")
        return OptimizerSpec(
            "rmsprop",
            learning_rate,
            momentum=float(optimizer.momentum),
            rho=float(optimizer.rho),
            epsilon=float(optimizer.epsilon),
        )
    raise UnsupportedModel(
        f"The {kind.__name__} optimizer is not supported by the fast engine; it runs SGD, Adam and RMSprop."
    )


def slot_names(optimizer: OptimizerSpec) -> tuple[str, ...]:
    """The optimizer's per-weight state arrays, as Keras names them."""
    if optimizer.name == "sgd":
        return ("momentum",) if optimizer.momentum else ()
    if optimizer.name == "adam":
        return ("momentum", "velocity")
    return ("velocity", "momentum") if optimizer.momentum else ("velocity",)


NORM_TRAINED = ("gamma", "beta")
NORM_MOVING = ("moving_mean", "moving_variance")


def weight_names(network: NetworkSpec) -> list[str]:
    """The names of the model's arrays in the engine's state, in Keras's order (`get_weights`): kernel,
    bias, then, where a BatchNormalization follows the layer, gamma, beta, moving_mean, moving_variance."""
    names = []
    for index, layer in enumerate(network.dense):
        parts = ("kernel", "bias") + ((NORM_TRAINED + NORM_MOVING) if layer.norm else ())
        names += [f"dense_{index}/{part}" for part in parts]
    return names


def trained_names(network: NetworkSpec) -> list[str]:
    """The arrays the optimizer updates (every weight but the moving statistics), in Keras's order."""
    return [name for name in weight_names(network) if name.rpartition("/")[2] not in NORM_MOVING]
