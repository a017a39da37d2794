"""Flags that `digitlab`'s commands share: the help formatter, --data, --runs-dir, --host and --port, one per
TrainConfig field, and the checks of flags against each other.

    from digitlab.cli import flags as cli_flags
    train = commands.add_parser("train", formatter_class=cli_flags.HelpFormatter)
    cli_flags.add_config_flags(train)               # --model, --units, ..., each from its dataclass field
    cli_flags.add_data_flag(train)
    config = cli_flags.config_from_args(parser.parse_args(["train", "--epochs", "5"]))

A flag's type, choices, help and default come from TrainConfig's field (see `digitlab.config`),
so a field added there reaches every command that takes config flags with nothing else to write.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from digitlab import config as config_module
from digitlab import errors, runs, text
from digitlab.config import MODEL_DEFAULTS, TrainConfig
from digitlab.serve import settings as serve_settings


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each flag's default (unless its help already says it) and keeps line breaks."""

    def _get_help_string(self, action):
        if action.default is None or "default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _model_defaults(field: str) -> str:
    return (
        "default: the model's own ("
        + ", ".join(f"{name} {text.value_text(values[field])}" for name, values in MODEL_DEFAULTS.items())
        + ")"
    )


def add_data_flag(parser: argparse.ArgumentParser) -> None:
    """Adds --data, where MNIST is read from."""
    parser.add_argument(
        "--data",
        metavar="PATH",
        default=None,
        help="MNIST as a Keras-style mnist.npz or a folder of the four IDX files (default: "
        "$DIGITLAB_DATA, then ~/.keras/datasets/mnist.npz, then a download through Keras)",
    )


def add_runs_dir_flag(parser: argparse.ArgumentParser, help_text: str = "folder that holds the run folders") -> None:
    """Adds --runs-dir, whose default is `runs.RUNS_DIR`."""
    parser.add_argument("--runs-dir", default=runs.RUNS_DIR, help=help_text)


def add_host_port_flags(parser: argparse.ArgumentParser, port: int) -> None:
    """Adds --host (loopback by default: `serve.settings.HOST`) and --port for a server."""
    parser.add_argument(
        "--host", default=serve_settings.HOST, help="address to listen on (loopback: only this machine)"
    )
    parser.add_argument("--port", type=int, default=port, help="port to listen on")


def add_config_flags(parser: argparse.ArgumentParser, names=None, defaults=None) -> None:
    """Adds a flag for each named TrainConfig field (all by default), from the field itself.

    The flag's type, choices, help and default come from the dataclass field (its type
    hint, its metadata and its default); `defaults` overrides a default for this parser.
    Fields left at None take the model's own value, which the help lists.
    """
    fields = {field.name: field for field in dataclasses.fields(TrainConfig)}
    for name in names or fields:
        field, defaults_here = fields[name], defaults or {}
        kind, is_list = config_module.field_type(name)
        default = defaults_here.get(name, field.default)
        help_text = field.metadata["help"]
        if default is None and name in next(iter(MODEL_DEFAULTS.values())):
            help_text += f"; {_model_defaults(name)}"
        options = dict(default=default, help=help_text, dest=name)
        if kind is bool:
            options["action"] = _BooleanGiven
        else:
            options["action"] = _StoreGiven
            options["type"] = kind
            if is_list:
                options["nargs"] = "+"
            if "choices" in field.metadata:
                options["choices"] = field.metadata["choices"]
        parser.add_argument("--" + name.replace("_", "-"), **options)


# The config flags a command line gave, by field name, on the parsed namespace (see `flags_given`).
_GIVEN = "config_flags_given"


class _StoreGiven(argparse.Action):
    """argparse's plain "store", which also notes that the flag was given."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        _note_given(namespace, self.dest)


class _BooleanGiven(argparse.BooleanOptionalAction):
    """--name / --no-name, which also notes that the flag was given."""

    def __call__(self, parser, namespace, values, option_string=None):
        super().__call__(parser, namespace, values, option_string)
        _note_given(namespace, self.dest)


def _note_given(namespace, name: str) -> None:
    given = list(getattr(namespace, _GIVEN, []))
    if name not in given:
        given.append(name)
    setattr(namespace, _GIVEN, given)


def flags_given(args) -> list[str]:
    """The TrainConfig fields whose flags the command line gave, in the order given."""
    return list(getattr(args, _GIVEN, []))


def config_from_args(args) -> TrainConfig:
    """The config a `train` command line asks for: its flags, or `--config FILE` with the flags given
    beside it overriding the file's values (`override_note` names those).

    A --model beside --config also brings that model's own defaults for the fields where the file
    holds its model's defaults (a saved config.json holds every value, resolved)."""
    if args.config:
        values = TrainConfig.load(args.config).to_dict()
        given = {name: getattr(args, name) for name in flags_given(args)}
        if given.get("model", values["model"]) != values["model"]:
            old_defaults = MODEL_DEFAULTS[values["model"]]
            for name, value in values.items():
                if name in old_defaults and name not in given and value == old_defaults[name]:
                    values[name] = None
        values.update(given)
        return TrainConfig.from_dict(values)
    return TrainConfig(**{field.name: getattr(args, field.name) for field in dataclasses.fields(TrainConfig)})


def refuse_settings_beside_resume(args) -> None:
    """--resume trains on with the run's own config.json: a setting given beside it would be ignored, so
    it is refused with what to do instead."""
    given = [f"--{name.replace('_', '-')}" for name in flags_given(args)]
    given += ["--config"] if args.config else []
    if given:
        config_file = Path(args.resume) / runs.CONFIG_FILE
        raise errors.DigitlabError(
            f"--resume continues a run with the settings of its own {config_file}, so {', '.join(given)} "
            "cannot be given with it. Change a setting in that file (epochs, to train longer), or start a new "
            f"run from it with `digitlab train --config {config_file}` and those flags."
        )


def override_note(args) -> str | None:
    """The line `train --config FILE` prints when flags beside it override the file's values, else None."""
    given = flags_given(args)
    if not args.config or not given:
        return None
    shown = ", ".join(f"{name} = {text.value_text(getattr(args, name))}" for name in given)
    return f"digitlab: the flags given beside --config override {args.config}'s values: {shown}"
