"""The bad-input sweep: malformed data files, flags and run folders a user (or an attacker) could
give. Each must end in one clear `error:` line and exit status 2, with no traceback, and must
leave every existing run and file exactly as it was. (Images and HTTP requests are swept in
test_imaging.py and test_serving.py.)
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from digitlab import atomic, cli, runs


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
    # digitlab bench says so before any worker starts, and the last bench's results stay as they were.
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "bench.json").write_text('{"last": "run"}')
    for model, length in (("deep", ["--epochs", "1"]), ("lenet", ["--steps", "6"])):
        expect_clear_error(capsys, ["bench", "--model", model, *length, "--out", tmp_path / "bench"], message)
    assert snapshot(tmp_path / "bench") == {"bench.json": b'{"last": "run"}'}


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


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--model", "lenet", "--epochs", "2"],
            "--epochs does not apply to --model lenet, whose bench times fit's --steps: leave it out",
        ),
        (["--model", "lenet", "--seeds", "2", "--profile"], "--seeds, --profile do not apply to --model lenet"),
        (["--model", "lenet", "--compare-seeds", "2"], "--compare-seeds does not apply to --model lenet"),
        (
            ["--model", "deep", "--steps", "40"],
            "--steps does not apply to --model deep, whose bench times epochs (--epochs): leave it out, or bench "
            "--model lenet.",
        ),
        (["--steps", "40"], "--steps does not apply to --model shallow"),
    ],
)
def test_bench_flags_of_the_other_net_are_refused_not_ignored(capsys, tmp_path, flags, message):
    """`digitlab bench --model lenet` times fit's steps: the epoch rows' flags would be ignored there (and --steps
    by the epoch rows), so they are refused before anything runs or is written."""
    expect_clear_error(capsys, ["bench", *flags, "--out", tmp_path / "bench"], message)
    assert not (tmp_path / "bench").exists()


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


# Values read from a file are checked as strictly as the flags: a string is not a boolean or a
# number, and a list, an object or null is not a model name (issue 22, item 3).
STRICT_CASES = [
    ({"batch_norm": "no"}, "batch_norm must be true or false, got 'no'."),
    ({"record_epochs": "false"}, "record_epochs must be true or false, got 'false'."),
    ({"tensorboard": "false"}, "tensorboard must be true or false, got 'false'."),
    ({"tensorboard": 0}, "tensorboard must be true or false, got 0."),
    ({"model": ["shallow"]}, "Unknown model ['shallow']. Choose one of: shallow, intermediate, deep, lenet."),
    ({"model": {}}, "Unknown model {}. Choose one of:"),
    ({"model": None}, "Unknown model None. Choose one of:"),
    ({"epochs": "2"}, "epochs must be a whole number from 1 to 100000, got '2'."),
    ({"epochs": 2.0}, "epochs must be a whole number from 1 to 100000, got 2.0."),
    ({"units": 64}, "units must be whole numbers from 1 to 100000, got 64."),
    ({"units": ["64"]}, "units must be whole numbers from 1 to 100000, got ['64']."),
    ({"learning_rate": "0.1"}, "learning_rate must be a number above 0 and at most 10, got '0.1'."),
    ({"momentum": True}, "momentum must be at least 0 and below 1, got True."),
    ({"seed": True}, "seed must be a whole number from 0 to 2147483647, got True."),
    ({"optimizer": ["sgd"]}, "Unknown optimizer ['sgd']. Choose one of: sgd, adam, rmsprop."),
]


@pytest.mark.parametrize("values, message", STRICT_CASES, ids=[str(values) for values, _ in STRICT_CASES])
def test_config_files_are_typed_as_strictly_as_the_flags(capsys, tmp_path, trained_run, values, message):
    from digitlab import config

    settings = dict(json.loads((trained_run / "config.json").read_text()), **values)
    (tmp_path / "config.json").write_text(json.dumps(settings))
    expect_clear_error(
        capsys, ["train", "--config", tmp_path / "config.json", "--runs-dir", tmp_path / "runs"], message
    )
    assert not (tmp_path / "runs").exists()
    # The same rules, in the same place, for a request's values (the page builds its configs this way).
    with pytest.raises(config.ConfigError) as raised:
        config.TrainConfig.from_dict(values)
    assert str(raised.value).startswith(message)
    assert raised.value.field == next(iter(values))


@pytest.mark.parametrize(
    "flag, values", [(["--epochs", "0"], {"epochs": "2"}), (["--learning-rate", "-1"], {"learning_rate": "0.1"})]
)
def test_a_bad_file_value_gets_the_flags_sentence(capsys, tmp_path, trained_run, flag, values):
    (tmp_path / "config.json").write_text(json.dumps(values))
    from_flag = cli.main(["train", *flag, "--runs-dir", str(tmp_path / "runs")]), capsys.readouterr().err
    from_file = cli.main(["train", "--config", str(tmp_path / "config.json")]), capsys.readouterr().err
    assert from_flag[0] == from_file[0] == 2
    assert from_flag[1].split(", got ")[0] == from_file[1].split(", got ")[0], (from_flag, from_file)


@pytest.mark.parametrize("values, message", STRICT_CASES[:8], ids=[str(values) for values, _ in STRICT_CASES[:8]])
def test_a_resumed_runs_config_is_typed_strictly(capsys, run_copy, values, message):
    status = json.loads((run_copy / "status.json").read_text())
    (run_copy / "status.json").write_text(json.dumps(dict(status, status="interrupted")))
    settings = json.loads((run_copy / "config.json").read_text())
    (run_copy / "config.json").write_text(json.dumps(dict(settings, **values)))
    before = snapshot(run_copy)
    expect_clear_error(capsys, ["train", "--resume", run_copy], message)
    assert snapshot(run_copy) == before


def test_resuming_with_epochs_below_the_checkpoint_changes_nothing(capsys, run_copy):
    status = json.loads((run_copy / "status.json").read_text())
    (run_copy / "status.json").write_text(json.dumps(dict(status, status="interrupted")))
    settings = json.loads((run_copy / "config.json").read_text())
    (run_copy / "config.json").write_text(json.dumps(dict(settings, epochs=1)))
    before = snapshot(run_copy)
    expect_clear_error(
        capsys, ["train", "--resume", run_copy], "is 1, below the 2 epochs its checkpoint has already trained"
    )
    assert snapshot(run_copy) == before
    assert json.loads((run_copy / "status.json").read_text())["status"] == "interrupted"


# The smaller findings of issue 22 (item 5).


def _symlink_loop(tmp_path):
    (tmp_path / "loopA").symlink_to(tmp_path / "loopB")
    (tmp_path / "loopB").symlink_to(tmp_path / "loopA")
    return tmp_path / "loopA"


def test_a_symlink_loop_is_named_as_one(capsys, tmp_path, trained_run, mnist_path):
    loop = _symlink_loop(tmp_path)
    message = "is a symbolic link that leads back to itself (a loop)"
    expect_clear_error(capsys, ["runs", "--runs-dir", loop], message)
    expect_clear_error(capsys, ["runs", "--runs-dir", loop, "--json"], message)
    expect_clear_error(capsys, ["train", "--epochs", "1", "--runs-dir", loop], message)
    expect_clear_error(capsys, ["evaluate", loop], message)
    expect_clear_error(capsys, ["evaluate", trained_run, "--out", loop], message)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["loopA", "loopB"]


def test_runs_tells_an_unusable_folder_from_an_empty_one(capsys, tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    expect_clear_error(capsys, ["runs", "--runs-dir", tmp_path / "a-file"], "is a file, not a runs folder")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    expect_clear_error(capsys, ["runs", "--runs-dir", tmp_path / "dangling"], "which does not exist")
    # A folder that is not there yet has no runs: that is no error (a first `digitlab runs`).
    assert cli.main(["runs", "--runs-dir", str(tmp_path / "not-yet")]) == 0
    assert "No runs in" in capsys.readouterr().out


def test_runs_json_shows_a_non_utf8_folder_name_as_backslash_escapes(capsys, tmp_path, trained_run):
    import os

    shutil.copytree(trained_run, os.fsdecode(bytes(tmp_path) + b"/caf\xe9-run"))
    shutil.copytree(trained_run, tmp_path / "数字")
    assert cli.main(["runs", "--runs-dir", str(tmp_path), "--json"]) == 0
    out = capsys.readouterr().out
    names = [row["run"] for row in json.loads(out)]
    assert names == ["caf\\xe9-run", "数字"]
    for name in names:
        name.encode("utf-8")  # No lone surrogates: each name is text any JSON reader accepts.
    # The escapes give the folder's bytes back (as `printf '%b'` does).
    assert names[0].encode("ascii").decode("unicode_escape").encode("latin-1") == b"caf\xe9-run"
    assert cli.main(["runs", "--runs-dir", str(tmp_path)]) == 0
    assert "caf\\xe9-run" in capsys.readouterr().out


@pytest.fixture
def read_only_run(tmp_path, trained_run):
    """A copy of the trained run, interrupted, on a tmpfs remounted read-only (root can mount, as in CI)."""
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()}); run as root")
    try:
        shutil.copytree(trained_run, disk / "run")
        status = json.loads((disk / "run" / "status.json").read_text())
        (disk / "run" / "status.json").write_text(json.dumps(dict(status, status="interrupted")))
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        yield disk / "run"
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.parametrize(
    "argv, advice",
    [
        (["evaluate"], "digitlab evaluate RUN --out DIR"),
        (["report"], "digitlab report RUN --out FILE"),
        (["train", "--resume"], "chmod u+w"),
    ],
)
def test_a_read_only_run_gets_advice_its_command_can_follow(capsys, read_only_run, mnist_path, argv, advice):
    before = snapshot(read_only_run)
    code = cli.main([*argv, str(read_only_run)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: Could not write") and "not writable" in err, err
    assert advice in err and "--runs-dir" not in err and "Traceback" not in err
    assert snapshot(read_only_run) == before


def test_a_report_into_a_folder_that_takes_no_files_names_that_folder(capsys, trained_run):
    """/proc exists but takes no new files: the message names the folder the user gave, not the hidden file
    that probed it, and says what to do."""
    code = cli.main(["report", str(trained_run), "--out", "/proc/report.html"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: Could not write in /proc: it takes no new files"), err
    assert "probe" not in err and "digitlab report RUN --out FILE" in err and "Traceback" not in err
    assert not Path("/proc/report.html").exists()


def test_a_missing_folder_is_named_as_missing(tmp_path):
    with pytest.raises(atomic.WriteError, match=r"Could not write in .*/gone: there is no such folder") as raised:
        runs.check_writable(tmp_path / "gone")
    assert "probe" not in str(raised.value) and "Choose a folder you can write in." in str(raised.value)


def test_an_evaluation_stopped_by_sigterm_writes_none_of_its_files(capsys, monkeypatch, run_copy, small_npz):
    """A real SIGTERM, sent by the process to itself just after the second figure is drawn (on 100
    real test images, to keep it quick)."""
    import os
    import signal

    from digitlab import plots

    before = snapshot(run_copy)
    drawn = []
    real_figure_png = plots.figure_png

    def figure_png_then_sigterm(*args, **kwargs):
        drawn.append(real_figure_png(*args, **kwargs))
        if len(drawn) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return drawn[-1]

    monkeypatch.setattr(plots, "figure_png", figure_png_then_sigterm)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        code = cli.main(["evaluate", str(run_copy), "--data", str(small_npz)])
    finally:
        signal.signal(signal.SIGTERM, previous)
    captured = capsys.readouterr()
    assert code == cli.EXIT_INTERRUPTED and len(drawn) == 2, captured.err
    assert "Traceback" not in captured.err
    assert snapshot(run_copy) == before  # No figure, no evaluation.json, no temporary file.


def test_a_sigterm_while_the_files_are_renamed_waits_for_all_of_them(monkeypatch, tmp_path):
    """A real SIGTERM arriving between evaluate's renames is held until the last one: all files are
    there, then it stops the command (as `evaluate`'s handler does, with KeyboardInterrupt)."""
    import os
    import signal

    from digitlab import evaluation

    real_replace = os.replace
    renamed = []

    def replace_with_sigterm(source, target):
        if not renamed:
            os.kill(os.getpid(), signal.SIGTERM)
        real_replace(source, target)
        renamed.append(os.path.basename(target))

    def stop(signum, frame):
        raise KeyboardInterrupt

    files = {tmp_path / name: name.encode() for name in ("confusion.png", "mistakes.png", "evaluation.json")}
    (tmp_path / "evaluation.json").write_text("the previous evaluation")
    monkeypatch.setattr(os, "replace", replace_with_sigterm)
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        with pytest.raises(KeyboardInterrupt):
            evaluation.write_together(files)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert renamed == ["confusion.png", "mistakes.png", "evaluation.json"]
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == {
        path.name: payload for path, payload in files.items()
    }


def test_serve_on_a_port_in_use_says_so_at_once(capsys, tmp_path):
    import socket
    import time

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        code = cli.main(["serve", "--port", str(port), "--runs-dir", str(tmp_path)])
        seconds = time.monotonic() - started
    captured = capsys.readouterr()
    assert code == 2 and f"Port {port} on 127.0.0.1 is already in use" in captured.err and "--port N" in captured.err
    assert "serving" not in captured.out and "Traceback" not in captured.err
    assert seconds < 2, seconds
    expect_clear_error(capsys, ["serve", "--host", "no-such-host.invalid"], "Cannot listen on --host no-such-host")


def test_settings_beside_resume_are_refused_not_ignored(capsys, run_copy):
    status = json.loads((run_copy / "status.json").read_text())
    (run_copy / "status.json").write_text(json.dumps(dict(status, status="interrupted")))
    before = snapshot(run_copy)
    expect_clear_error(
        capsys,
        ["train", "--resume", run_copy, "--epochs", "5", "--no-tensorboard"],
        "so --epochs, --tensorboard cannot be given with it",
    )
    expect_clear_error(capsys, ["train", "--resume", run_copy, "--config", run_copy / "config.json"], "--config")
    assert snapshot(run_copy) == before


@pytest.mark.parametrize(
    "name, text",
    [
        ("metrics.json", "[1]"),
        ("metrics.json", '{"wall_time_s": "12", "engine": ["fast"], "finished": 3}'),
        ("history.json", '{"seeds": ["x"]}'),
        ("history.json", '{"seeds": [{"val_accuracy": ["0.9", true]}]}'),
        ("history.json", '{"seeds": [{"val_accuracy": 0.9}]}'),
    ],
)
def test_runs_listing_survives_wrongly_typed_files(capsys, tmp_path, trained_run, name, text):
    shutil.copytree(trained_run, tmp_path / "good")
    shutil.copytree(trained_run, tmp_path / "odd")
    (tmp_path / "odd" / name).write_text(text)
    assert cli.main(["runs", "--runs-dir", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "good" in captured.out and "odd" in captured.out and "Traceback" not in captured.err
    assert cli.main(["runs", "--runs-dir", str(tmp_path), "--json"]) == 0
    good, odd = json.loads(capsys.readouterr().out)
    assert good["epochs"] == 2 and odd["run"] == "odd"
    if name == "history.json":
        assert (odd["epochs"], odd["best_val_accuracy"], odd["final_val_accuracy"]) == (0, None, None)
    else:
        assert (odd["engine"], odd["wall_time_s"], odd["date"]) == (None, None, None)
