"""Shared fixtures: the real MNIST file, small synthetic MNIST-shaped archives, quick configs.

The tests need the real MNIST. They find it through the DIGITLAB_DATA environment
variable (which .ci/run sets to ../shared/data/mnist.npz), or at that path beside
the project; if it is in neither place the tests fail rather than skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist.npz"

if not os.environ.get("DIGITLAB_DATA") and SHARED_MNIST.is_file():
    os.environ["DIGITLAB_DATA"] = str(SHARED_MNIST)
os.environ.setdefault("KERAS_BACKEND", "jax")


@pytest.fixture(scope="session")
def mnist_path() -> Path:
    """The real MNIST archive; a test that needs it fails (not skips) when it is missing."""
    path = os.environ.get("DIGITLAB_DATA")
    if not path or not Path(path).is_file():
        pytest.fail(
            "The real MNIST is needed: set DIGITLAB_DATA to a mnist.npz "
            f"(CI uses {SHARED_MNIST})."
        )
    return Path(path)


@pytest.fixture(scope="session")
def mnist_arrays(mnist_path):
    from digitlab import data

    return data.load_arrays(mnist_path)


@pytest.fixture
def small_npz(tmp_path, mnist_arrays) -> Path:
    """A real-MNIST subset (600 training and 100 test images) in Keras's npz layout."""
    path = tmp_path / "small_mnist.npz"
    np.savez(
        path,
        x_train=mnist_arrays["x_train"][:600], y_train=mnist_arrays["y_train"][:600],
        x_test=mnist_arrays["x_test"][:100], y_test=mnist_arrays["y_test"][:100],
    )
    return path
