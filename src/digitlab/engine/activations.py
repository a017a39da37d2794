"""Keras's activations and their derivatives in NumPy, in place on float32 arrays (the NumPy backend's).

    from digitlab.engine import activations
    activations.apply(values, "sigmoid", scratch, row)          # values = sigmoid(values)
    activations.backward(grad, output, "sigmoid", scratch)      # grad *= sigmoid'(x), from the output

The formulas are those of Keras 3 on the JAX backend; each derivative is written in
terms of the activation's output, which the backward pass keeps.
"""

from __future__ import annotations

import numpy as np

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def apply(values: np.ndarray, activation: str, scratch: np.ndarray, row: np.ndarray) -> None:
    """Applies a Keras activation in place (JAX backend formulas)."""
    if activation == "sigmoid":
        np.negative(values, out=values)
        np.exp(values, out=values)
        values += np.float32(1)
        np.reciprocal(values, out=values)
    elif activation == "relu":
        np.maximum(values, np.float32(0), out=values)
    elif activation == "tanh":
        np.tanh(values, out=values)
    elif activation in ("elu", "selu"):
        np.minimum(values, np.float32(0), out=scratch)
        np.expm1(scratch, out=scratch)
        np.maximum(values, np.float32(0), out=values)
        if activation == "selu":
            scratch *= np.float32(SELU_ALPHA)
        values += scratch
        if activation == "selu":
            values *= np.float32(SELU_SCALE)
    elif activation == "softmax":
        np.max(values, axis=-1, keepdims=True, out=row)
        values -= row
        np.exp(values, out=values)
        np.sum(values, axis=-1, keepdims=True, out=row)
        values /= row


def backward(gradient: np.ndarray, output: np.ndarray, activation: str, scratch: np.ndarray) -> None:
    """Multiplies `gradient` in place by the activation's derivative, written in terms of its output."""
    if activation == "sigmoid":
        np.subtract(np.float32(1), output, out=scratch)
        scratch *= output
        gradient *= scratch
    elif activation == "relu":
        np.greater(output, np.float32(0), out=scratch)
        gradient *= scratch
    elif activation == "tanh":
        np.multiply(output, output, out=scratch)
        np.subtract(np.float32(1), scratch, out=scratch)
        gradient *= scratch
    elif activation == "elu":
        np.add(output, np.float32(1), out=scratch)
        np.minimum(scratch, np.float32(1), out=scratch)
        gradient *= scratch
    elif activation == "selu":
        np.add(output, np.float32(SELU_SCALE * SELU_ALPHA), out=scratch)
        np.copyto(scratch, np.float32(SELU_SCALE), where=output > 0)
        gradient *= scratch
    elif activation == "softmax":
        raise ValueError("softmax is only supported on the last layer, where the loss handles it.")
