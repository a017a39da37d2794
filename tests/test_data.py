"""Data loading from every source, every bad-input case, and the book's preprocessing."""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import zipfile

import numpy as np
import pytest

from digitlab import data

# SHA-256 of each array's raw bytes, from shared/data/README.md.
MNIST_SHA256 = {
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}


def test_load_mnist_matches_the_book(mnist_path):
    (X_train, y_train), (X_valid, y_valid) = data.load_mnist(mnist_path)
    assert X_train.shape == (60000, 28, 28) and X_train.dtype == np.uint8
    assert X_valid.shape == (10000, 28, 28) and X_valid.dtype == np.uint8
    assert y_train[:12].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4, 3, 5]
    assert y_valid[0] == 7
    assert X_train.min() == 0 and X_train.max() == 255
    assert data.class_counts(y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_fingerprint_matches_the_data_readme(mnist_arrays):
    assert data.fingerprint(mnist_arrays) == MNIST_SHA256


def test_environment_variable_is_a_source(mnist_path, monkeypatch):
    monkeypatch.setenv(data.ENV_VAR, str(mnist_path))
    (X_train, _), _ = data.load_mnist()
    assert X_train.shape == (60000, 28, 28)


def test_keras_cache_is_used_when_no_path_is_given(small_npz, tmp_path, monkeypatch):
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    cache = data.keras_cache_path()
    cache.parent.mkdir(parents=True)
    cache.write_bytes(small_npz.read_bytes())
    (X_train, _), _ = data.load_mnist()
    assert X_train.shape == (600, 28, 28)


def test_offline_without_a_copy_names_the_three_ways(tmp_path, monkeypatch):
    # This machine has no route to the download server, so Keras's real download fails.
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty_keras_home"))
    with pytest.raises(data.DataError) as error:
        data.load_mnist()
    message = str(error.value)
    assert "--data PATH" in message and data.ENV_VAR in message and "mnist.npz" in message


def _write_idx(path, array: np.ndarray, compress: bool) -> None:
    header = struct.pack(">I", 0x00000800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_folder_is_a_source(tmp_path, mnist_arrays, compress):
    for key, stem in data.IDX_FILES.items():
        name = f"{stem}.gz" if compress else stem
        _write_idx(tmp_path / name, mnist_arrays[key][:50], compress)
    (X_train, y_train), (X_valid, y_valid) = data.load_mnist(tmp_path)
    np.testing.assert_array_equal(X_train, mnist_arrays["x_train"][:50])
    np.testing.assert_array_equal(y_valid, mnist_arrays["y_test"][:50])


def _save(tmp_path, **arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


def _good(mnist_arrays, count=20):
    return {key: mnist_arrays[key][:count] for key in data.NPZ_KEYS}


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda a: a.pop("y_test"), "lacks the array(s) y_test"),
        (lambda a: a.update(x_train=a["x_train"].reshape(20, 784)), "MNIST images are (N, 28, 28)"),
        (lambda a: a.update(x_train=a["x_train"].astype(np.float32)), "dtype float32"),
        (lambda a: a.update(y_train=a["y_train"][:10]), "one label per image"),
        (lambda a: a.update(y_test=a["y_test"] + 10), "digits are 0 to 9"),
    ],
    ids=["missing-key", "wrong-shape", "wrong-dtype", "label-count", "label-range"],
)
def test_wrong_arrays_are_named(tmp_path, mnist_arrays, change, expected):
    arrays = _good(mnist_arrays)
    change(arrays)
    path = _save(tmp_path, **arrays)
    with pytest.raises(data.DataError, match=expected.replace("(", r"\(").replace(")", r"\)")) as error:
        data.load_mnist(path)
    assert str(path) in str(error.value)


def test_pickled_archive_is_refused(tmp_path, mnist_arrays):
    arrays = _good(mnist_arrays)
    arrays["x_train"] = np.array([object()] * 3, dtype=object)
    path = tmp_path / "pickled.npz"
    np.savez(path, **arrays)
    with pytest.raises(data.DataError, match="pickled"):
        data.load_mnist(path)


