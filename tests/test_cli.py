"""The `digitlab` command through its real entry point: exit codes, output, files, messages."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from digitlab import cli, config, errors, runs
from digitlab.cli import flags as cli_flags


def run_cli(capsys, *argv):
    code = cli.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_explore_prints_the_facts_and_writes_the_figures(capsys, tmp_path, mnist_path):
    code, out, _ = run_cli(capsys, "explore", "--out", tmp_path / "figures")
    assert code == 0
    assert "5 0 4 1 9 2 1 3 1 4 3 5" in out and "(60000, 28, 28) uint8" in out
    assert "5923 6742 5958 6131 5842 5421 5918 6265 5851 5949" in out
    for name in ("digits_grid.png", "digit_pixels.png", "valid_0.png", "class_counts.png"):
        assert (tmp_path / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_prints_config_summary_epochs_and_result(capsys, tmp_path, mnist_path):
    code, out, _ = run_cli(
        capsys, "train", "--epochs", "2", "--train-limit", "1000", "--seed", "3", "--runs-dir", tmp_path
    )
    assert code == 0
    assert "learning_rate" in out and "0.01" in out
    assert "50,890" in out
    assert "Epoch 2/2" in out and "val_accuracy" in out
    assert out.strip().splitlines()[-1].startswith("Done: shallow net, 2 epochs")


def test_predict_index_shows_digit_label_and_ten_probabilities(capsys, trained_run, mnist_path):
    code, out, _ = run_cli(capsys, "predict", trained_run, "--index", "0", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["label"] == 7
    assert len(result["probabilities"]) == 10
    assert abs(sum(result["probabilities"]) - 1.0) < 1e-4
    code, out, _ = run_cli(capsys, "predict", trained_run, "--index", "0")
    verdict = "right" if result["digit"] == 7 else "wrong"
    assert code == 0
    assert f"validation image 0: predicted {result['digit']}, true label 7 ({verdict})" in out


def test_runs_lists_saved_runs(capsys, trained_run):
    code, out, _ = run_cli(capsys, "runs", "--runs-dir", trained_run.parent)
    assert code == 0
    assert trained_run.name in out and "complete" in out and "shallow" in out
    code, out, _ = run_cli(capsys, "runs", "--runs-dir", trained_run.parent, "--json")
    (row,) = json.loads(out)
    assert row["epochs"] == 2 and row["status"] == "complete"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--learning-rate", "-1"], "learning_rate must be a number above 0"),
        (["train", "--epochs", "0"], "epochs must be a whole number"),
        (["train", "--units", "64", "64"], "give 1 value"),
        (["train", "--data", "/nonexistent/mnist.npz"], "No MNIST data at /nonexistent/mnist.npz"),
        (["train", "--resume", "/nonexistent/run"], "No run folder at /nonexistent/run"),
        (["train", "--config", "/nonexistent/config.json"], "No config file"),
        (["predict", "/nonexistent/run", "--index", "0"], "No run folder"),
        (["explore", "--data", "/etc/hostname"], "not a readable .npz archive"),
    ],
)
def test_bad_input_gets_one_clear_line(capsys, tmp_path, argv, message):
    code, out, err = run_cli(capsys, *argv, *(["--runs-dir", tmp_path] if argv[0] == "train" else []))
    assert code == cli.EXIT_BAD_INPUT
    assert message in err and err.startswith("error: ")
    assert "Traceback" not in err + out


def test_an_internal_error_is_shown_as_a_bug_not_as_bad_input(capsys, monkeypatch, tmp_path):
    """A ValueError from deep inside (NumPy, Keras, a bug of ours) is no user error: its traceback
    is shown, with a line saying it is a bug and where to report it, and the exit status is 1."""
    from digitlab import explore

    def broken(**kwargs):
        import numpy as np

        return np.zeros(3) + np.zeros(4)  # NumPy's own ValueError: operands could not be broadcast.

    monkeypatch.setattr(explore, "explore", broken)
    code, out, err = run_cli(capsys, "explore", "--out", tmp_path)
    assert code == cli.EXIT_BUG == 1
    assert "Traceback" in err and "operands could not be broadcast" in err
    assert "this is a bug in digitlab" in err and "issue tracker" in err
    assert not err.startswith("error: ")


def test_every_user_error_shares_one_base():
    from digitlab import atomic, config, data, imaging, runs
    from digitlab.engine import spec

    for kind in (
        atomic.WriteError,
        config.ConfigError,
        data.DataError,
        imaging.ImageError,
        imaging.ImageTooLargeError,
        runs.RunError,
        errors.SweepError,
        spec.UnsupportedModel,
    ):
        assert issubclass(kind, errors.DigitlabError), kind
    with pytest.raises(config.ConfigError) as raised:
        config.TrainConfig(learning_rate=-1.0).resolved()
    assert raised.value.field == "learning_rate"


def test_predict_bad_index_and_incomplete_run(capsys, trained_run, tmp_path):
    code, _, err = run_cli(capsys, "predict", trained_run, "--index", "10000")
    assert code == 2 and "0 to 9999" in err
    code, _, err = run_cli(capsys, "predict", trained_run)
    assert code == 2 and "Say what to predict" in err
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text((trained_run / "config.json").read_text())
    code, _, err = run_cli(capsys, "predict", partial, "--index", "0")
    assert code == 2 and "has no trained model" in err
    code, _, err = run_cli(capsys, "train", "--resume", trained_run)
    assert code == 2 and "already complete" in err


def test_unknown_flag_and_choice_are_rejected_by_argparse(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["train", "--model", "resnet"])
    assert stop.value.code == 2
    assert "invalid choice: 'resnet'" in capsys.readouterr().err


def test_help_shows_every_default(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # As read, whatever the terminal's width.
    assert "(default: 128)" in out and "shallow 0.01" in out and "shallow 200" in out


@pytest.mark.heavy
def test_console_script_and_python_m_agree(tmp_path):
    script = os.path.join(os.path.dirname(sys.executable), "digitlab")
    for command in ([script, "--help"], [sys.executable, "-m", "digitlab", "--help"]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "train" in done.stdout


@pytest.mark.heavy
def test_bad_input_in_a_real_process_has_no_traceback(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "digitlab", "train", "--batch-size", "0", "--runs-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: batch_size must be") and "Traceback" not in done.stderr
    assert not any(tmp_path.iterdir())
    assert runs.list_runs(tmp_path) == []


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_the_exit_handlers_ends_the_process_without_a_traceback(tmp_path, number):
    # The command is done (its output printed); an exit handler, as JAX's and Ray's are, is still running
    # when the signal comes: the process ends at once by the signal, and no KeyboardInterrupt's traceback.
    # SIGTERM raises KeyboardInterrupt where a command has said so (train, evaluate, sweep): as here.
    program = (
        "import atexit, sys, time\n"
        "from digitlab import interrupts\n"
        "interrupts.sigterm_as_ctrl_c()\n"
        "def slow():\n"
        "    print('in the exit handler', file=sys.stderr, flush=True)\n"
        "    time.sleep(60)\n"
        "atexit.register(slow)\n"
        "from digitlab import __main__\n"
        f"sys.argv = ['digitlab', 'runs', '--runs-dir', {str(tmp_path)!r}]\n"
        "__main__.run()\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", program], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stderr is not None
    assert process.stderr.readline() == "in the exit handler\n"
    started = time.monotonic()
    process.send_signal(number)
    out, err = process.communicate(timeout=30)
    assert process.returncode == -number
    assert time.monotonic() - started < 10
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert out.startswith("No runs in"), "the command's output is flushed before the exit handlers run"


def test_train_flags_are_generated_from_the_config_fields(capsys):
    parser = cli.build_parser()
    assert cli_flags.config_from_args(parser.parse_args(["train"])) == config.TrainConfig()
    every = [
        "--model",
        "deep",
        "--units",
        "32",
        "16",
        "8",
        "--filters",
        "--activation",
        "tanh",
        "--no-batch-norm",
        "--dropout",
        "0.1",
        "--loss",
        "mean_squared_error",
        "--optimizer",
        "rmsprop",
        "--learning-rate",
        "0.5",
        "--momentum",
        "0.5",
        "--batch-size",
        "64",
        "--epochs",
        "7",
        "--seed",
        "3",
        "--seeds",
        "2",
        "--validation",
        "holdout",
        "--engine",
        "fit",
        "--train-limit",
        "99",
        "--checkpoint-every",
        "0",
        "--tensorboard",
    ]
    every.remove("--filters")
    parsed = cli_flags.config_from_args(parser.parse_args(["train", *every]))
    assert parsed == config.TrainConfig(
        model="deep",
        units=[32, 16, 8],
        activation="tanh",
        batch_norm=False,
        dropout=[0.1],
        loss="mean_squared_error",
        optimizer="rmsprop",
        learning_rate=0.5,
        momentum=0.5,
        batch_size=64,
        epochs=7,
        seed=3,
        seeds=2,
        validation="holdout",
        engine="fit",
        train_limit=99,
        checkpoint_every=0,
        tensorboard=True,
    )
    # Every field is a flag (a field added to TrainConfig needs nothing else to reach the command line).
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    shown = capsys.readouterr().out
    for field in dataclasses.fields(config.TrainConfig):
        assert f"--{field.name.replace('_', '-')} " in shown and field.metadata["help"][:30] in " ".join(shown.split())
    assert config.field_type("units") == (int, True) and config.field_type("learning_rate") == (float, False)
    assert config.field_type("batch_norm") == (bool, False) and config.field_type("model") == (str, False)


def test_bench_flags_share_the_config_fields_with_the_benchs_defaults():
    from digitlab.bench import runner as bench

    args = cli.build_parser().parse_args(["bench"])
    assert (args.epochs, args.seeds, args.train_limit) == (bench.DEFAULTS["epochs"], bench.DEFAULTS["seeds"], None)
    assert args.compare_epochs == config.MODEL_DEFAULTS["shallow"]["epochs"]
    args = cli.build_parser().parse_args(["bench", "--epochs", "2", "--seeds", "4", "--train-limit", "500"])
    assert (args.epochs, args.seeds, args.train_limit) == (2, 4, 500)


def test_a_flag_beside_config_overrides_the_files_value_and_says_so(capsys, tmp_path, trained_run, mnist_path):
    saved = json.loads((trained_run / "config.json").read_text())
    assert saved["epochs"] == 2 and saved["train_limit"] == 3000
    code, out, err = run_cli(
        capsys,
        "train",
        "--config",
        trained_run / "config.json",
        "--epochs",
        "1",
        "--train-limit",
        "500",
        "--runs-dir",
        tmp_path,
    )
    assert code == 0, err
    assert out.splitlines()[0] == (
        f"digitlab: the flags given beside --config override {trained_run / 'config.json'}'s values: "
        "epochs = 1, train_limit = 500"
    )
    (run_dir,) = tmp_path.iterdir()
    written = json.loads((run_dir / "config.json").read_text())
    assert written == dict(saved, epochs=1, train_limit=500)
    assert "Epoch 1/1" in out and "Epoch 2/" not in out
    # Without flags beside it, the file is run as it is, and nothing is said about overriding.
    args = cli.build_parser().parse_args(["train", "--config", str(trained_run / "config.json")])
    assert cli_flags.config_from_args(args) == config.TrainConfig(**saved) and cli_flags.override_note(args) is None


def test_a_model_beside_config_brings_its_own_defaults(trained_run):
    args = cli.build_parser().parse_args(
        ["train", "--config", str(trained_run / "config.json"), "--model", "deep", "--no-tensorboard"]
    )
    deep = cli_flags.config_from_args(args).resolved()
    assert (deep.model, deep.units, deep.optimizer, deep.batch_norm) == ("deep", [64, 64, 64], "adam", True)
    assert (deep.seed, deep.train_limit, deep.epochs) == (1, 3000, 2)  # Chosen in the file, kept.
    assert cli_flags.flags_given(args) == ["model", "tensorboard"]


@pytest.mark.heavy
def test_serve_with_a_token_on_loopback_does_not_claim_other_machines_reach_it(tmp_path):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "digitlab",
            "serve",
            "--port",
            str(port),
            "--token",
            "operator-token-0123456789",
            "--runs-dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        lines = []
        for line in server.stdout:
            lines.append(line)
            if "view-only" in line:
                break
    finally:
        server.terminate()
        server.wait(timeout=30)
    shown = "".join(lines)
    assert "Serving on 127.0.0.1: only this machine can reach it, and every request needs a token." in shown
    assert "other machines" not in shown
