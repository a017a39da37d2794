"""`digitlab sweep`: parsing and planning (fast), results and figures (fast, no Ray), a trial away
from the sweep's folder (fast, the store in this process), bad inputs (fast, no Ray started), and an
embedded Ray (heavy): its histories equal `digitlab train`'s, it listens on loopback only, and a
driver SIGKILLed and interrupted at random moments resumes to the same results. Sweeps on a Ray
cluster, two nodes in network namespaces among them, are tests/test_sweep_cluster.py.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from digitlab import cli, config, data, errors, plots, runs, training
from digitlab.plots import sweep as plots_sweep
from digitlab.sweep import plan as sweep_plan
from digitlab.sweep import results as sweep_results
from digitlab.sweep import runner as sweep_runner
from digitlab.sweep import state as sweep_state
from digitlab.sweep import store as sweep_store
from digitlab.sweep import trial as sweep_trial
from sweep_helpers import (
    ENVIRONMENT,
    SWEEP_ARGS,
    descendants,
    is_loopback,
    results_without_time,
    wait_gone,
)


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
    with pytest.raises(errors.SweepError, match=message):
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
    with pytest.raises(errors.SweepError, match=message):
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
    with pytest.raises(errors.SweepError, match="learning_rate=-0.1 is not valid: learning_rate must be"):
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
    assert (out / "parallel.png").read_bytes()[:4] == b"\x89PNG"

    code, printed, err = run_cli(capsys, "report", out)
    assert code == 0 and err == "" and printed.strip() == f"Wrote {out / 'report.html'}"
    page = (out / "report.html").read_text()
    # The page's results table has the same cells as results.md, row for row.
    for cells in sweep_results.results_table(rows, ["epochs", "batch_size"]).rows:
        assert "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>" in page
    assert page.count("data:image/png;base64,") == 3  # The curves, the parallel coordinates and the heatmap.


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
            retried=1,
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
            retried=0,
            status="failed (3 of 3 seeds): ValueError: a | b",
            curves=[],
        ),
    ]
    table = sweep_results.results_table(rows, ["activation", "learning_rate"])
    assert table.rows[0] == [
        "relu", "0.1", "3", "0.9732", "0.0002", "0.9731", "0.9735", "0.9732", "20", "20", "150.1", "1", "complete"
    ]  # fmt: skip
    assert table.rows[1][2:4] == ["0", "nan"]
    csv_rows = list(csv.reader(io.StringIO(sweep_results.results_csv(table))))
    assert csv_rows == [table.names, *table.rows]
    markdown = sweep_results.results_markdown(table).splitlines()
    assert markdown[0] == "| " + " | ".join(table.titles) + " |"
    assert markdown[1] == "|---|---|" + "---:|" * 10 + "---|"
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


# A trial away from the sweep's folder: its run reaches OUT through the store (here the store's own
# code in this process; tests/test_sweep_cluster.py runs it as the Ray actor on a real second node).


class _StoreChannel:
    """The channel of `raytune._StoreChannel`, calling a RunStore in this process rather than in an actor."""

    def __init__(self, store: sweep_store.RunStore, run: str, node: str):
        self.store, self.run = store, run
        self.attempt, self.files = store.begin(run, node, want_files=True)
        assert store.claim(run) is None  # The run's lock, held by the store until `finish`, as raytune does.
        self.sends = 0

    def fetch(self):
        return self.files

    def send(self, files):
        self.sends += 1
        if not self.store.write(self.run, self.attempt, files):
            raise sweep_trial.AttemptSuperseded(self.run)

    def clear(self):
        if not self.store.clear(self.run, self.attempt):
            raise sweep_trial.AttemptSuperseded(self.run)


def _one_trial(mnist_path):
    (trial,) = sweep_plan.plan_trials(config.TrainConfig(epochs=4, train_limit=1000), {"batch_size": [100]}, [], [7])
    return trial, data.load(mnist_path)


def test_a_trial_away_from_the_sweeps_folder_delivers_its_whole_run_through_the_store(
    tmp_path, mnist_path, monkeypatch
):
    trial, loaded = _one_trial(mnist_path)
    scratch = tmp_path / "scratch"  # This machine's temporary folder, where the trial trains.
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    here = tmp_path / "here"
    sweep_trial.train_trial(trial, here, loaded, lambda metrics: None)
    store = sweep_store.RunStore(tmp_path / "out" / "runs")
    channel = _StoreChannel(store, trial["run"], node="10.0.0.2")
    assert channel.fetch() == {}  # A new run.
    reported: list[dict] = []
    status = sweep_trial.train_trial(trial, "/nonexistent/runs", loaded, reported.append, channel, {"node": "x"})
    assert status == "complete" and [metrics["epoch"] for metrics in reported] == [1, 2, 3, 4]
    assert channel.sends == 4 + 1  # After every epoch, and the model, curves and metrics at the end.
    assert store.finish(trial["run"], channel.attempt, {"status": status})  # Lets the run's lock go.
    delivered = runs.Run(tmp_path / "out" / "runs" / trial["run"])
    alone = runs.Run(here / trial["run"])
    assert delivered.status()["status"] == "complete" and delivered.history() == alone.history()
    assert sorted(path.name for path in delivered.path.iterdir()) == sorted(path.name for path in alone.path.iterdir())
    assert delivered.metrics()["node"] == "x" and delivered.load_model() is not None
    assert not list(scratch.iterdir())  # The scratch folder is gone.


def test_a_trial_without_early_stopping_reports_its_first_epoch_then_by_time_and_always_its_last(tmp_path, mnist_path):
    trial, loaded = _one_trial(mnist_path)
    reported: list[dict] = []
    # A minute between reports: epoch 1, then none until the last (which a trial always reports).
    status = sweep_trial.train_trial(trial, tmp_path / "a", loaded, reported.append, report_every_s=60.0)
    assert status == "complete" and [metrics["epoch"] for metrics in reported] == [1, 4]
    every: list[dict] = []
    sweep_trial.train_trial(trial, tmp_path / "b", loaded, every.append)  # As with --early-stop: every epoch.
    assert [metrics["epoch"] for metrics in every] == [1, 2, 3, 4]
    assert reported[-1] == every[-1] | {"wall_time_s": reported[-1]["wall_time_s"]}  # The same final results.
    # A complete run, met again (a resumed sweep): its final metrics, even right after another report.
    again: list[dict] = []
    sweep_trial.train_trial(trial, tmp_path / "a", loaded, again.append, report_every_s=60.0)
    assert [metrics["epoch"] for metrics in again] == [4]


def test_a_retried_trial_resumes_from_the_checkpoint_the_store_holds_and_the_lost_attempt_is_refused(
    tmp_path, mnist_path
):
    trial, loaded = _one_trial(mnist_path)
    sweep_trial.train_trial(trial, tmp_path / "alone", loaded, lambda metrics: None)
    store = sweep_store.RunStore(tmp_path / "out" / "runs")
    first = _StoreChannel(store, trial["run"], node="10.0.0.2")

    def cut_after_epoch_2(metrics):
        if metrics["epoch"] == 2:
            raise SystemExit  # As Tune's report does when it stops a trial.

    assert sweep_trial.train_trial(trial, "/nonexistent/runs", loaded, cut_after_epoch_2, first) == "stopped"
    path = tmp_path / "out" / "runs" / trial["run"]
    # As a lost machine leaves it: "running" on a host that is gone, two epochs and a checkpoint in OUT.
    status = json.loads((path / runs.STATUS_FILE).read_text())
    (path / runs.STATUS_FILE).write_text(json.dumps(dict(status, status="running", host="lost-machine", pid=1)))
    second = _StoreChannel(store, trial["run"], node="10.0.0.1")
    assert runs.CHECKPOINT_FILE in second.fetch()
    with pytest.raises(sweep_trial.AttemptSuperseded):
        first.send([("history.json", b"{}")])  # The lost attempt's word no longer counts...
    assert not store.finish(trial["run"], first.attempt, {"status": "complete"})
    reported: list[dict] = []
    assert sweep_trial.train_trial(trial, "/nonexistent/runs", loaded, reported.append, second) == "complete"
    assert [metrics["epoch"] for metrics in reported] == [3, 4]  # ...and the new one resumed after epoch 2.
    assert runs.Run(path).history() == runs.Run(tmp_path / "alone" / trial["run"]).history()
    assert store.finish(trial["run"], second.attempt, {"status": "complete"})
    assert store.outcome(trial["run"]) == {"status": "complete", "node": "10.0.0.1", "attempt": 2}
    assert store.nodes(trial["run"]) == ["10.0.0.2", "10.0.0.1"]


def test_a_trial_removes_the_scratch_folders_of_trial_processes_that_are_gone(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"{sweep_trial.SCRATCH_PREFIX}{int(gone.stdout)}-abc"  # An ended worker's.
    live = tmp_path / f"{sweep_trial.SCRATCH_PREFIX}{os.getpid()}-def"  # A trial training now.
    for folder in (stale, live):
        (folder / "t000-seed0").mkdir(parents=True)
    sweep_trial._remove_stale_scratch()
    assert not stale.exists() and live.exists()


def test_the_store_refuses_a_file_name_that_would_leave_its_run_folder(tmp_path):
    store = sweep_store.RunStore(tmp_path / "runs")
    attempt, _ = store.begin("t000-seed0", node="10.0.0.2")
    for name in ("../sweep.json", "/etc/passwd", "seeds/../../x", ""):
        with pytest.raises(errors.SweepError, match="not a path inside its run folder"):
            store.write("t000-seed0", attempt, [(name, b"x")])
    assert not (tmp_path / "sweep.json").exists()


# An embedded Ray.


@pytest.mark.heavy
def test_a_sweep_trains_what_train_trains(reference_sweep, tmp_path, quiet):
    result, out, _, _ = reference_sweep
    assert "Traceback" not in result.stdout + result.stderr and result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].startswith("digitlab: sweeping 4 trials (2 configurations x 2 seed(s))")
    assert sum(line.startswith("sweep: ") for line in lines) == 4  # One line per finished trial.
    assert lines[-1] == f"Done: 4 trials (4 complete, 0 stopped early, 0 failed). Results in {out}"
    state = json.loads((out / "sweep.json").read_text())
    assert [trial["status"] for trial in state["trials"]] == ["complete"] * 4
    # When each step happened (sweep_bench's phases): in order, the results written while Ray shut down.
    timeline = state["timeline"]
    assert list(timeline) == list(sweep_runner.TIMELINE)
    assert sorted(timeline.values())[:4] == [timeline[name] for name in sweep_runner.TIMELINE[:4]]
    assert timeline["trials_done"] <= min(timeline["results_written"], timeline["ray_stopped"])
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
        assert runs.Run(out / "runs" / trial["run"]).metrics()["node"]["address"] == "127.0.0.1"

    rows = results_without_time(out)
    assert [row["learning_rate"] for row in rows] == ["0.5", "0.05"]  # Best first.
    assert set(rows[0]) == {"learning_rate", *sweep_results.RESULT_COLUMNS} - {"wall_time_s"}
    assert rows[0]["seeds"] == "2" and rows[0]["status"] == "complete" and rows[0]["epochs_run"] == "6"
    assert (
        float(rows[0]["val_accuracy_min"]) <= float(rows[0]["val_accuracy_mean"]) <= float(rows[0]["val_accuracy_max"])
    )
    assert json.loads((out / "results.json").read_text())[0]["params"] == {"learning_rate": 0.5}
    assert (out / "results.md").read_text() in result.stdout
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG" and not (out / "heatmap.png").exists()
    assert (out / "parallel.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.heavy
def test_the_embedded_ray_listens_on_loopback_only(reference_sweep):
    """Issue 18: Ray's GCS and raylet listened on every interface. Read while a trial trained."""
    _, _, listening, _ = reference_sweep
    names = {name for name, _, _ in listening}
    assert {"gcs_server", "raylet"} <= names, listening  # Ray's own, and its workers ("ray::...").
    beyond = {socket for socket in listening if not is_loopback(socket[1])}
    assert not beyond, f"listening beyond loopback: {sorted(beyond)}"