def _zip_of_npy(path, arrays: dict, versions: dict) -> None:
    """A compressed .npz of `arrays`, each member in the .npy format version given for it."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, array, version=versions.get(key, (1, 0)))
            archive.writestr(f"{key}.npy", buffer.getvalue())


def test_npz_members_read_as_numpy_reads_them(tmp_path, mnist_arrays):
    # Compressed (as Keras's mnist.npz), one member in Fortran order, one in .npy format 2.0.
    arrays = {key: value[:300] for key, value in mnist_arrays.items()}
    arrays["x_train"] = np.asfortranarray(arrays["x_train"])
    path = tmp_path / "deflated.npz"
    _zip_of_npy(path, arrays, {"y_train": (2, 0)})
    read = data.read_npz(path)
    with np.load(path) as archive:
        expected = {key: archive[key] for key in data.NPZ_KEYS}
    for key in data.NPZ_KEYS:
        assert read[key].dtype == expected[key].dtype and read[key].shape == expected[key].shape
        np.testing.assert_array_equal(read[key], expected[key])
    assert data.fingerprint(read) == data.fingerprint(expected)


def test_npy_format_it_does_not_read_is_named(tmp_path, mnist_arrays):
    arrays = {key: value[:300] for key, value in mnist_arrays.items()}
    path = tmp_path / "version3.npz"
    _zip_of_npy(path, arrays, {"x_test": (3, 0)})
    with pytest.raises(data.DataError, match=r"x_test.npy is in .npy format version 3.0.*numpy.savez"):
        data.load_mnist(path)


def test_npz_member_shorter_than_its_header_is_named(tmp_path, mnist_arrays):
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, mnist_arrays["x_test"][:300])
    path = tmp_path / "short.npz"
    _zip_of_npy(path, {key: mnist_arrays[key][:300] for key in ("x_train", "y_train", "y_test")}, {})
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("x_test.npy", buffer.getvalue()[:-1000])
    with pytest.raises(data.DataError, match=r"x_test.npy holds 234200 bytes of data where its header promises 235200"):
        data.load_mnist(path)


def test_npz_member_that_is_not_an_array_is_named(tmp_path):
    path = tmp_path / "text.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for key in data.NPZ_KEYS:
            archive.writestr(f"{key}.npy", "not an array")
    with pytest.raises(data.DataError, match=r"not a readable .npz archive \(the magic string.*Give Keras's mnist.npz"):
        data.load_mnist(path)


def test_load_mnist_gives_the_caller_writable_arrays(mnist_path):
    # As Keras's loader does; the arrays digitlab keeps for its runs (data.load) stay read-only.
    (X_train, y_train), (X_valid, y_valid) = data.load_mnist(mnist_path)
    assert all(array.flags.writeable for array in (X_train, y_train, X_valid, y_valid))
    X_train[0] = 0
    assert data.load_mnist(mnist_path)[0][0][0].max() == 255
    assert not data.load(mnist_path).arrays["x_train"].flags.writeable


@pytest.mark.parametrize("cut", [0, 100, 0.5])
def test_truncated_archive_is_reported(tmp_path, small_npz, cut):
    payload = small_npz.read_bytes()
    size = int(len(payload) * cut) if isinstance(cut, float) else cut
    path = tmp_path / "truncated.npz"
    path.write_bytes(payload[:size])
    with pytest.raises(data.DataError, match="truncated or corrupt|not a readable"):
        data.load_mnist(path)


def test_corrupt_bytes_are_reported(tmp_path, small_npz):
    payload = bytearray(small_npz.read_bytes())
    payload[len(payload) // 3 : len(payload) // 3 + 2000] = bytes(2000)
    path = tmp_path / "corrupt.npz"
    path.write_bytes(bytes(payload))
    with pytest.raises(data.DataError) as error:
        data.load_mnist(path)
    assert str(path) in str(error.value)


def test_text_file_is_reported(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("this is not MNIST")
    with pytest.raises(data.DataError, match="not a readable"):
        data.load_mnist(path)


def test_missing_path_is_reported(tmp_path):
    with pytest.raises(data.DataError, match="No MNIST data at"):
        data.load_mnist(tmp_path / "nowhere.npz")


def test_missing_path_from_environment_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "nowhere.npz"))
    with pytest.raises(data.DataError, match=data.ENV_VAR):
        data.load_mnist()


def test_idx_folder_problems(tmp_path, mnist_arrays):
    with pytest.raises(data.DataError, match="holds no train-images-idx3-ubyte"):
        data.load_mnist(tmp_path)
    for key, stem in data.IDX_FILES.items():
        _write_idx(tmp_path / stem, mnist_arrays[key][:10], compress=False)
    labels = tmp_path / data.IDX_FILES["y_test"]
    labels.write_bytes(labels.read_bytes()[:-3])
    with pytest.raises(data.DataError, match="truncated"):
        data.load_mnist(tmp_path)
    labels.write_bytes(b"\x00\x00\x0d\x01" + bytes(20))
    with pytest.raises(data.DataError, match="magic number"):
        data.load_mnist(tmp_path)
    (tmp_path / data.IDX_FILES["y_test"]).unlink()
    (tmp_path / f"{data.IDX_FILES['y_test']}.gz").write_bytes(b"not gzip at all")
    with pytest.raises(data.DataError, match="could not be read or unzipped"):
        data.load_mnist(tmp_path)


def test_preprocessing_as_in_the_book(mnist_arrays):
    X_valid, y_valid = mnist_arrays["x_test"], mnist_arrays["y_test"]
    inputs = data.to_inputs(X_valid)
    assert inputs.shape == (10000, 784) and inputs.dtype == np.float32
    assert inputs[0].min() == 0.0 and inputs[0].max() == 1.0
    np.testing.assert_allclose(inputs[0] * 255, X_valid[0].reshape(784))
    targets = data.to_targets(y_valid)
    assert targets.shape == (10000, 10)
    assert targets[0].tolist() == [0, 0, 0, 0, 0, 0, 0, 1, 0, 0]
    assert data.to_inputs(X_valid[:5], flat=False).shape == (5, 28, 28, 1)


def test_training_pixel_statistics(mnist_arrays):
    pixels = data.to_inputs(mnist_arrays["x_train"])
    assert abs(float(pixels.mean()) - 0.1307) < 1e-4
    assert abs(float(pixels.std()) - 0.3081) < 1e-4


def test_holdout_split_keeps_test_images_apart(mnist_arrays):
    (x_train, _), (x_valid, _), test = data.split(mnist_arrays, "holdout")
    assert len(x_train) == 50000 and len(x_valid) == 10000
    np.testing.assert_array_equal(x_valid, mnist_arrays["x_train"][50000:])
    assert len(test[0]) == 10000
    (x_train, _), (x_valid, _), test = data.split(mnist_arrays, "test", train_limit=1000)
    assert len(x_train) == 1000 and test is None
    np.testing.assert_array_equal(x_valid, mnist_arrays["x_test"])
    assert hashlib.sha256(x_valid.tobytes()).hexdigest() == MNIST_SHA256["x_test"]


def test_load_recorded_finds_a_runs_data_again(tmp_path, small_npz, mnist_path, monkeypatch):
    record = data.load(small_npz).record()
    assert record == {
        "path": str(small_npz.absolute()),
        "origin": "--data",
        "sha256": data.fingerprint(data.read_npz(small_npz)),
    }
    # The recorded path wins over DIGITLAB_DATA while it holds the same arrays.
    assert data.load_recorded(record).origin == "the run's record"
    # Moved: found through the usual search, checked against the recorded hashes.
    moved = tmp_path / "moved.npz"
    small_npz.rename(moved)
    monkeypatch.setenv(data.ENV_VAR, str(moved))
    found = data.load_recorded(record)
    assert found.path == moved and found.origin == data.ENV_VAR
    # Other data, wherever it is found, is refused with a sentence; an explicit path is checked too.
    monkeypatch.setenv(data.ENV_VAR, str(mnist_path))
    with pytest.raises(data.DataError, match="not the data this run was trained on"):
        data.load_recorded(record)
    with pytest.raises(data.DataError, match="not the data this run was trained on"):
        data.load_recorded(record, mnist_path)
    assert data.load_recorded(record, moved).sha256 == record["sha256"]
    # Gone, with nothing else to find: the message names the run's recorded path.
    monkeypatch.delenv(data.ENV_VAR)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # Empty; the real download fails offline.
    with pytest.raises(data.DataError, match=f"trained on the MNIST at {small_npz.absolute()}"):
        data.load_recorded(record)
    # A run from before data.json (an empty record): the usual search, unchecked.
    assert data.load_recorded({}, moved).path == moved
