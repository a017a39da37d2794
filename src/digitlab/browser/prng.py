"""The page's random numbers, in NumPy: xoshiro128** seeded by splitmix32, bit for bit as prng.js.

A browser run draws its initial weights and its batch orders from two streams of one seed
(docs/browser.md): stream 0 gives the glorot-uniform kernels (biases start at 0), stream 1
one Fisher-Yates permutation per epoch, epoch after epoch. The same functions here give the
same arrays, so a test (or `digitlab train` with these weights and orders) repeats a run:

    from digitlab.browser import prng
    weights = prng.initial_weights(seed=0, layer_sizes=[784, 64, 10])   # [kernel, bias, kernel, bias]
    orders = prng.batch_orders(seed=0, count=60_000, epochs=3)          # (3, 60000) int64
"""

from __future__ import annotations

import math

import numpy as np

MASK = 0xFFFFFFFF
WEIGHTS_STREAM = 0
ORDERS_STREAM = 1
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

    def below(self, bound: int) -> int:
        """A whole number in [0, bound): the high 32 bits of u32 * bound (bound < 2**21 keeps it exact in JS)."""
        return (self.next_u32() * bound) >> 32


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


def batch_orders(seed: int, count: int, epochs: int) -> np.ndarray:
    """Each epoch's order of the `count` training images: Fisher-Yates, from the last index down."""
    generator = PageOrders(seed)
    return np.stack([generator.permutation(count) for _ in range(epochs)]) if epochs else np.empty((0, count), np.int64)


class PageOrders:
    """The page's batch orders where digitlab's engines expect a NumPy generator: `permutation(n)` gives the
    next epoch's order, so `FastEngine.fit(..., rngs=[PageOrders(seed)])` trains on a browser run's batches."""

    def __init__(self, seed: int):
        self.generator = Xoshiro128(seed, ORDERS_STREAM)

    def permutation(self, count: int) -> np.ndarray:
        order = list(range(count))
        for index in range(count - 1, 0, -1):
            other = self.generator.below(index + 1)
            order[index], order[other] = order[other], order[index]
        return np.asarray(order, np.int64)
