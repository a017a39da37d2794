"""The bad-input sweep: malformed data files, flags and run folders a user (or an attacker) could
give. Each must end in one clear `error:` line and exit status 2, with no traceback, and must
leave every existing run and file exactly as it was. (Images and HTTP requests are swept in
test_imaging.py and test_serving.py.)
"""

from __future__ import annotations

import json
import shutil
import zipfile

import pytest

from digitlab import cli


@pytest.fixture
def run_copy(tmp_path, trained_run):
    """A copy of the trained run to damage; the original must stay as it was."""
    shutil.copytree(trained_run, tmp_path / "run")
    return tmp_path / "run"


def snapshot(folder):
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def expect_clear_error(capsys, argv, message):
    code = cli.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    assert code == 2, captured.out + captured.err
    assert captured.err.startswith("error: ") and message in captured.err, captured.err
    assert "Traceback" not in captured.out + captured.err


@pytest.mark.parametrize(
    "contents, message",
    [
        (None, "No MNIST data at"),
        (b"", "it is empty"),
        (b"\x00" * 1000, "not a zip file"),
        (b"PK\x03\x04garbage", "truncated or corrupt"),
        ("folder", "holds no train-images-idx3-ubyte"),
    ],
    ids=["missing", "empty", "zeros", "fake-zip", "empty-folder"],
)
def test_bad_data_from_the_environment(capsys, tmp_path, monkeypatch, contents, message):
    path = tmp_path / "mnist.npz"
    if contents == "folder":
        path.mkdir()
    elif contents is not None:
        path.write_bytes(contents)
    monkeypatch.setenv("DIGITLAB_DATA", str(path))
    expect_clear_error(capsys, ["explore", "--out", tmp_path / "figures"], message)
    expect_clear_error(capsys, ["train", "--epochs", "1", "--runs-dir", tmp_path / "runs"], message)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--learning-rate", "nan"], "learning_rate must be a number above 0"),
        (["--learning-rate", "inf"], "learning_rate must be a number above 0"),
        (["--epochs", "-5"], "epochs must be a whole number"),
        (["--epochs", "10000000"], "epochs must be a whole number"),
        (["--batch-size", "100000"], "batch_size must be a whole number"),
        (["--seeds", "0"], "seeds must be a whole number"),
        (["--seed", "-1"], "seed must be a whole number"),
        (["--dropout", "0.5"], "has 0 Dropout layer(s)"),
        (["--model", "deep", "--dropout", "1.0"], "each at least 0 and below 1"),
        (["--model", "lenet", "--filters", "32"], "takes 2 filter count(s)"),
        (["--units", "-64"], "units must be whole numbers"),
        (["--train-limit", "0"], "train_limit must be a positive whole number"),
        (["--checkpoint-every", "-2"], "checkpoint_every must be 0"),
        (["--momentum", "1.5"], "momentum must be at least 0 and below 1"),
        (["--model", "lenet", "--seeds", "3"], "--seeds 3 trains networks side by side"),
        (["--model", "lenet", "--engine", "fast"], "--engine fast cannot train the lenet net"),
    ],
)
def test_bad_flag_values(capsys, tmp_path, mnist_path, flags, message):
    expect_clear_error(
        capsys,
        ["train", *flags, "--epochs" if "--epochs" not in flags else "--seed", "1", "--runs-dir", tmp_path],
        message,
    )
    assert not any(path for path in tmp_path.iterdir() if (path / "model.keras").exists())


@pytest.mark.parametrize("flags", [["--epochs", "ten"], ["--model"], ["--learning-rate", "0,01"], ["--colour", "red"]])
def test_malformed_flags_are_refused_by_the_parser(capsys, flags):
    with pytest.raises(SystemExit) as stop:
        cli.main(["train", *flags])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "usage: digitlab" in err and "error:" in err and "Traceback" not in err