def test_the_private_parts_of_ray_that_digitlab_patches_are_still_there():
    from digitlab.sweep import ray_patches

    ray_patches.check()


def test_tunes_trial_actors_ask_for_no_runtime_environment_of_their_own_while_trials_run(monkeypatch):
    """Patch 6: so that they take the worker processes Ray started beforehand (an empty runtime environment's)."""
    from digitlab.sweep import ray_patches

    class Trainable:
        pass

    for name in ray_patches.class_cache.ENV_VARS_TO_PROPAGATE:
        monkeypatch.delenv(name, raising=False)
    with ray_patches.trial_workers_prestarted():
        ours = ray_patches.class_cache._ActorClassCache().get(Trainable)
    assert ours._default_options == {}
    tunes = ray_patches.class_cache._ActorClassCache().get(Trainable)  # Tune's own way again, after.
    assert tunes._default_options["runtime_env"]["env_vars"] == ray_patches.class_cache.DEFAULT_ENV_VARS
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")  # A variable Tune passes on: Tune's way is kept.
    with ray_patches.trial_workers_prestarted():
        passed = ray_patches.class_cache._ActorClassCache().get(Trainable)
    assert passed._default_options["runtime_env"]["env_vars"]["AWS_ACCESS_KEY_ID"] == "x"


