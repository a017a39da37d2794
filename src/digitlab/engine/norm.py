"""BatchNormalization in NumPy for the fast engine's per-batch steps and its evaluation, as Keras computes it.

    from digitlab.engine import norm
    arrays = norm.Arrays.of(state, grads, index=0, view=lambda array: array[0])   # layer 0's views
    buffers = norm.Buffers(lead=(), rows=128, units=64)
    y = norm.train(layer.norm, arrays, buffers, x)      # batch statistics; moves the moving ones
    norm.backward(arrays, buffers, g)                   # g: dL/dy -> dL/dx in place; fills gamma's, beta's
    norm.evaluate(layer.norm, arrays, x)                # moving statistics, in place

`numpy_backend.NumpyBackend` calls these where a `spec.NormSpec` follows a Dense layer; `_deep.c` runs
the same formulas in C for whole epochs. Keras's (keras/src/layers/normalization/batch_normalization.py,
JAX backend): training normalizes with the batch's mean and biased variance and moves the moving
statistics (moving * momentum + batch * (1 - momentum)); evaluation uses the moving ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from digitlab.engine import spec


@dataclasses.dataclass(frozen=True)
class Arrays:
    """One BatchNormalization's weights, moving statistics and gradients, as views shaped (..., 1, units)."""

    gamma: np.ndarray
    beta: np.ndarray
    moving_mean: np.ndarray
    moving_variance: np.ndarray
    gamma_grad: np.ndarray
    beta_grad: np.ndarray

    @classmethod
    def of(cls, state: dict, grads: dict, index: int, view: Callable[[np.ndarray], np.ndarray]) -> Arrays:
        """Layer `index`'s arrays from the engine's state and gradients, through `view` (one model or all)."""
        arrays = {part: state[f"dense_{index}/{part}"] for part in spec.NORM_TRAINED + spec.NORM_MOVING}
        arrays.update({f"{part}_grad": grads[f"dense_{index}/{part}"] for part in spec.NORM_TRAINED})
        return cls(**{part: view(array)[..., None, :] for part, array in arrays.items()})


class Buffers:
    """A step's buffers: the output, the normalized values, and per-unit statistics."""

    def __init__(self, lead: tuple, rows: int, units: int):
        self.output = np.empty(lead + (rows, units), np.float32)
        self.normalized = np.empty(lead + (rows, units), np.float32)
        self.mean, self.variance, self.scale = (np.empty(lead + (1, units), np.float32) for _ in range(3))


def train(settings: spec.NormSpec, arrays: Arrays, buffers: Buffers, values: np.ndarray) -> np.ndarray:
    """The layer in training: `values` normalized with the batch's mean and biased variance (returns
    buffers.output), and the moving statistics moved toward them."""
    mean, variance, scale = buffers.mean, buffers.variance, buffers.scale
    centered, output = buffers.normalized, buffers.output
    np.mean(values, axis=-2, keepdims=True, out=mean)
    np.subtract(values, mean, out=centered)
    np.multiply(centered, centered, out=output)
    np.mean(output, axis=-2, keepdims=True, out=variance)
    momentum = np.float32(settings.momentum)
    for moving, batch in ((arrays.moving_mean, mean), (arrays.moving_variance, variance)):
        moving *= momentum
        moving += batch * np.float32(1.0 - settings.momentum)
    # 1 / sqrt(variance + epsilon); `centered` becomes the normalized values, which `backward` reads.
    np.add(variance, np.float32(settings.epsilon), out=scale)
    np.sqrt(scale, out=scale)
    np.divide(np.float32(1), scale, out=scale)
    centered *= scale
    np.multiply(centered, arrays.gamma, out=output)
    output += arrays.beta
    return output


def backward(arrays: Arrays, buffers: Buffers, gradient: np.ndarray) -> None:
    """Turns the gradient with respect to the layer's output into the one with respect to its input (in
    place), and fills gamma's and beta's gradients: dx = gamma / sqrt(var + eps) * (g - mean(g) - x_hat *
    mean(g * x_hat)). Uses the buffers of the `train` call of the same step (its output is overwritten)."""
    normalized, product = buffers.normalized, buffers.output
    np.sum(gradient, axis=-2, keepdims=True, out=arrays.beta_grad)
    np.multiply(gradient, normalized, out=product)
    np.sum(product, axis=-2, keepdims=True, out=arrays.gamma_grad)
    rows = np.float32(gradient.shape[-2])
    np.multiply(normalized, arrays.gamma_grad / rows, out=product)
    gradient -= arrays.beta_grad / rows
    gradient -= product
    np.multiply(buffers.scale, arrays.gamma, out=buffers.mean)
    gradient *= buffers.mean


def evaluate(settings: spec.NormSpec, arrays: Arrays, values: np.ndarray) -> None:
    """The layer in evaluation, in place: the moving statistics, Keras's formula."""
    scale = arrays.gamma / np.sqrt(arrays.moving_variance + np.float32(settings.epsilon))
    values *= scale
    values += arrays.beta - arrays.moving_mean * scale
