"""TrainConfig's rules for the page, generated from `digitlab.config`: one JSON document.

The page checks a setting before it trains and, for a bad value, shows the sentence
`digitlab train` prints. Nothing of it is retyped in JavaScript: `page_document()` reads each
field's type, default, choices and help from TrainConfig, finds the values
`TrainConfig.validate` accepts by asking it (the whole numbers or floats from the smallest
to the largest accepted), and takes each field's error sentence from `validate` itself, with
the bad value's place marked `{value}` (the page writes the value as Python's `repr` does).
The server serves the document at `/static/page.json`; `digitlab site` writes it beside the page.

    from digitlab.browser import rules
    document = rules.page_document()   # {"fields": {...}, "model_defaults": {...}, "tiles": {...}, ...}
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

import digitlab
from digitlab import config as config_module
from digitlab import runs
from digitlab.config import ConfigError, TrainConfig

# The TrainConfig fields the page offers; the rest keep their defaults.
PAGE_FIELDS = (
    "model",
    "loss",
    "activation",
    "learning_rate",
    "optimizer",
    "batch_size",
    "epochs",
    "seed",
    "train_limit",
)
# What the page calls each field (page.json carries them).
LABELS = {
    "model": "Net",
    "loss": "Loss",
    "activation": "Activation",
    "learning_rate": "Learning rate",
    "optimizer": "Optimizer",
    "batch_size": "Batch size",
    "epochs": "Epochs",
    "seed": "Seed",
    "train_limit": "Training images",
}
# The nets the browser engine trains: Dense layers, and the deep net's BatchNormalization, Dropout and Adam.
BROWSER_MODELS = ("shallow", "intermediate", "deep")
# Whole numbers beyond this are not exact in JavaScript; a field accepting it has no upper limit.
LARGEST_EXACT = 2**53
_INT_SENTINEL = -987_654_321_987
_FLOAT_SENTINEL = -987_654_321.5
_TEXT_SENTINEL = "zz-not-a-choice-zz"


def _base() -> TrainConfig:
    return TrainConfig(model="shallow").resolved()


def accepts(name: str, value) -> bool:
    """Whether TrainConfig.validate accepts `value` for field `name` (the other fields at the shallow net's)."""
    try:
        dataclasses.replace(_base(), **{name: value}).validate()
    except ConfigError as error:
        if error.field not in (name, None):
            raise
        return False
    return True


def sentence(name: str, value) -> str:
    """The sentence TrainConfig.validate gives for `value` in field `name` (what `digitlab train` prints)."""
    try:
        dataclasses.replace(_base(), **{name: value}).validate()
    except ConfigError as error:
        return str(error)
    raise ValueError(f"{value!r} is a valid {name}; there is no sentence for it.")


def _boundary(name: str, rejected, accepted, kind):
    """The accepted value next to the boundary between `rejected` and `accepted`, by bisection."""
    while True:
        middle = (rejected + accepted) // 2 if kind is int else (rejected + accepted) / 2
        if middle in (rejected, accepted):
            return accepted
        if accepts(name, middle):
            accepted = middle
        else:
            rejected = middle


def _numeric_range(name: str, kind, known) -> tuple:
    """The smallest and largest accepted values (None where there is no bound), found by asking validate."""
    far = LARGEST_EXACT if kind is int else 1e300
    low = None if accepts(name, -far) else _boundary(name, -far, known, kind)
    high = None if accepts(name, far) else _boundary(name, far, known, kind)
    return low, high


def _field_rule(field: dataclasses.Field, defaults: TrainConfig) -> dict:
    kind, is_list = config_module.field_type(field.name)
    rule: dict = {
        "type": {int: "int", float: "float", str: "str", bool: "bool"}.get(kind, "str"),
        "default": field.default,
        "help": field.metadata.get("help", ""),
        "optional": field.default is None,
    }
    choices = field.metadata.get("choices")
    if choices:
        rule["choices"] = list(choices)
        rule["sentence"] = sentence(field.name, _TEXT_SENTINEL).replace(repr(_TEXT_SENTINEL), "{value}")
    elif kind in (int, float) and not is_list:
        known = getattr(defaults, field.name)
        if known is None:
            known = 1
        low, high = _numeric_range(field.name, kind, kind(known))
        rule["min"], rule["max"] = low, high
        sentinel = _INT_SENTINEL if kind is int else _FLOAT_SENTINEL
        rule["sentence"] = sentence(field.name, sentinel).replace(repr(sentinel), "{value}")
    return rule


def engine_settings() -> dict:
    """Keras's BatchNormalization and Adam settings, as the native engine reads them from the deep net's layers
    (engine/spec.py): the page's engine trains the deep net with them (train-worker.js)."""
    import keras

    norm, adam = keras.layers.BatchNormalization(), keras.optimizers.Adam()
    return {
        "batch_norm": {"momentum": float(norm.momentum), "epsilon": float(norm.epsilon)},
        "adam": {"beta_1": float(adam.beta_1), "beta_2": float(adam.beta_2), "epsilon": float(adam.epsilon)},
    }


@functools.cache
def page_document() -> dict:
    """Everything the page takes from the package: fields and their rules, the nets' defaults, the
    nets the browser trains, the weight tiles' colour scale, and the version that wrote it."""
    from digitlab import evaluation
    from digitlab.plots import inside

    base = _base()
    fields = {field.name: field for field in dataclasses.fields(TrainConfig)}
    document = {
        "version": digitlab.__version__,
        "fields": {name: {**_field_rule(fields[name], base), "label": LABELS[name]} for name in PAGE_FIELDS},
        "model_defaults": {
            model: {key: value for key, value in values.items() if key in fields}
            for model, values in config_module.MODEL_DEFAULTS.items()
        },
        "browser_models": list(BROWSER_MODELS),
        "browser_model_sentence": (
            "The page trains the {browser} nets in your browser; train {value} with `digitlab train --model {value}`."
        ),
        "history_keys": list(runs.HISTORY_KEYS),
        "engine_settings": engine_settings(),
        # The end-of-run gallery of confident mistakes, as the server's evaluation shows it.
        "evaluation": {"gallery_size": evaluation.GALLERY_SIZE},
        "tiles": {
            "gap": inside.TILE_GAP,
            # Rows and columns of the first layer's tiles, per net (plots.inside.grid_shape).
            "grid": {
                model: list(inside.grid_shape(config_module.MODEL_DEFAULTS[model]["units"][0]))
                for model in BROWSER_MODELS
            },
            # hidden_units.png's diverging colours in 255 steps, -limit to +limit (RGB triples).
            "palette": np.asarray(inside.weight_palette()[: 255 * 3]).reshape(255, 3).tolist(),
        },
    }
    return document
