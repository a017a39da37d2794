"""Every hyperparameter of a digitlab run, with the book's defaults in one place.

A run is described by one `TrainConfig`. Fields left at `None` take the chosen
model's defaults from `MODEL_DEFAULTS` (the settings the book uses for that net)
when the config is resolved. The resolved config is printed at the start of a
run, saved as `config.json` in the run folder, and can be loaded to re-run it:

    from digitlab import config
    cfg = config.TrainConfig(model="shallow").resolved()   # chapter 5 exactly
    cfg.save("runs/x/config.json")
    same = config.TrainConfig.load("runs/x/config.json")
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import typing
from pathlib import Path
from typing import TypeGuard

from digitlab import atomic, errors

# The book's settings for each of its MNIST nets (chapters 5, 8, 9 and 10).
MODEL_DEFAULTS: dict[str, dict] = {
    "shallow": dict(
        units=[64],
        filters=[],
        activation="sigmoid",
        batch_norm=False,
        dropout=[],
        loss="mean_squared_error",
        optimizer="sgd",
        learning_rate=0.01,
        epochs=200,
        book_val_accuracy=0.86,
    ),
    "intermediate": dict(
        units=[64, 64],
        filters=[],
        activation="relu",
        batch_norm=False,
        dropout=[],
        loss="categorical_crossentropy",
        optimizer="sgd",
        learning_rate=0.1,
        epochs=20,
        book_val_accuracy=0.976,
    ),
    "deep": dict(
        units=[64, 64, 64],
        filters=[],
        activation="relu",
        batch_norm=True,
        dropout=[0.2],
        loss="categorical_crossentropy",
        optimizer="adam",
        learning_rate=0.001,
        epochs=20,
        book_val_accuracy=0.977,
    ),
    "lenet": dict(
        units=[128],
        filters=[32, 64],
        activation="relu",
        batch_norm=False,
        dropout=[0.25, 0.5],
        loss="categorical_crossentropy",
        optimizer="adam",
        learning_rate=0.001,
        epochs=10,
        book_val_accuracy=0.992,
    ),
}
MODELS = tuple(MODEL_DEFAULTS)
ACTIVATIONS = ("sigmoid", "relu", "tanh", "elu", "selu", "linear")
LOSSES = ("mean_squared_error", "categorical_crossentropy")
OPTIMIZERS = ("sgd", "adam", "rmsprop")
ENGINES = ("auto", "fast", "fit")
VALIDATIONS = ("test", "holdout")
# The number of training images `--validation holdout` sets aside for validation.
HOLDOUT_SIZE = 10_000


def is_convolutional(model_name: str) -> bool:
    """True for models that take 28x28x1 images rather than 784-long vectors (also `models.is_convolutional`)."""
    return model_name == "lenet"


class ConfigError(errors.DigitlabError):
    """A configuration value is not allowed; `field` names the TrainConfig field (None for the whole config)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def _field(default, help: str, **metadata):
    """A TrainConfig field with the help text its command-line flag shows (and, optionally, choices)."""
    return dataclasses.field(default=default, metadata=dict(help=help, **metadata))


