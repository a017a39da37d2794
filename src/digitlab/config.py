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
import json
import math
from pathlib import Path

# The book's settings for each of its MNIST nets (chapters 5, 8, 9 and 10).
MODEL_DEFAULTS: dict[str, dict] = {
    "shallow": dict(
        units=[64], filters=[], activation="sigmoid", batch_norm=False, dropout=[],
        loss="mean_squared_error", optimizer="sgd", learning_rate=0.01, epochs=200,
        book_val_accuracy=0.86,
    ),
    "intermediate": dict(
        units=[64, 64], filters=[], activation="relu", batch_norm=False, dropout=[],
        loss="categorical_crossentropy", optimizer="sgd", learning_rate=0.1, epochs=20,
        book_val_accuracy=0.976,
    ),
    "deep": dict(
        units=[64, 64, 64], filters=[], activation="relu", batch_norm=True, dropout=[0.2],
        loss="categorical_crossentropy", optimizer="adam", learning_rate=0.001, epochs=20,
        book_val_accuracy=0.977,
    ),
    "lenet": dict(
        units=[128], filters=[32, 64], activation="relu", batch_norm=False, dropout=[0.25, 0.5],
        loss="categorical_crossentropy", optimizer="adam", learning_rate=0.001, epochs=10,
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


@dataclasses.dataclass
class TrainConfig:
    """The hyperparameters of one training run. `None` means "the model's default"."""

    model: str = "shallow"
    units: list[int] | None = None
    filters: list[int] | None = None
    activation: str | None = None
    batch_norm: bool | None = None
    dropout: list[float] | None = None
    loss: str | None = None
    optimizer: str | None = None
    learning_rate: float | None = None
    momentum: float = 0.0
    batch_size: int = 128
    epochs: int | None = None
    seed: int | None = None
    seeds: int = 1
    validation: str = "test"
    engine: str = "auto"
    train_limit: int | None = None
    checkpoint_every: int = 1
    tensorboard: bool = False

    def resolved(self) -> "TrainConfig":
        """Returns a copy with every `None` replaced by the model's default, after checking it."""
        if self.model not in MODEL_DEFAULTS:
            raise ValueError(
                f"Unknown model {self.model!r}. Choose one of: {', '.join(MODELS)}."
            )
        defaults = MODEL_DEFAULTS[self.model]
        values = dataclasses.asdict(self)
        for name, value in values.items():
            if value is None and name in defaults:
                values[name] = defaults[name]
        resolved = TrainConfig(**values)
        resolved.validate()
        return resolved

    def validate(self) -> None:
        """Raises ValueError with a sentence naming the bad field and what is allowed."""
        defaults = MODEL_DEFAULTS.get(self.model)
        if defaults is None:
            raise ValueError(f"Unknown model {self.model!r}. Choose one of: {', '.join(MODELS)}.")
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("loss", self.loss, LOSSES)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("engine", self.engine, ENGINES)
        _check_choice("validation", self.validation, VALIDATIONS)
        if not self.units or any(not _is_int(u) or u < 1 or u > 100_000 for u in self.units):
            raise ValueError(f"units must be whole numbers from 1 to 100000, got {self.units!r}.")
        if len(self.units) != len(defaults["units"]):
            raise ValueError(
                f"The {self.model} net has {len(defaults['units'])} hidden Dense layer(s), "
                f"so give {len(defaults['units'])} value(s) for units, not {len(self.units)}."
            )
        if len(self.filters) != len(defaults["filters"]) or any(
            not _is_int(f) or f < 1 or f > 4096 for f in self.filters
        ):
            raise ValueError(
                f"The {self.model} net takes {len(defaults['filters'])} filter count(s) "
                f"from 1 to 4096, got {self.filters!r}."
            )
        if len(self.dropout) != len(defaults["dropout"]) or any(
            not _is_number(rate) or not 0.0 <= rate < 1.0 for rate in self.dropout
        ):
            raise ValueError(
                f"The {self.model} net has {len(defaults['dropout'])} Dropout layer(s); give "
                f"that many rates, each at least 0 and below 1, not {self.dropout!r}."
            )
        if not _is_number(self.learning_rate) or not 0.0 < self.learning_rate <= 10.0:
            raise ValueError(
                f"learning_rate must be a number above 0 and at most 10, got {self.learning_rate!r}."
            )
        if not _is_number(self.momentum) or not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be at least 0 and below 1, got {self.momentum!r}.")
        if not _is_int(self.batch_size) or not 1 <= self.batch_size <= 60_000:
            raise ValueError(f"batch_size must be a whole number from 1 to 60000, got {self.batch_size!r}.")
        if not _is_int(self.epochs) or not 1 <= self.epochs <= 100_000:
            raise ValueError(f"epochs must be a whole number from 1 to 100000, got {self.epochs!r}.")
        if self.seed is not None and (not _is_int(self.seed) or not 0 <= self.seed < 2**31):
            raise ValueError(f"seed must be a whole number from 0 to 2147483647, got {self.seed!r}.")
        if not _is_int(self.seeds) or not 1 <= self.seeds <= 1024:
            raise ValueError(f"seeds must be a whole number from 1 to 1024, got {self.seeds!r}.")
        if self.train_limit is not None and (not _is_int(self.train_limit) or self.train_limit < 1):
            raise ValueError(f"train_limit must be a positive whole number, got {self.train_limit!r}.")
        if not _is_int(self.checkpoint_every) or self.checkpoint_every < 0:
            raise ValueError(
                "checkpoint_every must be 0 (no checkpoints) or a positive number of epochs, "
                f"got {self.checkpoint_every!r}."
            )

    @property
    def book_val_accuracy(self) -> float:
        """The validation accuracy the book reports for this model with its settings."""
        return MODEL_DEFAULTS[self.model]["book_val_accuracy"]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Builds a config from a dict (a saved config.json), rejecting unknown keys."""
        if not isinstance(values, dict):
            raise ValueError("A config must be a JSON object of field names and values.")
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(
                f"Unknown config field(s) {', '.join(unknown)}; known fields are: {', '.join(sorted(names))}."
            )
        return cls(**values)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        """Loads a saved config.json; a missing or malformed file raises ValueError."""
        path = Path(path)
        try:
            values = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"No config file at {path}.") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"The config file {path} is not readable JSON ({error}).") from None
        return cls.from_dict(values).resolved()

    def describe(self) -> str:
        """The config as aligned `name: value` lines, for printing at the start of a run."""
        values = self.to_dict()
        width = max(len(name) for name in values)
        return "\n".join(f"  {name.ljust(width)}  {value}" for name, value in values.items())


def _check_choice(name: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"Unknown {name} {value!r}. Choose one of: {', '.join(choices)}.")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )
