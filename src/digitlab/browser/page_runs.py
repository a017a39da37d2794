"""A run trained in the page, kept as an ordinary run folder (`digitlab runs`, `evaluate`, `report`,
`serve RUN` and `train --resume` open it).

The page sends (or downloads, as `page-run.json`) one JSON document:

    {"format": "digitlab-page-run", "version": 1,
     "run_id": "a 32-hex id the page drew when Train was pressed",
     "config": {TrainConfig fields, resolved, with its seed},
     "history": {"loss": [...], "accuracy": [...], "val_loss": [...], "val_accuracy": [...]},
     "weights": [{"name": "dense_0/kernel", "shape": [784, 64], "base64": float32 little-endian}, ...],
     "slots": [{"name": "momentum/dense_0/kernel", "shape": [50176], "base64": ...}, ...]  (the deep net's Adam),
     "status": "complete" | "interrupted", "wall_time_s": 12.3,
     "data_sha256": {"x_train": ..., ...}, "engine": "wasm (SIMD128, 2 threads)", "browser": "user agent"}

`save_page_run` checks it (known fields, the config by TrainConfig's own rules, a net the browser
trains, one history row per epoch, finite weights of the model's shapes, the same MNIST as this
machine's by SHA-256) and writes the folder: config.json, data.json, history, model.keras,
checkpoint.npz (weights, iterations, and the random state after the epochs done: the page draws its
orders as `digitlab train --seed` does, so `train --resume` goes on with the orders the page would
have used), curves.png, metrics.json,
then status.json. The folder is named from the run's id, so the same run sent twice is refused
(`AlreadySaved`) and never written over.

    run = page_runs.save_page_run(document, "runs", loaded=data.load())
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
import os
import re
import uuid
from pathlib import Path

import numpy as np

from digitlab import atomic, backends, checkpoint, data, errors, models, plots, runs
from digitlab import config as config_module
from digitlab.browser import prng, rules
from digitlab.config import ConfigError, TrainConfig
from digitlab.engine import FastEngine, spec
from digitlab.engine.spec import weight_names

FORMAT = "digitlab-page-run"
FORMAT_VERSION = 1
KEYS = {
    "format",
    "version",
    "run_id",
    "config",
    "history",
    "weights",
    "status",
    "wall_time_s",
    "data_sha256",
    "engine",
    "browser",
    "slots",
}
_RUN_ID = re.compile(r"[0-9a-f]{32}")
ENGINE_NAME = "browser-wasm"
_FLOAT_FIELDS = {
    field.name for field in dataclasses.fields(TrainConfig) if config_module.field_type(field.name)[0] is float
}


class PageRunError(errors.DigitlabError):
    """A page's run document is not one digitlab can keep; the message says what is wrong."""


class OtherData(PageRunError):
    """The run was trained on other MNIST arrays than this machine's."""


class AlreadySaved(PageRunError):
    """This run (by its id) is already a run folder here."""


def head(config: TrainConfig, data_sha256: dict, engine: str, browser: str) -> dict:
    """A page run document's settings, as the page writes them when Train is pressed: its format, a new
    run id, the resolved config, the MNIST it trains on (`data.Loaded.sha256`), and where it trains. The
    page adds history, weights and status as it goes; a class run sends this to begin (with `student`)."""
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "run_id": uuid.uuid4().hex,
        "config": config.resolved().to_dict(),
        "data_sha256": data_sha256,
        "engine": engine,
        "browser": browser,
    }


def folder_name(document: dict, config: TrainConfig) -> str:
    """The run folder's name: the net, the seed and the page's run id (so one run has one folder)."""
    return f"page-{config.model}-seed{config.seed}-{document['run_id'][:12]}"


def find_saved(runs_dir, run_id: str) -> runs.Run | None:
    """The run folder that already holds the page run `run_id`, if any."""
    folder = Path(runs_dir)
    if not folder.is_dir():
        return None
    for path in folder.glob(f"page-*-{run_id[:12]}"):
        if (path / runs.CONFIG_FILE).is_file():
            return runs.Run(path)
    return None


