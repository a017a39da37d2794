"""The sparse rows' levels: one byte a pixel that the training forward reads in place of its four-byte value.

Rows built from uint8 images (`SparseRows.from_images`), or from float32 inputs whose every nonzero value is
k / 255 in float32 (the inputs the book makes of them), keep each pixel's byte k beside its value. The AVX2 and
AVX-512 forwards of a training batch read those bytes (through a table of the 256 values) rather than the values:
the results must be the same bits as from the values, on every path and thread count, for the book's shallow
net and its deep one (Dropout's masks included). Rows of any other values have no levels.
"""

import numpy as np
import pytest

from digitlab import config, data, engine, models
from digitlab.engine import cores, sparse

IMAGES = 1001  # Seven batches of 128, then one of 105.


@pytest.fixture(scope="module")
def images(mnist_arrays):
    (x, y), (x_valid, y_valid), _ = data.split(mnist_arrays, train_limit=IMAGES)
    return x, data.to_targets(y), x_valid[:300], data.to_targets(y_valid[:300])


def test_the_levels_are_the_images_bytes_and_the_values_their_quotients(images):
    x, _, _, _ = images
    rows = sparse.SparseRows.from_images(x)
    flat = x.reshape(len(x), -1)
    np.testing.assert_array_equal(rows.levels, flat[flat != 0])
    quotients = rows.levels.astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(quotients.view(np.uint32), rows.vals.view(np.uint32))
    from_inputs = sparse.SparseRows(data.to_inputs(x))  # The book's float32 inputs: the same levels.
    np.testing.assert_array_equal(from_inputs.levels, rows.levels)
    assert rows.without_levels().levels is None and rows.levels is not None


@pytest.mark.parametrize(
    "odd",
    [0.5, 2.0, -1 / 255, float("nan"), float("inf"), 1e-9, float(np.nextafter(np.float32(3 / 255), 1))],
    ids=["half", "two", "negative", "nan", "inf", "tiny", "next-to-a-level"],
)
def test_rows_with_a_value_that_is_not_a_level_have_none(odd):
    x = (np.arange(2 * 784) % 256).astype(np.float32).reshape(2, 784) / np.float32(255)
    assert sparse.SparseRows(x).levels is not None
    x[1, 400] = np.float32(odd)
    rows = sparse.SparseRows(x)
    assert rows.levels is None
    np.testing.assert_array_equal(rows.vals[rows.cols == 400][-1:], np.float32(odd))


# The kernels' paths: the CPU's widest (AVX-512 where it has it), AVX2, and the portable C (which reads the values).
KERNEL_PATHS = {"widest": {}, "AVX2": {sparse.AVX512_VARIABLE: "0"}, "portable": {sparse.SCALAR_VARIABLE: "1"}}


@pytest.fixture(params=list(KERNEL_PATHS))
def kernel_path(request, monkeypatch):
    for name, value in KERNEL_PATHS[request.param].items():
        monkeypatch.setenv(name, value)
    sparse.reload()
    if not sparse.available():
        pytest.skip(f"The C kernels are not built: {sparse.unavailable_reason()}")
    yield request.param
    monkeypatch.undo()
    sparse.reload()


def trained(model_name: str, rows, targets, valid_rows, valid_targets, workers: int, **settings):
    """The engine's state and history after two epochs of seed 3 on `rows`."""
    cfg = config.TrainConfig(model=model_name, seed=3, **settings).resolved()
    fast = engine.FastEngine(models.create_seeded_models(cfg), cfg, backend="numpy", workers=workers)
    assert fast.trains_from_rows
    logs: list = []
    fast.fit(
        rows,
        targets,
        (valid_rows, valid_targets),
        epochs=2,
        rngs=[np.random.RandomState(3)],
        on_epoch_end=lambda _, got: logs.append(got),
    )
    return fast.get_state(), logs


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("model_name", ["shallow", "deep"])
def test_training_from_the_levels_gives_the_bits_of_the_values(images, kernel_path, model_name, workers, monkeypatch):
    x, targets, x_valid, valid_targets = images
    monkeypatch.setattr(cores.FreeCores, "threads", lambda self, wanted: wanted)  # As many as asked, whatever the load.
    rows, valid_rows = sparse.SparseRows.from_images(x), sparse.SparseRows.from_images(x_valid)
    settings = {"dropout": [0.2]} if model_name == "deep" else {}
    with_levels = trained(model_name, rows, targets, valid_rows, valid_targets, workers, **settings)
    with_values = trained(model_name, rows.without_levels(), targets, valid_rows, valid_targets, workers, **settings)
    assert with_levels[1] == with_values[1]
    assert rows.levels is not None and set(with_levels[0]) == set(with_values[0])
    for name, array in with_levels[0].items():
        assert np.asarray(array).tobytes() == np.asarray(with_values[0][name]).tobytes(), name