def test_a_patch_that_no_longer_applies_is_named_with_rays_version(monkeypatch):
    from digitlab.sweep import ray_patches

    monkeypatch.delattr(ray_patches.ray_constants, "ENABLE_RAY_CLUSTER")
    monkeypatch.delattr(ray_patches.TrialProgressCallback, "_print")
    monkeypatch.delattr(ray_patches.class_cache._ActorClassCache, "get")
    with pytest.raises(RuntimeError) as raised:
        ray_patches.check()
    message = str(raised.value)
    assert message.startswith(f"Ray {ray_patches.ray.__version__} no longer takes these of digitlab's patches ")
    assert "ENABLE_RAY_CLUSTER is gone" in message and "TrialProgressCallback._print(self, msg) is gone" in message
    assert "_ActorClassCache.get(self, trainable_cls) is gone" in message
    assert "ENABLE_RAY_CLUSTERS_ENV_VAR" not in message and "TUNE_DISABLE_SIGINT_HANDLER" not in message


@pytest.mark.heavy
def test_the_embedded_rays_processes_skip_the_import_they_never_use(reference_sweep):
    """rfc3987-syntax (2.4 s of CPU in each of Ray's Python processes) is left out of them (raytune), but
    for Ray's two agents, which its raylet starts without PYTHONPATH."""
    _, _, _, python_paths = reference_sweep
    agents = ("ray::RuntimeEnv", "ray::DashboardA")  # Process names are cut at 15 characters.
    python_paths = {name: path for name, path in python_paths.items() if not name.startswith(agents)}
    assert {"raylet", "gcs_server"} <= set(python_paths), python_paths
    assert any(name.startswith("ray::") for name in python_paths), python_paths  # The workers.
    folders = set()
    for name, path in python_paths.items():
        ours = [Path(entry) for entry in path.split(os.pathsep) if Path(entry).name.startswith("digitlab-ray-path-")]
        assert ours, (name, path)
        folders.update(ours)
    (folder,) = folders
    assert (folder / "rfc3987_syntax.py").read_text().startswith("raise ImportError(")


