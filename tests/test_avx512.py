"""The first layer's AVX-512 versions (_kernels.c) against its AVX2 ones, on real MNIST shrunk to a few thousand.

Where the CPU has AVX-512, the AVX2 path runs its first layer for 64 units in AVX-512: two images at a time in the
forward pass (a row of each half of the batch, their transpose entries through two sets of cursors) and two pixels
at a time in the update. Each lane does the AVX2 version's FMAs in its order, so every result must be the same
bits: the outputs, the transpose, and the weights after whole epochs on any number of threads (odd row counts
included: a batch of 57 rows, and each thread's share of it); the deep net's first-layer Adam, which runs with its
gradient in AVX-512 (never stored), too. The fit comparisons of tests/test_engine.py run on
this path too where the CPU has it. On a CPU without AVX-512 there is nothing to compare, and the tests say so.
"""

import numpy as np
import pytest

from digitlab import config, data, engine, models
from digitlab.engine import cores, sparse

IMAGES = 3001  # 23 batches of 128, then one of 57 rows.


@pytest.fixture(scope="module")
def images(mnist_arrays):
    """The first IMAGES training images as the engine reads them, with their labels and one-hot targets."""
    (x, y), _, _ = data.split(mnist_arrays, train_limit=IMAGES)
    labels = np.asarray(y, np.int64)
    return sparse.SparseRows(data.to_inputs(x)), np.eye(10, dtype=np.float32)[labels], labels


@pytest.fixture
def either(monkeypatch):
    """Runs a function with the AVX-512 versions on (True) or off (False); restores the default after."""
    sparse.reload()
    if not (sparse.simd() and sparse.avx512()):
        pytest.skip("This CPU has no AVX-512F (or no AVX2): the first layer runs its AVX2 versions only.")

    def run(wide, function):
        monkeypatch.setenv(sparse.AVX512_VARIABLE, "1" if wide else "0")
        sparse.reload()
        assert sparse.avx512() == wide
        return function()

    yield run
    monkeypatch.delenv(sparse.AVX512_VARIABLE, raising=False)
    sparse.reload()


def test_the_forward_pass_and_its_transpose_are_the_avx2_bits(images, either):
    rows, _, _ = images
    rng = np.random.default_rng(3)
    kernel = rng.standard_normal((784, 64)).astype(np.float32)
    bias = rng.standard_normal(64).astype(np.float32)
    for count in (1, 2, 57, 128):
        index = rng.choice(IMAGES, count, replace=False).astype(np.intp)
        for built in (False, True):

            def forward(index=index, count=count, built=built):
                out = np.empty((count, 64), np.float32)
                transpose = sparse.Transpose(rows, count, 64) if built else None
                sparse.forward(rows, index, kernel, bias, out, transpose=transpose)
                return out, transpose

            wide_out, wide_t = either(True, forward)
            narrow_out, narrow_t = either(False, forward)
            np.testing.assert_array_equal(wide_out.view(np.uint32), narrow_out.view(np.uint32))
            if built:
                used = wide_t.offsets[-1]
                np.testing.assert_array_equal(wide_t.offsets, narrow_t.offsets)
                assert used == (rows.starts[index + 1] - rows.starts[index]).sum()
                np.testing.assert_array_equal(wide_t.entries[:used], narrow_t.entries[:used])


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_whole_epochs_train_to_the_avx2_bits(images, either, threads):
    rows, targets, labels = images
    rng = np.random.default_rng(5)
    initial = [(rng.standard_normal(shape) * 0.05).astype(np.float32) for shape in [(784, 64), (64,), (64, 10), (10,)]]
    orders = [rng.permutation(IMAGES).astype(np.int64) for _ in range(2)]

    def train():
        weights = [array.copy() for array in initial]
        plan = sparse.EpochPlan(weights[0::2], weights[1::2], ["sigmoid", "sigmoid"], "mean_squared_error", 0.5, 0.0)
        sums = [sparse.train_epoch(rows, targets, labels, order, 128, plan, threads=threads) for order in orders]
        return weights, sums

    wide, wide_sums = either(True, train)
    narrow, narrow_sums = either(False, train)
    assert wide_sums == narrow_sums
    for a, b in zip(wide, narrow, strict=True):
        np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
    assert np.abs(wide[0] - initial[0]).max() > 1e-3  # The first layer learned: not two untouched copies.


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_the_deep_nets_epochs_are_the_avx2_bits(mnist_arrays, either, threads, monkeypatch):
    """The deep net's first-layer Adam sums each pixel's gradient and updates its row at once in AVX-512
    (digitlab_sparse_adam_rows), leaving alone the rows of pixels no image has had yet; the AVX2 path sums the
    gradient into a kernel, then updates every row. The same bits, on any number of threads, Dropout included."""
    monkeypatch.setattr(cores.FreeCores, "threads", lambda self, wanted: wanted)  # As many as asked, whatever the load.
    (x, y), validation, _ = data.prepare(mnist_arrays, train_limit=IMAGES)

    def train():
        cfg = config.TrainConfig(model="deep", seed=3).resolved()
        fast = engine.FastEngine(models.create_seeded_models(cfg), cfg, backend="numpy", workers=threads)
        assert fast.path.startswith("whole epochs in C")
        fast.fit(x, y, validation, epochs=2, rngs=[np.random.RandomState(3)])
        return fast.get_state()

    wide, narrow = either(True, train), either(False, train)
    assert set(wide) == set(narrow)
    for name, array in wide.items():
        assert np.asarray(array).tobytes() == np.asarray(narrow[name]).tobytes(), name
    velocity = np.asarray(wide["velocity/dense_0/kernel"])[0]
    rows_moved = np.abs(velocity).max(axis=1) > 0
    assert 0 < (~rows_moved).sum() < 784 // 2  # Both kinds of row: updated, and left alone (no image had the pixel).
