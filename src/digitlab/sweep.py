"""`digitlab sweep`: many runs at once, one per configuration and seed, on Ray Tune.

    from digitlab import sweep
    grid = sweep.parse_grid(["activation=sigmoid,relu", "learning_rate=0.01,0.1"])
    rows = sweep.run_sweep(TrainConfig(epochs=20), grid=grid, seeds=[0, 1, 2], out_dir="sweeps/x")
    rows = sweep.resume_sweep("sweeps/x")        # after a kill or Ctrl-C: finishes what is left

A sweep is planned here, in full, before anything runs: `--grid FIELD=V1,V2` values
(their product), `--sample FIELD=DIST:...` values drawn with a seeded generator, times
the seeds. Each trial (one configuration, one seed) is an ordinary run folder under
`OUT/runs/`, named in advance, trained by `training.train` (or continued by
`training.resume`) inside a Ray Tune trial (`digitlab.raytune`). The sweep's own record
is `OUT/sweep.json`: the plan, and each trial's run folder and status, written
atomically whenever a trial starts, reports an epoch or ends.

Why our own record, not Ray Tune's experiment restore: everything a trial needs to
continue exactly is already in its run folder (the checkpoint holds the weights,
optimizer state, random state and history), and what trial is which is fixed by the
plan in sweep.json. So a resumed sweep just re-submits the unfinished trials, and each
one, looking at its own folder, either skips (complete), resumes from its checkpoint,
or starts afresh. That is exact by construction, and works the same on an embedded Ray
and on a cluster, whereas Tune's restore replays its own trial state and searcher and
would still have to be reconciled with the run folders. Random samples are drawn here,
not by a Tune searcher, for the same reason: the plan is written before any trial runs.

Results (`results.csv`, `.json`, `.md`, `curves.png`, `heatmap.png`) are computed from
the run folders, one row per configuration, best first.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np

from digitlab import atomic, config as config_module, data, plots, plots_sweep, runs
from digitlab.config import TrainConfig

FORMAT_VERSION = 1
STATE_FILE = "sweep.json"
# A sweep of more trials than this needs --yes: a typo in a grid should not start thousands of runs.
TRIAL_LIMIT = 1000
# Fields a sweep sets itself: each trial trains one seed (see --seed and --seeds).
NOT_SWEPT = ("seed", "seeds")
DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice")
FINISHED = ("complete", "stopped", "failed")
SAMPLE_HELP = (
    "draw FIELD at random, --samples times: uniform:LOW:HIGH, loguniform:LOW:HIGH, "
    "int:LOW:HIGH (whole numbers, both ends included) or choice:V1,V2,..."
)


class SweepError(ValueError):
    """A sweep cannot start or resume: bad grid, bad folder, Ray unavailable."""


class SweepInterrupted(Exception):
    """The sweep stopped on Ctrl-C (or SIGTERM); `digitlab sweep --resume OUT` finishes it."""

    def __init__(self, out_dir: Path):
        super().__init__(f"The sweep in {out_dir} was interrupted.")
        self.out_dir = out_dir


# Parsing --grid and --sample.


def parse_grid(specs: list[str]) -> dict[str, list]:
    """`["learning_rate=0.01,0.1"]` -> `{"learning_rate": [0.01, 0.1]}`, each value of the field's type.

    List fields take their items separated by spaces, as the train flag does: `units=64 64,128 128`.
    """
    grid = {}
    for spec in specs:
        name, text = _split_assignment(spec, "--grid", "FIELD=V1,V2,...")
        if name in grid:
            raise SweepError(f"--grid {name} is given twice; give all its values in one --grid {name}=V1,V2.")
        values = [item.strip() for item in text.split(",")]
        if not text.strip() or any(not item for item in values):
            raise SweepError(f"--grid {spec!r} has an empty value; write --grid {name}=V1,V2,... with no empty item.")
        grid[name] = [parse_value(name, item) for item in values]
    return grid


def parse_sample(specs: list[str]) -> dict[str, tuple]:
    """`["learning_rate=loguniform:1e-3:1"]` -> `{"learning_rate": ("loguniform", 0.001, 1.0)}`."""
    samples = {}
    for spec in specs:
        name, text = _split_assignment(spec, "--sample", "FIELD=DIST:...")
        if name in samples:
            raise SweepError(f"--sample {name} is given twice.")
        kind, _, rest = text.partition(":")
        kind = kind.strip()
        if kind not in DISTRIBUTIONS:
            raise SweepError(f"--sample {spec!r}: unknown distribution {kind!r}. {SAMPLE_HELP}.")
        value_type, is_list = config_module.field_type(name)
        if kind == "choice":
            values = [item.strip() for item in rest.split(",")]
            if not rest.strip() or any(not item for item in values):
                raise SweepError(f"--sample {spec!r} has an empty choice; write {name}=choice:V1,V2,...")
            samples[name] = ("choice", [parse_value(name, item) for item in values])
            continue
        if is_list or value_type not in (int, float) or (kind == "int") != (value_type is int):
            wanted = "int:LOW:HIGH or choice" if value_type is int else (
                "uniform or loguniform" if value_type is float else "choice")
            raise SweepError(f"--sample {spec!r}: {name} takes {wanted}, not {kind}.")
        bounds = rest.split(":")
        if len(bounds) != 2:
            raise SweepError(f"--sample {spec!r}: write {name}={kind}:LOW:HIGH.")
        low, high = (parse_value(name, bound.strip()) for bound in bounds)
        if not low < high:
            raise SweepError(f"--sample {spec!r}: LOW must be below HIGH.")
        if kind == "loguniform" and low <= 0:
            raise SweepError(f"--sample {spec!r}: loguniform needs LOW above 0.")
        samples[name] = (kind, low, high)
    return samples


def parse_value(name: str, text: str):
    """One value of a TrainConfig field from text, by the field's type ("0.1" -> 0.1 for learning_rate)."""
    value_type, is_list = config_module.field_type(name)
    if is_list:
        return [_parse_scalar(name, item, value_type) for item in text.split()]
    return _parse_scalar(name, text, value_type)


def _parse_scalar(name: str, text: str, value_type: type):
    if value_type is bool:
        lowered = text.lower()
        if lowered in ("true", "yes", "1", "on"):
            return True
        if lowered in ("false", "no", "0", "off"):
            return False
        raise SweepError(f"{name} takes true or false, not {text!r}.")
    try:
        return value_type(text)
    except ValueError:
        kind = {int: "whole numbers", float: "numbers"}.get(value_type, "text")
        raise SweepError(f"{name} takes {kind}; {text!r} is not one.") from None


def _split_assignment(spec: str, flag: str, form: str) -> tuple[str, str]:
    name, equals, text = spec.partition("=")
    name = name.strip().replace("-", "_")
    if not equals or not name:
        raise SweepError(f"{flag} {spec!r} is not of the form {form}.")
    fields = [field.name for field in dataclasses.fields(TrainConfig)]
    if name in NOT_SWEPT:
        raise SweepError(f"{flag} cannot sweep {name}: every trial trains one seed; use --seed FIRST and --seeds N.")
    if name not in fields:
        swept = ", ".join(field for field in fields if field not in NOT_SWEPT)
        raise SweepError(f"{flag} {spec!r}: unknown field {name!r}. Sweepable fields: {swept}.")
    return name, text


def draw_samples(distributions: dict[str, tuple], count: int, seed: int) -> list[dict]:
    """`count` random assignments of the sampled fields, the same for the same seed."""
    rng = np.random.RandomState(seed)
    drawn = []
    for _ in range(count):
        values = {}
        for name, distribution in distributions.items():
            kind = distribution[0]
            if kind == "choice":
                values[name] = distribution[1][rng.randint(len(distribution[1]))]
            elif kind == "int":
                values[name] = int(rng.randint(distribution[1], distribution[2] + 1))
            elif kind == "uniform":
                values[name] = float(rng.uniform(distribution[1], distribution[2]))
            else:
                values[name] = float(math.exp(rng.uniform(math.log(distribution[1]), math.log(distribution[2]))))
        drawn.append(values)
    return drawn


# The plan.