@pytest.mark.heavy
def test_the_runs_of_a_sweep_work_with_runs_and_report(reference_sweep, capsys):
    _, out, _, _ = reference_sweep
    code, listing, _ = run_cli(capsys, "runs", "--runs-dir", out / "runs")
    assert code == 0 and listing.count("complete") == 4
    code, printed, _ = run_cli(capsys, "report", out)
    assert code == 0 and printed.strip() == f"Wrote {out / 'report.html'}"
    page = (out / "report.html").read_text()
    assert "digitlab sweep" in page and page.count("data:image/png;base64,") == 2  # Curves, parallel coordinates.
    assert all(trial in page for trial in ("t000-0.05-seed3", "t003-0.5-seed4"))


def _checkpoints(out: Path) -> dict[str, int]:
    """Each trial run's latest checkpoint epoch, from its status.json."""
    found = {}
    for status_file in (out / "runs").glob("*/status.json"):
        try:
            status = json.loads(status_file.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        found[status_file.parent.name] = status.get("checkpoint_epoch") or 0
    return found


def _wait_for_new_checkpoints(process, out: Path, before: dict[str, int], count: int) -> None:
    """Waits until the trials have written `count` checkpoints beyond `before` (or the sweep ends)."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        if sum(max(0, epoch - before.get(run, 0)) for run, epoch in _checkpoints(out).items()) >= count:
            return
        time.sleep(0.02)


class _Lines(list):
    """The lines of a pipe, appended as they arrive by a thread of their own; `finish()` waits for its end."""

    def __init__(self, pipe):
        super().__init__()
        self.thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self.thread.start()

    def _read(self, pipe) -> None:
        for line in pipe:
            self.append(line)

    def finish(self) -> _Lines:
        self.thread.join(timeout=60)
        return self


def _freeze(pids: set[int]) -> None:
    """Stops the processes where they are (SIGSTOP), so that a kill lands at the moment chosen."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:
            pass


@pytest.mark.heavy
def test_a_killed_and_interrupted_sweep_resumes_to_the_same_results(reference_sweep, tmp_path):
    """The kill and the interrupt land after a random number of checkpoints (1 to 4 of the 24): chosen
    by what the sweep has written, not by the clock, so a fast machine cannot finish first."""
    rng = random.Random(os.getpid())
    out = tmp_path / "sweep"
    process = subprocess.Popen(
        [sys.executable, "-m", "digitlab", "sweep", *SWEEP_ARGS, "--out", str(out)],
        env=ENVIRONMENT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    _wait_for_new_checkpoints(process, out, before={}, count=rng.randint(1, 4))
    ray_processes = descendants(process.pid)
    _freeze(ray_processes)  # The driver's workers go on after it dies: they do, but from this moment.
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    for pid in ray_processes:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    killed_at = time.monotonic()

    # Resumed at once, as a user would (the killed sweep's Ray may still be ending), then stopped with
    # Ctrl-C or SIGTERM (a closed terminal, `kill`), one or the other at random, once it is training
    # again, then resumed to the end. (Ray's start made SIGTERM exit at once, leaving trials "running".)
    # The killed sweep's workers may still write a checkpoint: the count starts once the resumed
    # driver says it is resuming (Ray started, its own Ctrl-C and SIGTERM handling in place).
    resume = [sys.executable, "-m", "digitlab", "sweep", "--resume", str(out)]
    process = subprocess.Popen(resume, env=ENVIRONMENT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    printed = _Lines(process.stdout)
    said = _Lines(process.stderr)
    deadline = time.monotonic() + 600
    while not any(line.startswith("digitlab: resuming the sweep") for line in printed):
        assert process.poll() is None and time.monotonic() < deadline, "".join(printed + said)
        time.sleep(0.02)
    _wait_for_new_checkpoints(process, out, before=_checkpoints(out), count=rng.randint(1, 2))
    process.send_signal(rng.choice([signal.SIGINT, signal.SIGTERM]))
    process.wait(timeout=120)
    output, errors = "".join(printed.finish()), "".join(said.finish())
    assert process.returncode == 130, output + errors
    assert errors.strip().splitlines()[-1].strip() == f"digitlab sweep --resume {out}", errors
    assert "Traceback" not in errors
    finished = subprocess.run(resume, env=ENVIRONMENT, text=True, capture_output=True, timeout=900)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    state = json.loads((out / "sweep.json").read_text())
    assert [trial["status"] for trial in state["trials"]] == ["complete"] * 4
    assert results_without_time(out) == results_without_time(reference_sweep[1])
    for trial in state["trials"]:
        assert not list((out / "runs" / trial["run"]).glob(".*.tmp*"))
    # The embedded Ray's processes end with their driver (its two agents only after a minute or two).
    assert not wait_gone(ray_processes, killed_at + 240 - time.monotonic()), "Ray processes outlived the killed sweep"