def read_document(path: Path) -> dict:
    """A downloaded page run (the page's Download run), read as JSON; PageRunError if it is not readable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PageRunError(f"No file at {path}; give the page-run JSON the page's Download run button saved.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PageRunError(f"{path} is not a readable JSON file ({error}).") from None


SETTINGS_KEYS = {"format", "version", "run_id", "config", "data_sha256", "engine", "browser"}


def check_settings(document, keys=SETTINGS_KEYS) -> TrainConfig:
    """A run's settings (its first submission, or the head of a whole page run): the config, checked."""
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise PageRunError(f'This is not a run from the page: a JSON object with "format": "{FORMAT}" is expected.')
    if document.get("version") != FORMAT_VERSION:
        raise PageRunError(
            f"This page run is format version {document.get('version')!r}; this digitlab reads {FORMAT_VERSION}."
        )
    unknown = sorted(set(document) - keys)
    if unknown:
        raise PageRunError(f"Unknown field(s) {', '.join(map(str, unknown))} in the page run.")
    if not isinstance(document.get("run_id"), str) or not _RUN_ID.fullmatch(document["run_id"]):
        raise PageRunError("run_id must be 32 lowercase hexadecimal digits.")
    values = document.get("config")
    if not isinstance(values, dict):
        raise PageRunError("config must be a JSON object of TrainConfig fields.")
    if values.get("model") not in rules.BROWSER_MODELS:
        raise PageRunError(f"The page trains the {' and '.join(rules.BROWSER_MODELS)} nets, not {values.get('model')}.")
    # JSON writes 1.0 as 1: whole numbers for float fields become floats, as the `train` flags parse them.
    values = {
        name: float(value)
        if name in _FLOAT_FIELDS and isinstance(value, int) and not isinstance(value, bool)
        else value
        for name, value in values.items()
    }
    try:
        config = TrainConfig.from_dict(values).resolved()
    except ConfigError as error:
        raise PageRunError(f"The run's config: {error}") from None
    if config.seed is None or config.seeds != 1:
        raise PageRunError("A page run has one network and records its seed; the config lacks them.")
    return config


def _finite(value: float) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:  # A whole number too large for a float.
        return False


def check_history(history, config: TrainConfig, at_least: int = 1) -> int:
    """Checks history lists (one finite number per epoch, the four alike); the number of epochs they hold."""
    if not isinstance(history, dict) or set(history) != set(runs.HISTORY_KEYS):
        raise PageRunError(f"history must hold exactly the lists {', '.join(runs.HISTORY_KEYS)}.")
    lengths = {len(values) if isinstance(values, list) else -1 for values in history.values()}
    if len(lengths) != 1 or min(lengths) < at_least:
        raise PageRunError("history's four lists must have one value per epoch trained (at least one), alike.")
    epochs_done = lengths.pop()
    assert config.epochs is not None
    if epochs_done > config.epochs:
        raise PageRunError(f"history holds {epochs_done} epochs but the config plans {config.epochs}.")
    for key, values in history.items():
        if not all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values):
            raise PageRunError(f"history[{key!r}] must hold numbers only.")
        if not all(_finite(value) for value in values):
            raise PageRunError(f"history[{key!r}] holds a value that is not a finite number.")
    return epochs_done


_EXPECTED: dict[str, list[tuple[str, tuple[int, ...]]]] = {}


def expected_weights(config: TrainConfig) -> list[tuple[str, tuple[int, ...]]]:
    """The weights' names and shapes for a config's net, built once per net and widths (a class sends
    thousands of epochs of a few nets; building a Keras model for each would cost more than the rest)."""
    key = json.dumps([config.model, config.units, config.to_dict().get("activation")], default=str)
    if key not in _EXPECTED:
        model = models.create_model(config)  # Compiled: spec.read_network reads its optimizer too.
        names = weight_names(spec.read_network(model, config))  # dense_0/kernel, ..., the deep net's gamma, beta
        _EXPECTED[key] = [(name, tuple(weight.shape)) for name, weight in zip(names, model.get_weights(), strict=True)]
    return _EXPECTED[key]