def _damage(run_dir, how):
    if how == "no-config":
        (run_dir / "config.json").unlink()
    elif how == "config-not-json":
        (run_dir / "config.json").write_text("{ this is not json")
    elif how == "config-unknown-field":
        values = json.loads((run_dir / "config.json").read_text())
        (run_dir / "config.json").write_text(json.dumps(dict(values, colour="red")))
    elif how == "config-bad-value":
        values = json.loads((run_dir / "config.json").read_text())
        (run_dir / "config.json").write_text(json.dumps(dict(values, learning_rate=-3)))
    elif how == "newer-version":
        values = json.loads((run_dir / "status.json").read_text())
        (run_dir / "status.json").write_text(json.dumps(dict(values, format_version=99)))
    elif how == "no-model":
        (run_dir / "model.keras").unlink()
    elif how == "model-garbage":
        (run_dir / "model.keras").write_bytes(b"\x00not a keras file" * 50)
    elif how == "model-truncated":
        payload = (run_dir / "model.keras").read_bytes()
        (run_dir / "model.keras").write_bytes(payload[: len(payload) // 2])
    elif how == "model-with-code":
        _write_lambda_model(run_dir / "model.keras")


def _write_lambda_model(path):
    """A .keras file whose Lambda layer carries Python code, which safe mode must refuse to run."""
    import keras

    model = keras.Sequential(
        [keras.Input(shape=(784,)), keras.layers.Lambda(lambda x: x * 2), keras.layers.Dense(10, activation="softmax")]
    )
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        assert "lambda" in archive.read("config.json").decode().lower()


@pytest.mark.parametrize(
    "how, message",
    [
        ("no-config", "not a digitlab run folder"),
        ("config-not-json", "damaged or not JSON"),
        ("config-unknown-field", "Unknown config field(s) colour"),
        ("config-bad-value", "learning_rate must be a number above 0"),
        ("newer-version", "written by a newer digitlab"),
        ("no-model", "has no trained model"),
        ("model-garbage", "could not be loaded as a Keras model"),
        ("model-truncated", "could not be loaded as a Keras model"),
        ("model-with-code", "could not be loaded as a Keras model"),
    ],
)
def test_damaged_run_folders(capsys, run_copy, trained_run, how, message):
    run_dir = run_copy
    _damage(run_dir, how)
    before = snapshot(run_dir)
    original = snapshot(trained_run)
    expect_clear_error(capsys, ["predict", run_dir, "--index", "3"], message)
    assert snapshot(run_dir) == before and snapshot(trained_run) == original


def test_unsafe_model_is_refused_with_its_reason(capsys, run_copy):
    _write_lambda_model(run_copy / "model.keras")
    expect_clear_error(capsys, ["predict", run_copy, "--index", "3"], "safe_mode")


@pytest.mark.parametrize(
    "how, message",
    [
        ("missing", "no checkpoint at"),
        ("garbage", "is damaged"),
        ("other-config", "does not match this model"),
    ],
)
def test_bad_checkpoints_cannot_be_resumed(capsys, run_copy, how, message):
    run_dir = run_copy
    status = json.loads((run_dir / "status.json").read_text())
    (run_dir / "status.json").write_text(json.dumps(dict(status, status="interrupted")))
    if how == "missing":
        (run_dir / "checkpoint.npz").unlink()
    elif how == "garbage":
        (run_dir / "checkpoint.npz").write_bytes(b"PK\x03\x04" + bytes(500))
    else:
        values = json.loads((run_dir / "config.json").read_text())
        (run_dir / "config.json").write_text(json.dumps(dict(values, units=[32])))
    before = snapshot(run_dir)
    expect_clear_error(capsys, ["train", "--resume", run_dir], message)
    assert snapshot(run_dir) == before


def test_runs_listing_survives_damaged_folders(capsys, tmp_path, trained_run):
    shutil.copytree(trained_run, tmp_path / "good")
    shutil.copytree(trained_run, tmp_path / "bad-history")
    (tmp_path / "bad-history" / "history.json").write_text("[1, 2")
    shutil.copytree(trained_run, tmp_path / "bad-status")
    (tmp_path / "bad-status" / "status.json").write_bytes(b"\xff\xfe")
    (tmp_path / "stray-file.txt").write_text("not a run")
    assert cli.main(["runs", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "good" in out and "bad-history" in out and "unknown" in out
