"""`digitlab sweep`: parsing and planning (fast), bad inputs (fast, no Ray started), and real Ray
(heavy): an embedded sweep whose histories equal `digitlab train`'s, a sweep on a Ray head started
here with `ray start --head`, and a driver SIGKILLed and interrupted at random moments, then resumed.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from digitlab import cli, config, data, plots, runs, training
from digitlab.plots import sweep as plots_sweep
from digitlab.sweep import plan as sweep_plan
from digitlab.sweep import results as sweep_results
from digitlab.sweep import state as sweep_state
from digitlab.sweep import trial as sweep_trial

# The sweep every Ray test compares against: 2 learning rates x 2 seeds of the shallow net.
SWEEP_ARGS = [
    "--grid",
    "learning_rate=0.05,0.5",
    "--seeds",
    "2",
    "--seed",
    "3",
    "--epochs",
    "6",
    "--train-limit",
    "6000",
]
ENVIRONMENT = dict(os.environ, PYTHONUNBUFFERED="1")


def run_cli(capsys, *argv):
    code = cli.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# Parsing and planning.


def test_grid_values_take_each_fields_type():
    grid = sweep_plan.parse_grid(
        [
            "learning_rate=0.01,0.1",
            "activation=sigmoid,relu",
            "units=64 64,128 32",
            "batch-norm=true,no",
            "batch_size=32",
        ]
    )
    assert grid == {
        "learning_rate": [0.01, 0.1],
        "activation": ["sigmoid", "relu"],
        "units": [[64, 64], [128, 32]],
        "batch_norm": [True, False],
        "batch_size": [32],
    }


@pytest.mark.parametrize(
    "spec, message",
    [
        ("learnig_rate=0.1", "unknown field 'learnig_rate'"),
        ("learning_rate", "not of the form FIELD=V1,V2"),
        ("learning_rate=", "empty value"),
        ("learning_rate=0.1,,0.2", "empty value"),
        ("learning_rate=fast", "learning_rate takes numbers; 'fast' is not one"),
        ("batch_size=12.5", "batch_size takes whole numbers"),
        ("batch_norm=maybe", "batch_norm takes true or false"),
        ("seed=1,2", "use --seed FIRST and --seeds N"),
    ],
)
def test_bad_grids_say_what_is_wrong(spec, message):
    with pytest.raises(sweep_plan.SweepError, match=message):
        sweep_plan.parse_grid([spec])


@pytest.mark.parametrize(
    "spec, message",
    [
        ("learning_rate=normal:0:1", "unknown distribution 'normal'"),
        ("learning_rate=loguniform:0:1", "loguniform needs LOW above 0"),
        ("learning_rate=uniform:1:0.5", "LOW must be below HIGH"),
        ("learning_rate=uniform:1", "write learning_rate=uniform:LOW:HIGH"),
        ("batch_size=uniform:1:5", "batch_size takes int:LOW:HIGH or choice"),
        ("activation=int:1:5", "activation takes choice"),
    ],
)
def test_bad_samples_say_what_is_wrong(spec, message):
    with pytest.raises(sweep_plan.SweepError, match=message):
        sweep_plan.parse_sample([spec])


def test_samples_are_drawn_within_their_ranges_and_repeatably():
    distributions = sweep_plan.parse_sample(
        [
            "learning_rate=loguniform:1e-3:1",
            "batch_size=int:16:256",
            "activation=choice:sigmoid,relu,tanh",
            "momentum=uniform:0:0.9",
        ]
    )
    drawn = sweep_plan.draw_samples(distributions, 200, seed=7)
    assert drawn == sweep_plan.draw_samples(distributions, 200, seed=7)
    assert drawn != sweep_plan.draw_samples(distributions, 200, seed=8)
    rates = [values["learning_rate"] for values in drawn]
    assert 1e-3 <= min(rates) and max(rates) <= 1 and min(rates) < 0.01 and max(rates) > 0.1  # Log-spread.
    assert {values["batch_size"] for values in drawn} <= set(range(16, 257))
    assert {values["activation"] for values in drawn} == {"sigmoid", "relu", "tanh"}
    assert all(0 <= values["momentum"] <= 0.9 for values in drawn)


def test_the_plan_is_the_product_of_the_grid_times_the_samples_times_the_seeds():
    base = config.TrainConfig(epochs=2, train_limit=100)
    grid = {"activation": ["sigmoid", "relu"], "units": [[32], [64]]}
    samples = sweep_plan.draw_samples(sweep_plan.parse_sample(["learning_rate=uniform:0.01:0.1"]), 3, seed=0)
    trials = sweep_plan.plan_trials(base, grid, samples, seeds=[5, 6])
    assert len(trials) == 3 * 4 * 2
    assert [trial["seed"] for trial in trials[:4]] == [5, 6, 5, 6]
    assert [trial["configuration"] for trial in trials[:4]] == [0, 0, 1, 1]
    first = trials[0]
    assert first["params"] == {"activation": "sigmoid", "units": [32], "learning_rate": samples[0]["learning_rate"]}
    assert (
        first["config"]["epochs"] == 2
        and first["config"]["seeds"] == 1
        and first["config"]["loss"] == "mean_squared_error"
    )
    assert first["run"].startswith("t000-sigmoid-32-0.0") and first["run"].endswith("-seed5")
    assert len({trial["run"] for trial in trials}) == len(trials)


def test_a_value_train_would_refuse_is_refused_for_the_whole_sweep():
    with pytest.raises(sweep_plan.SweepError, match="learning_rate=-0.1 is not valid: learning_rate must be"):
        sweep_plan.plan_trials(config.TrainConfig(), {"learning_rate": [0.1, -0.1]}, [], seeds=[0])


def test_the_curves_stay_readable_with_twelve_configurations_and_seeds_stopped_early():
    series = [
        {
            "label": f"loss=categorical_crossentropy, activation=relu, learning_rate={rate}",
            "val_accuracy": [[0.1 + 0.01 * epoch * (1 + index) for epoch in range(epochs)] for epochs in (8, 8, 5)],
        }
        for index, rate in enumerate([0.001 * 2**k for k in range(12)])
    ]
    figure = plots_sweep.sweep_curves(series)
    assert len([axis for axis in figure.axes if axis.has_data()]) == 12
    heat = plots_sweep.sweep_heatmap(
        [
            {"params": {"activation": a, "learning_rate": r}, "val_accuracy_mean": 0.5}
            for a in ("sigmoid", "relu")
            for r in (0.01, 0.1)
        ],
        ["activation", "learning_rate"],
        {"activation": ["sigmoid", "relu"], "learning_rate": [0.01, 0.1]},
    )
    assert plots.figure_png(heat)[:4] == b"\x89PNG"


def test_no_sweepable_field_is_named_like_a_result_column():
    sweepable = {field for field in config.TrainConfig.__dataclass_fields__ if field not in sweep_plan.NOT_SWEPT}
    assert not sweepable & set(sweep_results.RESULT_COLUMNS)


def _trained_sweep(out: Path, mnist_path: Path, grid: list[str], seeds: list[int]) -> sweep_state.Sweep:
    """A sweep folder trained without Ray: each trial through the function a Tune trial runs."""
    parsed = sweep_plan.parse_grid(grid)
    trials = sweep_plan.plan_trials(config.TrainConfig(train_limit=1000), parsed, [], seeds)
    settings = {"swept": list(parsed), "grid": parsed, "sample": {}, "seeds": seeds, "command": "digitlab sweep"}
    loaded = data.load(mnist_path)
    sweep = sweep_state.create(out, trials, settings, loaded)
    for trial in sweep.trials:
        reported: list[dict] = []
        sweep_trial.train_trial(trial, sweep.runs_dir, loaded, reported.append)
        last = reported[-1]
        sweep.update(trial["index"], status="complete", epochs=last["epoch"], val_accuracy=last["val_accuracy"])
    return sweep


def test_epochs_and_batch_size_swept_together_reach_the_tables_the_heatmap_and_the_report(tmp_path, mnist_path, capsys):
    """Issue 15, bug 1: `epochs` is a swept field and a result; the swept values stay in each row's
    params, so results.csv, .json, .md, the heatmap and the report all show them."""
    out = tmp_path / "sweep"
    sweep = _trained_sweep(out, mnist_path, ["epochs=1,2", "batch_size=100,250"], seeds=[0])
    rows = sweep_results.finish(sweep, print_fn=lambda *args: None)
    assert sorted((row["params"]["epochs"], row["params"]["batch_size"]) for row in rows) == [
        (1, 100),
        (1, 250),
        (2, 100),
        (2, 250),
    ]
    table = list(csv.DictReader(io.StringIO((out / "results.csv").read_text())))
    assert list(table[0]) == ["epochs", "batch_size", *sweep_results.RESULT_COLUMNS]
    assert all(row["epochs"] == row["epochs_run"] for row in table)  # Each trained the epochs it was given.
    assert {(row["epochs"], row["batch_size"]) for row in table} == {
        ("1", "100"),
        ("1", "250"),
        ("2", "100"),
        ("2", "250"),
    }
    saved = json.loads((out / "results.json").read_text())
    assert [row["params"] for row in saved] == [row["params"] for row in rows]
    assert all(
        isinstance(row["params"]["epochs"], int) and row["epochs_run"] == str(row["params"]["epochs"]) for row in saved
    )
    markdown = (out / "results.md").read_text().splitlines()
    assert markdown[0].startswith("| epochs | batch_size | seeds | val acc mean |") and len(markdown) == 2 + 4
    assert (out / "heatmap.png").read_bytes()[:4] == b"\x89PNG"

    code, printed, err = run_cli(capsys, "report", out)
    assert code == 0 and err == "" and printed.strip() == f"Wrote {out / 'report.html'}"
    page = (out / "report.html").read_text()
    # The page's results table has the same cells as results.md, row for row.
    for cells in sweep_results.results_table(rows, ["epochs", "batch_size"]).rows:
        assert "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>" in page
    assert page.count("data:image/png;base64,") == 2  # The curves and the heatmap.


def test_the_results_table_is_written_once_for_every_output():
    rows = [
        sweep_results.ResultRow(
            configuration=1,
            params={"activation": "relu", "learning_rate": 0.1},
            seeds=3,
            val_accuracy_mean=0.97321,
            val_accuracy_std=0.00021,
            val_accuracy_min=0.9731,
            val_accuracy_max=0.97349,
            best_val_accuracy_mean=0.97321,
            best_epoch=20,
            epochs_run="20",
            wall_time_s=150.06,
            status="complete",
            curves=[[0.9], [0.9], [0.9]],
        ),
        sweep_results.ResultRow(
            configuration=0,
            params={"activation": "sigmoid", "learning_rate": 0.1},
            seeds=0,
            val_accuracy_mean=float("nan"),
            val_accuracy_std=float("nan"),
            val_accuracy_min=float("nan"),
            val_accuracy_max=float("nan"),
            best_val_accuracy_mean=float("nan"),
            best_epoch=0,
            epochs_run="0",
            wall_time_s=0.0,
            status="failed (3 of 3 seeds): ValueError: a | b",
            curves=[],
        ),
    ]
    table = sweep_results.results_table(rows, ["activation", "learning_rate"])
    assert table.rows[0] == [
        "relu", "0.1", "3", "0.9732", "0.0002", "0.9731", "0.9735", "0.9732", "20", "20", "150.1", "complete"
    ]  # fmt: skip
    assert table.rows[1][2:4] == ["0", "nan"]
    csv_rows = list(csv.reader(io.StringIO(sweep_results.results_csv(table))))
    assert csv_rows == [table.names, *table.rows]
    markdown = sweep_results.results_markdown(table).splitlines()
    assert markdown[0] == "| " + " | ".join(table.titles) + " |"
    assert markdown[1] == "|---|---|" + "---:|" * 9 + "---|"
    assert markdown[2] == "| " + " | ".join(table.rows[0]) + " |"
    assert markdown[3].endswith("| failed (3 of 3 seeds): ValueError: a \\| b |")  # A | in a cell is escaped.
    assert sweep_results.results_json(rows)[1]["val_accuracy_mean"] is None  # Strict JSON: no NaN.


# Bad input: one error line, exit status 2, before any trial (these start no Ray).


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--grid", "nonsense=1,2"], "unknown field 'nonsense'"),
        (["--grid", "learning_rate=a,b"], "learning_rate takes numbers"),
        (["--grid", "learning_rate=0.1,20"], "learning_rate must be a number above 0 and at most 10"),
        (["--grid", "activation=relu,swish"], "Unknown activation 'swish'"),
        (["--grid", "learning_rate="], "empty value"),
        ([], "Nothing to sweep"),
        (["--grid", "learning_rate=0.1", "--seeds", "0"], "--seeds must be at least 1"),
        (
            ["--grid", "batch_size=" + ",".join(str(size) for size in range(1, 41)), "--seeds", "30"],
            "1200 trials (over 1000); add --yes",
        ),
        (["--grid", "learning_rate=0.1", "--samples", "3"], "--samples needs at least one --sample"),
    ],
)
def test_bad_sweeps_get_one_error_line_and_status_2(capsys, tmp_path, argv, message):
    code, out, err = run_cli(capsys, "sweep", *argv, "--out", tmp_path / "out")
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_an_out_folder_holding_other_things_is_refused(capsys, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    code, _, err = run_cli(capsys, "sweep", "--grid", "learning_rate=0.1", "--out", tmp_path / "out")
    assert code == 2 and "already holds other files" in err
    code, _, err = run_cli(capsys, "sweep", "--resume", tmp_path / "out")
    assert code == 2 and "is not a sweep folder" in err


def test_an_unreachable_address_fails_fast(capsys, tmp_path, free_port):
    started = time.monotonic()
    code, _, err = run_cli(
        capsys, "sweep", "--grid", "learning_rate=0.1", "--address", f"127.0.0.1:{free_port}", "--out", tmp_path / "out"
    )
    assert code == 2 and "No Ray cluster reachable at 127.0.0.1:" in err, err
    assert time.monotonic() - started < 30
    assert not (tmp_path / "out").exists()


@pytest.mark.heavy
def test_an_address_that_never_answers_fails_within_30_seconds(capsys, tmp_path):
    """A black-holed address (TEST-NET-1, never routed) times out rather than hangs."""
    started = time.monotonic()
    code, _, err = run_cli(
        capsys, "sweep", "--grid", "learning_rate=0.1", "--address", "192.0.2.1:6379", "--out", tmp_path / "out"
    )
    assert code == 2 and "No Ray cluster reachable at 192.0.2.1:6379" in err, err
    assert time.monotonic() - started < 30


# Real Ray.


def _sweep(*argv, timeout=900, env=ENVIRONMENT):
    return subprocess.run(
        [sys.executable, "-m", "digitlab", "sweep", *map(str, argv)],
        env=env,
        text=True,
        capture_output=True,
        timeout=timeout,
    )


def _results_without_time(out: Path) -> list[dict]:
    rows = list(csv.DictReader(io.StringIO((out / "results.csv").read_text())))
    for row in rows:
        row.pop("wall_time_s")
    return rows


@pytest.fixture(scope="module")
def reference_sweep(tmp_path_factory, mnist_path):
    """SWEEP_ARGS swept without a break on an embedded Ray; its output and folder."""
    out = tmp_path_factory.mktemp("reference") / "sweep"
    result = _sweep(*SWEEP_ARGS, "--out", out)
    assert result.returncode == 0, result.stdout + result.stderr
    return result, out


@pytest.mark.heavy
def test_a_sweep_trains_what_train_trains(reference_sweep, tmp_path, quiet):
    result, out = reference_sweep
    assert "Traceback" not in result.stdout + result.stderr and result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].startswith("digitlab: sweeping 4 trials (2 configurations x 2 seed(s))")
    assert sum(line.startswith("sweep: ") for line in lines) == 4  # One line per finished trial.
    assert lines[-1].startswith("Done: 4 trials (4 complete, 0 stopped early, 0 failed)")
    state = json.loads((out / "sweep.json").read_text())
    assert [trial["status"] for trial in state["trials"]] == ["complete"] * 4
    for trial in state["trials"]:
        alone = training.train(
            config.TrainConfig(
                learning_rate=trial["params"]["learning_rate"], seed=trial["seed"], epochs=6, train_limit=6000
            ),
            runs_dir=tmp_path,
            print_fn=quiet,
            verbose=0,
        )
        assert runs.Run(out / "runs" / trial["run"]).history() == alone.history()

    rows = _results_without_time(out)
    assert [row["learning_rate"] for row in rows] == ["0.5", "0.05"]  # Best first.
    assert set(rows[0]) == {"learning_rate", *sweep_results.RESULT_COLUMNS} - {"wall_time_s"}
    assert rows[0]["seeds"] == "2" and rows[0]["status"] == "complete" and rows[0]["epochs_run"] == "6"
    assert (
        float(rows[0]["val_accuracy_min"]) <= float(rows[0]["val_accuracy_mean"]) <= float(rows[0]["val_accuracy_max"])
    )
    assert json.loads((out / "results.json").read_text())[0]["params"] == {"learning_rate": 0.5}
    assert (out / "results.md").read_text() in result.stdout
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG" and not (out / "heatmap.png").exists()


@pytest.mark.heavy
def test_the_runs_of_a_sweep_work_with_runs_and_report(reference_sweep, capsys):
    _, out = reference_sweep
    code, listing, _ = run_cli(capsys, "runs", "--runs-dir", out / "runs")
    assert code == 0 and listing.count("complete") == 4
    code, printed, _ = run_cli(capsys, "report", out)
    assert code == 0 and printed.strip() == f"Wrote {out / 'report.html'}"
    page = (out / "report.html").read_text()
    assert "digitlab sweep" in page and "data:image/png;base64," in page
    assert all(trial in page for trial in ("t000-0.05-seed3", "t003-0.5-seed4"))


@pytest.mark.heavy
def test_a_sweep_of_epochs_beside_another_field_ends_with_its_tables_heatmap_and_report(tmp_path, mnist_path, capsys):
    """Issue 15, bug 1, as the user met it: this command trained all four trials, then failed."""
    out = tmp_path / "sweep"
    result = _sweep(
        "--grid", "epochs=1,2", "--grid", "learning_rate=0.1,0.5", "--seeds", "1", "--train-limit", "1000", "--out", out
    )  # fmt: skip
    assert result.returncode == 0 and result.stderr == "", result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].startswith("Done: 4 trials (4 complete, 0 stopped early, 0 failed)")
    rows = list(csv.DictReader(io.StringIO((out / "results.csv").read_text())))
    assert {(row["epochs"], row["learning_rate"]) for row in rows} == {
        ("1", "0.1"),
        ("1", "0.5"),
        ("2", "0.1"),
        ("2", "0.5"),
    }
    assert all(row["epochs_run"] == row["epochs"] and row["status"] == "complete" for row in rows)
    assert [row["params"] for row in json.loads((out / "results.json").read_text())] == [
        {"epochs": int(row["epochs"]), "learning_rate": float(row["learning_rate"])} for row in rows
    ]
    assert (out / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "results.md").read_text() in result.stdout
    code, printed, err = run_cli(capsys, "report", out)
    assert code == 0 and err == "" and printed.strip() == f"Wrote {out / 'report.html'}"


def _descendants(pid: int) -> set[int]:
    """Every process below `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pids: set[int], seconds: float) -> set[int]:
    """Waits for the processes to end; kills (by id) any left after `seconds`, returns those."""
    deadline = time.monotonic() + seconds
    alive = set(pids)
    while True:
        alive = {pid for pid in alive if _running(pid)}
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return alive


def _checkpoints(out: Path) -> dict[str, int]:
    """Each trial run's latest checkpoint epoch, from its status.json."""
    found = {}
    for status_file in (out / "runs").glob("*/status.json"):
        try:
            status = json.loads(status_file.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if status.get("status") == "running":
            found[status_file.parent.name] = status.get("checkpoint_epoch") or 0
    return found


def _wait_for_a_new_checkpoint(process, out: Path, before: dict[str, int]) -> None:
    """Waits until a running trial has a checkpoint newer than `before` (or the sweep ends)."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        if any(epoch > before.get(run, 0) for run, epoch in _checkpoints(out).items()):
            return
        time.sleep(0.05)


@pytest.mark.heavy
def test_a_killed_and_interrupted_sweep_resumes_to_the_same_results(reference_sweep, tmp_path):
    rng = random.Random(os.getpid())
    out = tmp_path / "sweep"
    process = subprocess.Popen(
        [sys.executable, "-m", "digitlab", "sweep", *SWEEP_ARGS, "--out", str(out)],
        env=ENVIRONMENT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    _wait_for_a_new_checkpoint(process, out, before={})
    time.sleep(rng.uniform(0.0, 1.5))
    ray_processes = _descendants(process.pid)
    process.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    process.communicate(timeout=60)
    if process.returncode == 0:
        pytest.skip("the sweep finished before the kill arrived; the machine was too fast for this timing")
    checkpoints_before = _checkpoints(out)

    # Resumed at once, as a user would (the killed sweep's Ray may still be ending), then stopped with
    # Ctrl-C or SIGTERM (a closed terminal, `kill`), one or the other at random, once it is training
    # again, then resumed to the end. (Ray's start made SIGTERM exit at once, leaving trials "running".)
    resume = [sys.executable, "-m", "digitlab", "sweep", "--resume", str(out)]
    process = subprocess.Popen(resume, env=ENVIRONMENT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_a_new_checkpoint(process, out, before=checkpoints_before)
    time.sleep(rng.uniform(0.0, 1.0))
    process.send_signal(rng.choice([signal.SIGINT, signal.SIGTERM]))
    output, errors = process.communicate(timeout=120)
    if process.returncode != 0:
        assert process.returncode == 130, output + errors
        assert errors.strip().splitlines()[-1].strip() == f"digitlab sweep --resume {out}", errors
        assert "Traceback" not in errors
        finished = subprocess.run(resume, env=ENVIRONMENT, text=True, capture_output=True, timeout=900)
        assert finished.returncode == 0, finished.stdout + finished.stderr
    state = json.loads((out / "sweep.json").read_text())
    assert [trial["status"] for trial in state["trials"]] == ["complete"] * 4
    assert _results_without_time(out) == _results_without_time(reference_sweep[1])
    for trial in state["trials"]:
        assert not list((out / "runs" / trial["run"]).glob(".*.tmp*"))
    # The embedded Ray's processes end with their driver (its two agents only after a minute or two).
    assert not _wait_gone(ray_processes, killed_at + 240 - time.monotonic()), "Ray processes outlived the killed sweep"


@pytest.fixture
def ray_head(tmp_path, load_script):
    """A Ray head on loopback, started with `ray start --head --block` and stopped by ending that process."""
    free_port = load_script("load_test").free_port
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # Short: Ray's socket paths must fit 107 bytes.
    ray = Path(sys.executable).with_name("ray")
    head = subprocess.Popen(
        [
            ray,
            "start",
            "--head",
            "--block",
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            str(port),
            "--num-cpus",
            "2",
            "--include-dashboard",
            "false",
            "--ray-client-server-port",
            str(free_port()),
            "--temp-dir",
            temp_dir,
            "--disable-usage-stats",
        ],
        env=ENVIRONMENT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert head.poll() is None, "ray start --head ended early"
            time.sleep(0.5)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        started = _descendants(head.pid)
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
        _wait_gone(started, 60)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.heavy
def test_a_sweep_on_a_ray_head_records_a_failed_trial_and_finishes_the_others(ray_head, tmp_path, mnist_path):
    # Ray's heads ask for a token (~/.ray/auth_token, which `ray start` made or found), which a driver
    # given an address sends only when told to: without RAY_AUTH_MODE=token it is refused, clearly and fast.
    out = tmp_path / "sweep"
    started = time.monotonic()
    refused = _sweep(
        "--address",
        ray_head,
        "--grid",
        "learning_rate=0.1",
        "--out",
        out,
        env={key: value for key, value in ENVIRONMENT.items() if key != "RAY_AUTH_MODE"},
    )
    assert refused.returncode == 2 and refused.stderr.startswith("error: Could not start or reach the Ray cluster")
    assert "RAY_AUTH_MODE=token" in refused.stderr and refused.stderr.count("\n") == 1, refused.stderr
    assert time.monotonic() - started < 30 and not out.exists()
    greedy = _sweep(
        "--address",
        ray_head,
        "--grid",
        "learning_rate=0.1",
        "--cpus-per-trial",
        "3",
        "--out",
        out,
        env=dict(ENVIRONMENT, RAY_AUTH_MODE="token"),
    )
    assert greedy.returncode == 2 and not out.exists()
    assert greedy.stderr == "error: Each trial asks for 3 CPUs (--cpus-per-trial), but this Ray has only 2.\n"

    result = _sweep(
        "--address",
        ray_head,
        "--grid",
        "model=shallow,lenet",
        "--engine",
        "fast",
        "--epochs",
        "2",
        "--train-limit",
        "1000",
        "--out",
        out,
        env=dict(ENVIRONMENT, RAY_AUTH_MODE="token"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    state = json.loads((out / "sweep.json").read_text())
    assert [trial["status"] for trial in state["trials"]] == ["complete", "failed"]
    assert "--engine fast cannot train the lenet net" in state["trials"][1]["error"]
    rows = _results_without_time(out)
    assert [row["model"] for row in rows] == ["shallow", "lenet"]
    assert rows[1]["status"].startswith("failed (1 of 1 seeds): ValueError: --engine fast cannot train the lenet net")
    assert "0 failed" not in result.stdout.splitlines()[-1] and "1 failed" in result.stdout.splitlines()[-1]


@pytest.mark.heavy
def test_early_stopping_stops_the_trials_that_trail_and_says_so(tmp_path, mnist_path):
    """Learning rates from good to hopeless for the book's net, so that ASHA (rungs at epochs 1, 3
    and 9) has good trials to compare the later ones with."""
    out = tmp_path / "sweep"
    result = _sweep(
        "--grid",
        "learning_rate=3,1,0.3,0.03,0.003,0.001,0.0003,0.0001",
        "--epochs",
        "9",
        "--train-limit",
        "1000",
        "--early-stop",
        "--out",
        out,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    state = json.loads((out / "sweep.json").read_text())
    stopped = [trial for trial in state["trials"] if trial["status"] == "stopped"]
    assert stopped and {trial["status"] for trial in state["trials"]} <= {"complete", "stopped"}
    for trial in stopped:
        # Interrupted by the scheduler after an epoch, or with its worker ended mid-epoch: resumable either way.
        # (Tune stops a trial asynchronously: a fast one may train a few epochs past the decision.)
        assert runs.Run(out / "runs" / trial["run"]).status()["status"] == "interrupted"
    rows = {row["learning_rate"]: row for row in _results_without_time(out)}
    for trial in stopped:
        assert rows[sweep_plan.value_text(trial["params"]["learning_rate"])]["status"] == "stopped early (1 of 1 seeds)"
    assert f"{len(stopped)} stopped early" in result.stdout.splitlines()[-1]