@dataclasses.dataclass
class TrainConfig:
    """The hyperparameters of one training run. `None` means "the model's default".

    Each field's metadata holds the help text (and choices) of its `digitlab train`
    flag, which the command line generates from these fields: a field added here
    is a flag there, with this default.
    """

    model: str = _field("shallow", "which of the book's nets", choices=MODELS)
    units: list[int] | None = _field(None, "hidden Dense widths")
    filters: list[int] | None = _field(None, "Conv2D filter counts (lenet)")
    activation: str | None = _field(None, "hidden activation", choices=ACTIVATIONS)
    batch_norm: bool | None = _field(None, "BatchNormalization after each hidden Dense layer")
    dropout: list[float] | None = _field(None, "Dropout rates")
    loss: str | None = _field(None, "loss function", choices=LOSSES)
    optimizer: str | None = _field(None, "optimizer", choices=OPTIMIZERS)
    learning_rate: float | None = _field(None, "optimizer step size")
    momentum: float = _field(0.0, "SGD momentum")
    batch_size: int = _field(128, "images per gradient step")
    epochs: int | None = _field(None, "passes over the training images")
    seed: int | None = _field(
        None,
        "random seed; the same seed on the same machine and backend repeats a run "
        "(default: a random seed, recorded in the run)",
    )
    seeds: int = _field(1, "train this many networks side by side (seeds SEED, SEED+1, ...) and plot their spread")
    validation: str = _field(
        "test",
        "'test' validates on the 10,000 test images as the book does; 'holdout' holds out "
        "10,000 training images and touches the test set once, at the end",
        choices=VALIDATIONS,
    )
    engine: str = _field(
        "auto",
        "'fit' is Keras's model.fit; 'fast' is digitlab's engine; 'auto' uses fast where it supports the model",
        choices=ENGINES,
    )
    train_limit: int | None = _field(None, "use only the first N training images (quick experiments; default: all)")
    checkpoint_every: int = _field(1, "save a checkpoint every N epochs (0: never)")
    checkpoint_seconds: float = _field(
        5.0,
        "save a checkpoint at most every N seconds (0: after every epoch checkpoint_every allows), and "
        "always after the last epoch and on an interrupt; a killed run resumes from its last one",
    )
    tensorboard: bool = _field(False, "also write TensorBoard logs into the run folder")
    record_epochs: bool = _field(
        False,
        "also keep every epoch's weights at float16 in the run folder (epochs/; about 100 KB an epoch "
        "for the shallow net), for the epoch slider of `digitlab serve`",
    )

    def resolved(self) -> TrainConfig:
        """Returns a copy with every `None` replaced by the model's default, after checking it."""
        _check_choice("model", self.model, MODELS)
        defaults = MODEL_DEFAULTS[self.model]
        values = dataclasses.asdict(self)
        for name, value in values.items():
            if value is None and name in defaults:
                values[name] = defaults[name]
        resolved = TrainConfig(**values)
        resolved.validate()
        return resolved

    def validate(self) -> None:
        """Raises ConfigError with a sentence naming the bad field, its value and what is allowed.

        The checks are strict about types, as the flags are: a string is not a boolean or a
        number ("2" is not 2, "false" is not false), and a boolean is not a number.
        """
        _check_choice("model", self.model, MODELS)
        defaults = MODEL_DEFAULTS[self.model]
        for name in _BOOLEAN_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ConfigError(f"{name} must be true or false, got {value!r}.", field=name)
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("loss", self.loss, LOSSES)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("engine", self.engine, ENGINES)
        _check_choice("validation", self.validation, VALIDATIONS)
        if (
            not isinstance(self.units, list)
            or not self.units
            or any(not _is_int(u) or not 1 <= u <= 100_000 for u in self.units)
        ):
            raise ConfigError(f"units must be whole numbers from 1 to 100000, got {self.units!r}.", field="units")
        if len(self.units) != len(defaults["units"]):
            raise ConfigError(
                f"The {self.model} net has {len(defaults['units'])} hidden Dense layer(s), "
                f"so give {len(defaults['units'])} value(s) for units, not {len(self.units)}.",
                field="units",
            )
        if (
            not isinstance(self.filters, list)
            or len(self.filters) != len(defaults["filters"])
            or any(not _is_int(f) or not 1 <= f <= 4096 for f in self.filters)
        ):
            raise ConfigError(
                f"The {self.model} net takes {len(defaults['filters'])} filter count(s) "
                f"from 1 to 4096, got {self.filters!r}.",
                field="filters",
            )
        if (
            not isinstance(self.dropout, list)
            or len(self.dropout) != len(defaults["dropout"])
            or any(not _is_number(rate) or not 0.0 <= rate < 1.0 for rate in self.dropout)
        ):
            raise ConfigError(
                f"The {self.model} net has {len(defaults['dropout'])} Dropout layer(s); give "
                f"that many rates, each at least 0 and below 1, not {self.dropout!r}.",
                field="dropout",
            )
        if not _is_number(self.learning_rate) or not 0.0 < self.learning_rate <= 10.0:
            raise ConfigError(
                f"learning_rate must be a number above 0 and at most 10, got {self.learning_rate!r}.",
                field="learning_rate",
            )
        if not _is_number(self.momentum) or not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"momentum must be at least 0 and below 1, got {self.momentum!r}.", field="momentum")
        if not _is_int(self.batch_size) or not 1 <= self.batch_size <= 60_000:
            raise ConfigError(
                f"batch_size must be a whole number from 1 to 60000, got {self.batch_size!r}.", field="batch_size"
            )
        if not _is_int(self.epochs) or not 1 <= self.epochs <= 100_000:
            raise ConfigError(f"epochs must be a whole number from 1 to 100000, got {self.epochs!r}.", field="epochs")
        if self.seed is not None and (not _is_int(self.seed) or not 0 <= self.seed < 2**31):
            raise ConfigError(f"seed must be a whole number from 0 to 2147483647, got {self.seed!r}.", field="seed")
        if not _is_int(self.seeds) or not 1 <= self.seeds <= 1024:
            raise ConfigError(f"seeds must be a whole number from 1 to 1024, got {self.seeds!r}.", field="seeds")
        if self.train_limit is not None and (not _is_int(self.train_limit) or self.train_limit < 1):
            raise ConfigError(
                f"train_limit must be a positive whole number, got {self.train_limit!r}.", field="train_limit"
            )
        if not _is_int(self.checkpoint_every) or self.checkpoint_every < 0:
            raise ConfigError(
                "checkpoint_every must be 0 (no checkpoints) or a positive number of epochs, "
                f"got {self.checkpoint_every!r}.",
                field="checkpoint_every",
            )
        if not _is_number(self.checkpoint_seconds) or not 0.0 <= self.checkpoint_seconds <= 86_400.0:
            raise ConfigError(
                f"checkpoint_seconds must be a number from 0 to 86400, got {self.checkpoint_seconds!r}.",
                field="checkpoint_seconds",
            )

    def check_resumable(self, checkpoint_epoch: int, source: str | Path = "config.json") -> None:
        """Raises ConfigError if `epochs` (read from `source`) is below the epoch a checkpoint reached."""
        if self.epochs is not None and self.epochs < checkpoint_epoch:
            raise ConfigError(
                f"epochs in {source} is {self.epochs}, below the {checkpoint_epoch} epochs its checkpoint has "
                f"already trained; set epochs to {checkpoint_epoch} or more (up to 100000) to resume, "
                "or start a new run.",
                field="epochs",
            )

    @property
    def book_val_accuracy(self) -> float:
        """The validation accuracy the book reports for this model with its settings."""
        return MODEL_DEFAULTS[self.model]["book_val_accuracy"]

    def to_dict(self) -> dict:
        """The config as a plain dict of its fields, as config.json holds it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Builds a config from a dict (a saved config.json, a request), checking it as the flags are checked.

        Unknown keys and every bad value raise ConfigError (see `validate`); fields left out or
        `None` keep their defaults, so the config returned is not resolved yet.
        """
        if not isinstance(values, dict):
            raise ConfigError("A config must be a JSON object of field names and values.")
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(str(name) for name in set(values) - names)
        if unknown:
            raise ConfigError(
                f"Unknown config field(s) {', '.join(unknown)}; known fields are: {', '.join(sorted(names))}."
            )
        config = cls(**values)
        config.resolved()  # Every rule, strictly typed, on a copy; the fields left at None stay None.
        return config

    def save(self, path: str | Path) -> None:
        """Writes the config as JSON, atomically (see `digitlab.atomic`)."""
        atomic.write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Loads a saved config.json; a missing or malformed file raises ConfigError."""
        path = Path(path)
        try:
            values = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"No config file at {path}.") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ConfigError(f"The config file {path} is not readable JSON ({error}).") from None
        return cls.from_dict(values).resolved()

    def describe(self) -> str:
        """The config as aligned `name: value` lines, for printing at the start of a run."""
        values = self.to_dict()
        width = max(len(name) for name in values)
        return "\n".join(f"  {name.ljust(width)}  {value}" for name, value in values.items())


@functools.cache
def _type_hints() -> dict:
    # TrainConfig's annotations evaluated once (a quarter of a millisecond each time; the CLI asks ~65 times).
    return typing.get_type_hints(TrainConfig)


def field_type(name: str) -> tuple[type, bool]:
    """The value type of a TrainConfig field and whether it holds a list: ("units") -> (int, True)."""
    hint = _type_hints()[name]
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)] or [hint]
    kind = args[0]
    if typing.get_origin(kind) is list:
        return typing.get_args(kind)[0], True
    return kind, False


_BOOLEAN_FIELDS = tuple(field.name for field in dataclasses.fields(TrainConfig) if field_type(field.name)[0] is bool)


def _check_choice(name: str, value, choices: tuple[str, ...]) -> None:
    # A list or an object is never a choice (and is not hashable: `in` a dict would raise TypeError).
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"Unknown {name} {value!r}. Choose one of: {', '.join(choices)}.", field=name)


def _is_int(value) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
