"""The arithmetic limit of `digitlab bench`: this machine's measured float32 matrix-multiply speed
(the GFLOP/s probe) and the floating-point operations of one epoch of a dense net, dense or counting
only the nonzero pixels. An epoch's operations over the measured speed is the fastest it could run.

    from digitlab.bench import arithmetic
    arithmetic.matmul_gflops()                                  # e.g. 95.0 on all cores
    arithmetic.epoch_flops([784, 64, 10], 60_000, 10_000)       # the shallow net's epoch
"""

from __future__ import annotations

import itertools
import time

import numpy as np


def matmul_gflops(size: int = 1024, repeats: int = 20, threads: int | None = None) -> float:
    """This machine's float32 matrix-multiply speed (best of `repeats`), all cores or `threads` of them."""
    from digitlab.engine import blas

    rng = np.random.default_rng(0)
    left, right = rng.random((size, size), dtype=np.float32), rng.random((size, size), dtype=np.float32)
    product = np.empty_like(left)
    best = float("inf")
    with blas.BlasThreads(threads):
        np.matmul(left, right, out=product)
        for _ in range(repeats):
            start = time.perf_counter()
            np.matmul(left, right, out=product)
            best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def useful_epoch_flops(
    layer_sizes: list[int], train_examples: int, valid_examples: int, train_nonzeros: int, valid_nonzeros: int
) -> int:
    """`epoch_flops` with the first layer's multiply-adds counted for nonzero inputs only.

    81% of MNIST's pixels are zero, and a product with zero adds nothing: this is the
    arithmetic an engine cannot avoid, where `epoch_flops` is what a dense product does.
    """
    first = layer_sizes[1]
    dense_first = 2 * 2 * layer_sizes[0] * first * train_examples + 2 * layer_sizes[0] * first * valid_examples
    useful_first = 2 * 2 * train_nonzeros * first + 2 * valid_nonzeros * first
    return epoch_flops(layer_sizes, train_examples, valid_examples) - dense_first + useful_first


def epoch_flops(layer_sizes: list[int], train_examples: int, valid_examples: int) -> int:
    """Floating-point operations of one epoch: forward and weight gradients, hidden-input gradients, validation.

    The gradient with respect to the images themselves is not counted; neither
    the engine nor XLA (which prunes it) computes it.
    """
    products = [inputs * outputs for inputs, outputs in itertools.pairwise(layer_sizes)]
    train = 2 * (2 * sum(products) + sum(products[1:]))
    return train * train_examples + 2 * sum(products) * valid_examples
