"""The page's initial weights, in NumPy: xoshiro128** seeded by splitmix32, bit for bit as prng.js.

A browser run draws its initial weights from its seed (docs/browser.md): glorot-uniform kernels
from stream 0 of the seed, biases at 0. Its batch orders are `digitlab train`'s own,
`np.random.RandomState(seed).permutation(n)` an epoch (engine.js's NumpyRandomState), so a
test, or the native engine given these weights, repeats a browser run:

    from digitlab.browser import prng
    weights = prng.initial_weights(seed=0, layer_sizes=[784, 64, 10])   # [kernel, bias, kernel, bias]
    network.set_weights(weights); FastEngine([network], config).fit(..., rngs=[np.random.RandomState(0)])
"""

from __future__ import annotations

import math

import numpy as np

MASK = 0xFFFFFFFF
WEIGHTS_STREAM = 0
# Added per stream to the seed before splitmix32 (the fractional bits of sqrt(2)), so that streams differ.
STREAM_STEP = 0x6A09E667


def _rotl(value: int, shift: int) -> int:
    return ((value << shift) | (value >> (32 - shift))) & MASK


class Xoshiro128:
    """xoshiro128** (Blackman and Vigna), its 128-bit state filled by splitmix32 from (seed, stream)."""

    def __init__(self, seed: int, stream: int = 0):
        if not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise ValueError(f"seed must be a whole number from 0 to 4294967295, got {seed!r}.")
        mixer = (seed + stream * STREAM_STEP) & MASK
        state = []
        for _ in range(4):
            mixer = (mixer + 0x9E3779B9) & MASK
            z = mixer
            z = ((z ^ (z >> 16)) * 0x85EBCA6B) & MASK
            z = ((z ^ (z >> 13)) * 0xC2B2AE35) & MASK
            state.append(z ^ (z >> 16))
        self.state = state

    def next_u32(self) -> int:
        """The next 32-bit output (xoshiro128**), as the page's generator gives it."""
        s0, s1, s2, s3 = self.state
        result = (_rotl((s1 * 5) & MASK, 7) * 9) & MASK
        t = (s1 << 9) & MASK
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = _rotl(s3, 11)
        self.state = [s0, s1, s2, s3]
        return result

    def uniform(self) -> float:
        """A float in [0, 1) with 24 random bits (exact in float32)."""
        return (self.next_u32() >> 8) / 16777216.0


def initial_weights(seed: int, layer_sizes: list[int]) -> list[np.ndarray]:
    """Glorot-uniform kernels (in, out), row after row, and zero biases, in `model.get_weights()` order."""
    generator = Xoshiro128(seed, WEIGHTS_STREAM)
    weights: list[np.ndarray] = []
    for fan_in, fan_out in zip(layer_sizes[:-1], layer_sizes[1:], strict=True):
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        draws = np.fromiter((generator.next_u32() >> 8 for _ in range(fan_in * fan_out)), np.float64, fan_in * fan_out)
        kernel = ((draws / 16777216.0) * 2.0 - 1.0) * limit
        weights += [kernel.astype(np.float32).reshape(fan_in, fan_out), np.zeros(fan_out, np.float32)]
    return weights


DROPOUT_STREAM = 1


def dropout_seed(seed: int) -> int:
    """The Dropout seed of a page run with seed `seed`: the first draw of stream 1 (prng.js's dropoutSeed).
    The engine's Dropout masks are a hash of it and the step (_deep.c), natively and in the browser."""
    return Xoshiro128(seed, DROPOUT_STREAM).next_u32()


def page_arrays(seed: int, layer_sizes: list[int], normed: list[bool]) -> list[np.ndarray]:
    """A page run's initial arrays in `model.get_weights()` order: `initial_weights`, and after each Dense layer
    with a BatchNormalization (normed[layer]) Keras's initial gamma 1, beta 0, moving mean 0, moving variance 1."""
    dense = initial_weights(seed, layer_sizes)
    arrays: list[np.ndarray] = []
    for layer, units in enumerate(layer_sizes[1:]):
        arrays += dense[2 * layer : 2 * layer + 2]
        if normed[layer]:
            arrays += [np.full(units, value, np.float32) for value in (1, 0, 0, 1)]
    return arrays
