"""A sweep's plan: `--grid` and `--sample` parsed and checked, random samples drawn, and every trial named.

    from digitlab.sweep import plan as sweep_plan
    grid = sweep_plan.parse_grid(["activation=sigmoid,relu", "learning_rate=0.01,0.1"])
    samples = sweep_plan.draw_samples(sweep_plan.parse_sample(["dropout=uniform:0:0.5"]), count=10, seed=0)
    trials = sweep_plan.plan_trials(TrainConfig(epochs=20), grid, samples, seeds=[0, 1, 2])

Each value takes its TrainConfig field's type, and each trial's configuration is checked
as `digitlab train` checks it, so a bad sweep is refused before anything runs. Random
samples are drawn here with a seeded generator, not by a Tune searcher, so the plan is
whole before any trial starts (see `digitlab.sweep.runner`). `errors.SweepError` is every sweep's
bad-input error; `label` writes a configuration as the tables show it (`digitlab.text.value_text`).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, TypedDict

import numpy as np

from digitlab import config as config_module
from digitlab import errors, text
from digitlab.config import TrainConfig

# A sweep of more trials than this needs --yes: a typo in a grid should not start thousands of runs.
TRIAL_LIMIT = 1000
# Fields a sweep sets itself: each trial trains one seed (see --seed and --seeds).
NOT_SWEPT = ("seed", "seeds")
# The TrainConfig fields --grid and --sample may sweep (and every trial's train flags), in the config's order.
SWEPT_FIELDS = tuple(field.name for field in dataclasses.fields(TrainConfig) if field.name not in NOT_SWEPT)
DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice")
SAMPLE_HELP = (
    "draw FIELD at random, --samples times: uniform:LOW:HIGH, loguniform:LOW:HIGH, "
    "int:LOW:HIGH (whole numbers, both ends included) or choice:V1,V2,..."
)


class _PlannedTrial(TypedDict):
    index: int  # Its place in the plan (and in sweep.json's "trials").
    configuration: int  # Which configuration (grid point or sample) it trains; its seeds share it.
    params: dict[str, Any]  # The swept fields and their values, in the order of the flags.
    seed: int
    config: dict[str, Any]  # The whole resolved TrainConfig, as config.json holds it.
    run: str  # Its run folder's name under OUT/runs/.
    status: str  # pending, running, interrupted, complete, stopped or failed.


class Trial(_PlannedTrial, total=False):
    """One trial of a sweep, as sweep.json records it: planned here, then kept current by the sweep
    (`sweep.state`, `sweep.raytune`) and read by its results and report (`sweep.results`, `sweep.report`)."""

    epochs: int  # The last epoch reported.
    val_accuracy: float  # Its val accuracy then.
    wall_time_s: float  # Training time so far.
    error: str  # Why it failed.
    node: str  # The Ray node (its address) it trains or trained on.
    retries: int  # How many times Tune started it again after its worker or machine was lost...
    lost: list[str]  # ...and the node of each lost attempt.


# Parsing --grid and --sample.


def parse_grid(specs: list[str]) -> dict[str, list]:
    """`["learning_rate=0.01,0.1"]` -> `{"learning_rate": [0.01, 0.1]}`, each value of the field's type.

    List fields take their items separated by spaces, as the train flag does: `units=64 64,128 128`.
    """
    grid = {}
    for spec in specs:
        name, text = _split_assignment(spec, "--grid", "FIELD=V1,V2,...")
        if name in grid:
            raise errors.SweepError(f"--grid {name} is given twice; give all its values in one --grid {name}=V1,V2.")
        values = [item.strip() for item in text.split(",")]
        if not text.strip() or any(not item for item in values):
            raise errors.SweepError(
                f"--grid {spec!r} has an empty value; write --grid {name}=V1,V2,... with no empty item."
            )
        grid[name] = [parse_value(name, item) for item in values]
    return grid


def parse_sample(specs: list[str]) -> dict[str, tuple]:
    """`["learning_rate=loguniform:1e-3:1"]` -> `{"learning_rate": ("loguniform", 0.001, 1.0)}`."""
    samples: dict[str, tuple] = {}
    for spec in specs:
        name, text = _split_assignment(spec, "--sample", "FIELD=DIST:...")
        if name in samples:
            raise errors.SweepError(f"--sample {name} is given twice.")
        kind, _, rest = text.partition(":")
        kind = kind.strip()
        if kind not in DISTRIBUTIONS:
            raise errors.SweepError(f"--sample {spec!r}: unknown distribution {kind!r}. {SAMPLE_HELP}.")
        value_type, is_list = config_module.field_type(name)
        if kind == "choice":
            values = [item.strip() for item in rest.split(",")]
            if not rest.strip() or any(not item for item in values):
                raise errors.SweepError(f"--sample {spec!r} has an empty choice; write {name}=choice:V1,V2,...")
            samples[name] = ("choice", [parse_value(name, item) for item in values])
            continue
        if is_list or value_type not in (int, float) or (kind == "int") != (value_type is int):
            wanted = (
                "int:LOW:HIGH or choice"
                if value_type is int
                else ("uniform or loguniform" if value_type is float else "choice")
            )
            raise errors.SweepError(f"--sample {spec!r}: {name} takes {wanted}, not {kind}.")
        bounds = rest.split(":")
        if len(bounds) != 2:
            raise errors.SweepError(f"--sample {spec!r}: write {name}={kind}:LOW:HIGH.")
        low, high = (parse_value(name, bound.strip()) for bound in bounds)
        if not low < high:
            raise errors.SweepError(f"--sample {spec!r}: LOW must be below HIGH.")
        if kind == "loguniform" and low <= 0:
            raise errors.SweepError(f"--sample {spec!r}: loguniform needs LOW above 0.")
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
        raise errors.SweepError(f"{name} takes true or false, not {text!r}.")
    try:
        return value_type(text)
    except ValueError:
        kind = {int: "whole numbers", float: "numbers"}.get(value_type, "text")
        raise errors.SweepError(f"{name} takes {kind}; {text!r} is not one.") from None


def _split_assignment(spec: str, flag: str, form: str) -> tuple[str, str]:
    name, equals, text = spec.partition("=")
    name = name.strip().replace("-", "_")
    if not equals or not name:
        raise errors.SweepError(f"{flag} {spec!r} is not of the form {form}.")
    if name in NOT_SWEPT:
        raise errors.SweepError(
            f"{flag} cannot sweep {name}: every trial trains one seed; use --seed FIRST and --seeds N."
        )
    if name not in SWEPT_FIELDS:
        swept = ", ".join(SWEPT_FIELDS)
        raise errors.SweepError(f"{flag} {spec!r}: unknown field {name!r}. Sweepable fields: {swept}.")
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


def plan_trials(base: TrainConfig, grid: dict[str, list], samples: list[dict], seeds: list[int]) -> list[Trial]:
    """Every trial: each sampled assignment (or none) x each grid point x each seed, checked as `train` checks.

    Each is a `Trial` with status "pending", `config` its resolved TrainConfig as a dict and `run`
    its run folder's name.
    """
    names = list(grid)
    trials: list[Trial] = []
    for sample in samples or [{}]:
        for point in itertools.product(*(grid[name] for name in names)):
            params = dict(zip(names, point, strict=True), **sample)
            for seed in seeds:
                values = dict(base.to_dict(), **params, seed=seed, seeds=1)
                try:
                    resolved = TrainConfig(**values).resolved()
                except config_module.ConfigError as error:
                    shown = ", ".join(f"{name}={text.value_text(value)}" for name, value in params.items())
                    raise errors.SweepError(f"The configuration {shown} is not valid: {error}") from None
                index = len(trials)
                trials.append(
                    Trial(
                        index=index,
                        configuration=index // len(seeds),
                        params=params,
                        seed=seed,
                        config=resolved.to_dict(),
                        run=_run_name(index, params, seed),
                        status="pending",
                    )
                )
    return trials


def _run_name(index: int, params: dict, seed: int) -> str:
    words = "-".join(text.value_text(value).replace(" ", "x") for value in params.values())
    words = "".join(char if char.isalnum() or char in "._-" else "_" for char in words)[:60]
    return f"t{index:03d}-{words}-seed{seed}" if words else f"t{index:03d}-seed{seed}"


def label(params: dict) -> str:
    """A configuration as text: "activation=relu, learning_rate=0.1"."""
    return ", ".join(f"{name}={text.value_text(value)}" for name, value in params.items())