def check_weights(given, config: TrainConfig) -> list[np.ndarray]:
    """The weights sent as base64 float32 in Keras's order, checked (names, shapes, sizes, finite)."""
    expected = expected_weights(config)
    if not isinstance(given, list) or len(given) != len(expected):
        raise PageRunError(f"weights must be a list of {len(expected)} arrays: {', '.join(n for n, _ in expected)}.")
    weights = []
    for entry, (name, shape) in zip(given, expected, strict=True):
        if not isinstance(entry, dict) or entry.get("name") != name or tuple(entry.get("shape") or ()) != shape:
            raise PageRunError(f"The weights must come in Keras's order; expected {name} of shape {list(shape)}.")
        try:
            raw = base64.b64decode(entry.get("base64", ""), validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise PageRunError(f"{name}'s base64 does not decode.") from None
        if len(raw) != 4 * int(np.prod(shape)):
            raise PageRunError(f"{name} holds {len(raw)} bytes; {4 * int(np.prod(shape))} (float32) expected.")
        array = np.frombuffer(raw, "<f4").reshape(shape).copy()
        if not np.all(np.isfinite(array)):
            raise PageRunError(f"{name} holds values that are not finite numbers; the network diverged.")
        weights.append(array)
    return weights


def check_slots(given, config: TrainConfig) -> dict[str, np.ndarray]:
    """The optimizer's slots a page run of the deep net sends (Adam's momentum and velocity of every trained
    array, by the engine's state names, flat base64 float32), checked; {} when the page sent none."""
    if given is None:
        return {}
    expected = dict(expected_weights(config))
    if not isinstance(given, list):
        raise PageRunError("slots must be a list of arrays, each with its name, shape and base64.")
    slots = {}
    for entry in given:
        name = entry.get("name") if isinstance(entry, dict) else None
        slot, _, weight = str(name).partition("/")
        if slot not in ("momentum", "velocity") or weight not in expected:
            raise PageRunError(f"slots: {name!r} is not an optimizer slot of this net's weights.")
        size = int(np.prod(expected[weight]))
        try:
            raw = base64.b64decode(entry.get("base64", ""), validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise PageRunError(f"{name}'s base64 does not decode.") from None
        if len(raw) != 4 * size:
            raise PageRunError(f"{name} holds {len(raw)} bytes; {4 * size} (float32) expected.")
        array = np.frombuffer(raw, "<f4").reshape(expected[weight]).copy()
        if not np.all(np.isfinite(array)):
            raise PageRunError(f"{name} holds values that are not finite numbers.")
        slots[str(name)] = array
    return slots


def check(document) -> tuple[TrainConfig, dict, list[np.ndarray]]:
    """The run's config, history and weights, after checking everything (PageRunError says what is wrong)."""
    config = check_settings(document, KEYS)
    history = document.get("history")
    epochs_done = check_history(history, config)
    status = document.get("status")
    if status not in ("complete", "interrupted"):
        raise PageRunError('status must be "complete" or "interrupted".')
    if (status == "complete") != (epochs_done == config.epochs):
        raise PageRunError(f"A {status} run of {config.epochs} epochs cannot have {epochs_done} epochs of history.")
    return config, history, check_weights(document.get("weights"), config)


def save_page_run(document, runs_dir, loaded: data.Loaded) -> runs.Run:
    """Checks a page run (see `check`) and writes it as a run folder under `runs_dir`; the Run.

    A whole page run is the epoch-by-epoch submission sent at once: `begin`, `add_epochs`, `finish`."""
    config, history, weights = check(document)
    check_slots(document.get("slots"), config)
    run = begin(document, config, runs_dir, loaded)
    add_epochs(run, history)
    finish(run, config, document["status"], weights, document, loaded)
    return run


def begin(document, config: TrainConfig, runs_dir, loaded: data.Loaded, name: str | None = None) -> runs.Run:
    """A new run folder for a page run whose settings are checked (`check_settings`): config.json,
    data.json, an empty history and the status "running". OtherData or AlreadySaved refuse it."""
    if document.get("data_sha256") != loaded.sha256:
        raise OtherData(
            "The run was trained on other MNIST arrays than this machine's (their SHA-256s differ), so "
            "its evaluation here would not be its own; send it to the server whose page trained it."
        )
    saved = find_saved(runs_dir, document["run_id"])
    if saved is not None:
        raise AlreadySaved(
            f"This run was already kept, as {saved.name}; it is not written again. Train a new run to keep another one."
        )
    name = name or folder_name(document, config)
    try:
        run = runs.new_run(runs_dir, config, name=name)
    except runs.RunError:
        raise AlreadySaved(f"This run was already kept, as {name}; it is not written again.") from None
    run.write_json(runs.DATA_FILE, loaded.record())
    run.write_history([{key: [] for key in runs.HISTORY_KEYS}])
    run.set_status("running", epoch=0, source="page")
    config.save(run.file(runs.CONFIG_FILE))  # Last: a folder with config.json is a run (find_saved, list_runs).
    return run


def add_epochs(run: runs.Run, rows: dict, weights: list[np.ndarray] | None = None) -> int:
    """Appends checked history rows (`check_history`) to the run's history; with `weights`, records
    them as the last new epoch's (epochs/epoch-NNNN.npz, what the page's slider opens). The epochs done."""
    try:
        history = run.history()
    except runs.RunError:
        history = {key: [] for key in runs.HISTORY_KEYS}
    history = {key: [*history.get(key, []), *rows[key]] for key in runs.HISTORY_KEYS}
    epochs_done = len(history["val_accuracy"])
    if weights is not None:
        run.write_epoch(epochs_done, weights)
    run.write_history([history])
    status = run.status()
    if status.get("status") != "running" or status.get("pid") != os.getpid():
        # Once per process that keeps the run (a restarted server takes it over): the history says the epochs.
        run.set_status("running", epoch=epochs_done, source="page")
    return epochs_done


def finish(
    run: runs.Run,
    config: TrainConfig,
    status: str,
    weights: list[np.ndarray],
    document: dict,
    loaded: data.Loaded,
    source: str = "page",
) -> None:
    """Ends a page run with its final weights: model.keras, checkpoint.npz, curves.png, and metrics.json
    with the status "complete", or the status "interrupted" (resumable where the optimizer has no slots, or
    the page sent them: the deep net's Adam)."""
    history = run.history()
    epochs_done = len(history["val_accuracy"])
    network = models.create_seeded_models(config)[0]
    network.set_weights(weights)
    with backends.saving_without_tensorflow():
        atomic.atomic_save(run.model_path(), network.save)
    fast = FastEngine([network], config)
    state = fast.get_state()
    for name_, weight in zip(weight_names(fast.network), weights, strict=True):
        state[name_] = weight[np.newaxis]
    # The deep net: Adam's slots as the page ended with them, and the Dropout seed the page drew its masks from.
    sent = check_slots(document.get("slots"), config)
    for name_, slot in sent.items():
        state[name_] = slot[np.newaxis]
    if "dropout_seeds" in state:
        assert config.seed is not None  # check_settings refuses a page run without its seed.
        state["dropout_seeds"] = np.array([prng.dropout_seed(config.seed)], np.uint32)
    (train_inputs, _), _, _ = data.split(loaded.arrays, config.validation, config.train_limit)
    if "iterations" in state:
        steps = epochs_done * -(-len(train_inputs) // config.batch_size)
        state["iterations"] = np.full_like(state["iterations"], steps)
    # An optimizer with slots the page did not send (a class's runs are sent epoch by epoch, without them) would
    # resume from zeros: such a run gets no checkpoint (it opens, evaluates and reports; it does not resume).
    slots = [key for key in state if key not in {*weight_names(fast.network), *sent, "iterations", "dropout_seeds"}]
    # The page drew its orders as digitlab train does (RandomState(seed).permutation, one an epoch): the
    # generator after the epochs done is where a resumed run goes on, with the orders the page would have.
    generator = np.random.RandomState(config.seed)
    for _ in range(epochs_done):
        generator.permutation(len(train_inputs))
    if not slots:
        checkpoint.save(
            run.file(runs.CHECKPOINT_FILE),
            engine=fast.name,
            epoch=epochs_done,
            state=state,
            rngs=[generator],
            histories=[history],
            wall_time_s=float(document.get("wall_time_s") or 0.0),
        )
    plots.save_figure(
        plots.training_curves([history], title=f"{config.model} net (trained in a browser)"), run.file(runs.CURVES_FILE)
    )
    if status == "interrupted":
        run.set_status("interrupted", epoch=epochs_done, checkpoint_epoch=None if slots else epochs_done, source=source)
        return
    from digitlab import training  # Keras, loaded only when a page run is kept.

    wall_time_s = float(document.get("wall_time_s") or 0.0)
    machine = str(document.get("browser", "a browser"))[:300]
    metrics = {
        **training.complete_metrics(config, ENGINE_NAME, [history], wall_time_s, machine, loaded.sha256),
        "browser_engine": str(document.get("engine", ""))[:200],
        "page_run_id": document["run_id"],
    }
    run.write_json(runs.METRICS_FILE, metrics)
    run.set_status("complete", epoch=epochs_done, source=source)