def plan_trials(base: TrainConfig, grid: dict[str, list], samples: list[dict], seeds: list[int]) -> list[dict]:
    """Every trial: each sampled assignment (or none) x each grid point x each seed, checked as `train` checks.

    A trial is `{"index", "configuration", "params", "seed", "config", "run", "status"}`,
    with `config` the resolved TrainConfig as a dict and `run` its run folder's name.
    """
    names = list(grid)
    trials = []
    for sample in samples or [{}]:
        for point in itertools.product(*(grid[name] for name in names)):
            params = dict(zip(names, point), **sample)
            for seed in seeds:
                values = dict(base.to_dict(), **params, seed=seed, seeds=1)
                try:
                    resolved = TrainConfig(**values).resolved()
                except ValueError as error:
                    shown = ", ".join(f"{name}={value_text(value)}" for name, value in params.items())
                    raise SweepError(f"The configuration {shown} is not valid: {error}") from None
                index = len(trials)
                trials.append({
                    "index": index,
                    "configuration": index // len(seeds),
                    "params": params,
                    "seed": seed,
                    "config": resolved.to_dict(),
                    "run": _run_name(index, params, seed),
                    "status": "pending",
                })
    return trials


def _run_name(index: int, params: dict, seed: int) -> str:
    words = "-".join(value_text(value).replace(" ", "x") for value in params.values())
    words = "".join(char if char.isalnum() or char in "._-" else "_" for char in words)[:60]
    return f"t{index:03d}-{words}-seed{seed}" if words else f"t{index:03d}-seed{seed}"


def value_text(value) -> str:
    """A swept value as text: lists by spaces, floats to 4 significant digits."""
    if isinstance(value, list):
        return " ".join(value_text(item) for item in value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def label(params: dict) -> str:
    """A configuration as text: "activation=relu, learning_rate=0.1"."""
    return ", ".join(f"{name}={value_text(value)}" for name, value in params.items())


# The sweep folder and its record.


class Sweep:
    """A sweep folder: `sweep.json` (the plan and each trial's status), `runs/`, and the results."""

    def __init__(self, path: str | Path, state: dict):
        self.path = Path(path).absolute()
        self.state = state

    @property
    def trials(self) -> list[dict]:
        return self.state["trials"]

    @property
    def runs_dir(self) -> Path:
        return self.path / "runs"

    def file(self, name: str) -> Path:
        return self.path / name

    def save(self) -> None:
        atomic.write_json(self.file(STATE_FILE), self.state)

    def update(self, index: int, **values) -> None:
        """Changes a trial's record and writes sweep.json (atomically)."""
        self.trials[index].update(values)
        self.save()

    def unfinished(self) -> list[dict]:
        return [trial for trial in self.trials if trial["status"] not in FINISHED]

    def resume_command(self) -> str:
        return f"digitlab sweep --resume {self.path}"


def create(out_dir: str | Path, trials: list[dict], settings: dict, loaded: data.Loaded) -> Sweep:
    """Makes the sweep folder and its sweep.json; the folder must be new, or empty."""
    out_dir = Path(out_dir)
    check_new_folder(out_dir)
    try:
        (out_dir / "runs").mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SweepError(atomic.describe_write_error(out_dir, error)) from None
    state = {
        "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "settings": settings,
        "data": loaded.record(),
        "trials": trials,
    }
    sweep = Sweep(out_dir, state)
    sweep.save()
    return sweep


def check_new_folder(out_dir: Path) -> None:
    """Refuses an --out that is a file, a sweep already (resume it instead) or a folder holding other things."""
    if (out_dir / STATE_FILE).is_file():
        raise SweepError(f"{out_dir} already holds a sweep. Finish it with `digitlab sweep --resume {out_dir}`, "
                         "or choose another --out.")
    if out_dir.exists() and not out_dir.is_dir():
        raise SweepError(f"--out {out_dir} is a file; choose a new or empty folder.")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise SweepError(f"--out {out_dir} already holds other files; choose a new or empty folder.")


def open_sweep(out_dir: str | Path) -> Sweep:
    """Opens a sweep folder, with a clear error if it is not one."""
    out_dir = Path(out_dir)
    path = out_dir / STATE_FILE
    if not path.is_file():
        raise SweepError(f"{out_dir} is not a sweep folder (it has no {STATE_FILE}).")
    try:
        state = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SweepError(f"{path} is damaged or not JSON ({error}).") from None
    if not isinstance(state, dict) or not isinstance(state.get("trials"), list):
        raise SweepError(f"{path} is not a digitlab sweep record.")
    if state.get("format_version") != FORMAT_VERSION:
        raise SweepError(f"{path} is from another digitlab version (format {state.get('format_version')}).")
    return Sweep(out_dir, state)


# Running.


def run_sweep(base: TrainConfig, grid: dict[str, list], seeds: list[int], out_dir: str | Path,
              sample: dict[str, tuple] | None = None, samples: int = 0, sample_seed: int = 0,
              data_path=None, address: str | None = None, early_stop: bool = False,
              cpus_per_trial: float = 1.0, yes: bool = False, command: str = "", print_fn=print) -> list[dict]:
    """Plans, checks and runs a sweep, then writes and returns its results (one row per configuration).

    Every check (fields, values, trial count, folder, data, Ray) happens before any trial starts.
    """
    sample = sample or {}
    if not grid and not sample:
        raise SweepError("Nothing to sweep: give at least one --grid FIELD=V1,V2 or --sample FIELD=DIST:...")
    both = sorted(set(grid) & set(sample))
    if both:
        raise SweepError(f"{', '.join(both)} is given both as --grid and --sample; choose one.")
    if sample and samples < 1:
        raise SweepError(f"--samples must be at least 1 with --sample, got {samples}.")
    if samples and not sample:
        raise SweepError("--samples needs at least one --sample FIELD=DIST:...")
    if not seeds:
        raise SweepError("--seeds must be at least 1.")
    if not cpus_per_trial > 0:
        raise SweepError(f"--cpus-per-trial must be above 0, got {cpus_per_trial}.")
    trials = plan_trials(base, grid, draw_samples(sample, samples, sample_seed), seeds)
    if len(trials) > TRIAL_LIMIT and not yes:
        raise SweepError(f"This sweep has {len(trials)} trials (over {TRIAL_LIMIT}); add --yes if you mean it.")
    out_dir = Path(out_dir)
    check_new_folder(out_dir)
    loaded = data.load(data_path)
    settings = {"swept": list(grid) + list(sample), "grid": grid, "sample": sample, "samples": samples,
                "sample_seed": sample_seed, "seeds": seeds, "early_stop": early_stop,
                "cpus_per_trial": cpus_per_trial, "command": command}
    from digitlab import raytune  # Imported here: Ray is loaded only once every other check has passed.

    with raytune.connect(address):
        raytune.check_resources(cpus_per_trial)
        sweep = create(out_dir, trials, settings, loaded)
        print_fn(f"digitlab: sweeping {len(trials)} trials ({len(trials) // len(seeds)} configurations x "
                 f"{len(seeds)} seed(s)) in {sweep.path}")
        _run(sweep, loaded, print_fn)
    return finish(sweep, print_fn)


def resume_sweep(out_dir: str | Path, data_path=None, address: str | None = None, print_fn=print) -> list[dict]:
    """Finishes an interrupted sweep: finished trials are kept, the others resume or start."""
    from digitlab import raytune

    sweep = open_sweep(out_dir)
    loaded = data.load_recorded(sweep.state.get("data") or {}, data_path)
    with raytune.connect(address):
        raytune.check_resources(sweep.state["settings"]["cpus_per_trial"])
        left = sweep.unfinished()
        print_fn(f"digitlab: resuming the sweep in {sweep.path}: {len(sweep.trials) - len(left)} of "
                 f"{len(sweep.trials)} trials finished, {len(left)} to go")
        for trial in left:
            settle_run(sweep, trial)
        _run(sweep, loaded, print_fn)
    return finish(sweep, print_fn)


def _run(sweep: Sweep, loaded: data.Loaded, print_fn) -> None:
    from digitlab import raytune

    try:
        raytune.run_trials(sweep, loaded, print_fn)
    except KeyboardInterrupt:
        for trial in sweep.trials:
            if trial["status"] == "running":
                trial["status"] = "interrupted"
        sweep.save()
        raise SweepInterrupted(sweep.path) from None


def settle_run(sweep: Sweep, trial: dict, wait_s: float = 60.0) -> None:
    """Before a trial is resumed: waits for a process of the previous sweep still writing its run
    (a killed driver's workers end within seconds), else marks the run interrupted."""
    path = sweep.runs_dir / trial["run"]
    if not (path / "status.json").is_file():
        return
    run = runs.Run(path)
    deadline = time.monotonic() + wait_s
    while run.status().get("status") == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
    status = run.status()
    if status.get("status") == "running":
        # A process on another host, or one that hung: the sweep that started it is gone.
        details = {key: status[key] for key in ("epoch", "checkpoint_epoch") if key in status}
        run.set_status("interrupted", note="its sweep's driver stopped", **details)


def train_trial(trial: dict, runs_dir: str | Path, loaded: data.Loaded, report) -> None:
    """Trains one trial into its run folder: skips it if complete, resumes it from its checkpoint,
    or starts it afresh. `report(metrics)` gets each epoch's loss, accuracy, val_loss, val_accuracy.

    This is what a Ray Tune trial runs (`raytune`); it needs no Ray itself. When Tune stops
    the trial early, its `report` raises SystemExit in this thread: the run then ends as an
    interrupted run (its checkpoint intact, so `train --resume` could still finish it).
    """
    from digitlab import training

    runs_dir = Path(runs_dir)
    path = runs_dir / trial["run"]
    last_epoch, final = trial["config"]["epochs"], {}

    def on_epoch_end(epoch, histories, wall_time_s):
        history = histories[0]
        metrics = {"epoch": epoch, "wall_time_s": wall_time_s, **{key: history[key][-1] for key in runs.HISTORY_KEYS}}
        if epoch == last_epoch:
            final.update(metrics)  # Reported once the run is complete, so no stop can cut its saving.
            return
        try:
            report(metrics)
        except SystemExit:
            raise KeyboardInterrupt from None  # Training's own way to stop cleanly and resumably.

    def report_final():
        try:
            report(final)
        except SystemExit:
            pass  # A stop after the last epoch: the run is complete anyway.

    quiet = lambda *args, **kwargs: None  # noqa: E731 - the worker's output goes nowhere.
    try:
        if (path / "config.json").is_file():
            run = runs.Run(path)
            if run.status().get("status") == "complete":
                history = run.history()
                report({"epoch": len(history["val_accuracy"]), "wall_time_s": run.metrics().get("wall_time_s"),
                        **{key: history[key][-1] for key in runs.HISTORY_KEYS}})
                return
            if run.file("checkpoint.npz").is_file():
                training.resume(path, loaded=loaded, print_fn=quiet, verbose=0, on_epoch_end=on_epoch_end)
                report_final()
                return
        if path.exists():
            shutil.rmtree(path)  # Killed before its first checkpoint: nothing to keep.
        training.train(TrainConfig.from_dict(trial["config"]), runs_dir, loaded=loaded, run_name=trial["run"],
                       print_fn=quiet, verbose=0, on_epoch_end=on_epoch_end)
        report_final()
    except training.TrainingInterrupted as stop:
        status = stop.run.status()
        stop.run.set_status("interrupted", epoch=stop.epoch, checkpoint_epoch=status.get("checkpoint_epoch"),
                            note="stopped early by the sweep's scheduler")


# Results.

RESULT_COLUMNS = ("seeds", "val_accuracy_mean", "val_accuracy_std", "val_accuracy_min", "val_accuracy_max",
                  "best_val_accuracy_mean", "best_epoch", "epochs", "wall_time_s", "status")


def results(sweep: Sweep) -> list[dict]:
    """One row per configuration, from its trials' run folders: best mean final val accuracy first."""
    groups: dict[int, list[dict]] = {}
    for trial in sweep.trials:
        groups.setdefault(trial["configuration"], []).append(trial)
    rows = []
    for configuration, trials in groups.items():
        curves, epochs, wall = [], [], 0.0
        for trial in trials:
            history = _history(sweep, trial)
            if history:
                curves.append(history)
                epochs.append(len(history))
            wall += trial.get("wall_time_s") or 0.0
        finals = np.array([curve[-1] for curve in curves]) if curves else np.array([np.nan])
        common = min(epochs) if epochs else 0
        mean_curve = np.mean([curve[:common] for curve in curves], axis=0) if common else np.array([np.nan])
        row = dict(trials[0]["params"])
        row.update(
            configuration=configuration,
            seeds=len(curves),
            val_accuracy_mean=float(np.mean(finals)),
            val_accuracy_std=float(np.std(finals)),
            val_accuracy_min=float(np.min(finals)),
            val_accuracy_max=float(np.max(finals)),
            best_val_accuracy_mean=float(np.max(mean_curve)),
            best_epoch=int(np.argmax(mean_curve)) + 1 if common else 0,
            epochs=(f"{min(epochs)}" if epochs and min(epochs) == max(epochs)
                    else f"{min(epochs)}-{max(epochs)}" if epochs else "0"),
            wall_time_s=round(wall, 1),
            status=_group_status(trials),
            curves=[curve for curve in curves],
        )
        rows.append(row)
    rows.sort(key=lambda row: (math.isnan(row["val_accuracy_mean"]), -np.nan_to_num(row["val_accuracy_mean"], nan=0.0),
                               row["configuration"]))
    return rows


def _history(sweep: Sweep, trial: dict) -> list[float]:
    path = sweep.runs_dir / trial["run"]
    try:
        return runs.Run(path).history().get("val_accuracy") or []
    except runs.RunError:
        return []


def _group_status(trials: list[dict]) -> str:
    statuses = [trial["status"] for trial in trials]
    failed = [trial for trial in trials if trial["status"] == "failed"]
    if failed:
        return f"failed ({len(failed)} of {len(trials)} seeds): {failed[0].get('error') or 'unknown error'}"
    unfinished = sum(status not in FINISHED for status in statuses)
    if unfinished:
        return f"incomplete ({unfinished} of {len(trials)} seeds unfinished)"
    stopped = statuses.count("stopped")
    if stopped:
        return f"stopped early ({stopped} of {len(trials)} seeds)"
    return "complete"


def finish(sweep: Sweep, print_fn=print) -> list[dict]:
    """Writes results.csv, .json, .md, curves.png and (two swept fields) heatmap.png; prints the table."""
    rows = results(sweep)
    swept = sweep.state["settings"]["swept"]
    atomic.write_text(sweep.file("results.csv"), results_csv(rows, swept))
    atomic.write_json(sweep.file("results.json"), [{key: value for key, value in row.items() if key != "curves"}
                                                  for row in rows])
    atomic.write_text(sweep.file("results.md"), results_markdown(rows, swept))
    series = [{"label": label({name: row[name] for name in swept}), "val_accuracy": row["curves"]}
              for row in rows if row["curves"]]
    if series:
        plots.save_figure(plots_sweep.sweep_curves(series), sweep.file("curves.png"))
    grid = sweep.state["settings"].get("grid") or {}
    if len(swept) == 2 and len(grid) == 2:
        plots.save_figure(plots_sweep.sweep_heatmap(rows, swept, grid), sweep.file("heatmap.png"))
    print_fn(results_markdown(rows, swept))
    counts = {status: sum(trial["status"] == status for trial in sweep.trials) for status in FINISHED}
    print_fn(f"Done: {len(sweep.trials)} trials ({counts['complete']} complete, {counts['stopped']} stopped early, "
             f"{counts['failed']} failed). Results in {sweep.path}")
    return rows


def results_csv(rows: list[dict], swept: list[str]) -> str:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow([*swept, *RESULT_COLUMNS])
    for row in rows:
        writer.writerow([value_text(row[name]) for name in swept] + [_cell(row[column]) for column in RESULT_COLUMNS])
    return text.getvalue()


def results_markdown(rows: list[dict], swept: list[str]) -> str:
    header = [*swept, "seeds", "val acc mean", "std", "min", "max", "best mean (epoch)", "epochs", "time s", "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(swept) + "---:|" * 8 + "---|"]
    for row in rows:
        cells = [value_text(row[name]) for name in swept] + [
            str(row["seeds"]), _cell(row["val_accuracy_mean"]), _cell(row["val_accuracy_std"]),
            _cell(row["val_accuracy_min"]), _cell(row["val_accuracy_max"]),
            f"{_cell(row['best_val_accuracy_mean'])} ({row['best_epoch']})", row["epochs"],
            f"{row['wall_time_s']:.1f}", row["status"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)
