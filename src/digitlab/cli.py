"""The `digitlab` command: parses flags and calls the package; no logic of its own.

    digitlab explore                      # shapes, labels, counts, and the book's figures
    digitlab train                        # chapter 5 exactly: shallow net, 200 epochs
    digitlab train --model lenet          # the book's later nets
    digitlab train --resume RUN           # finish a run cut short
    digitlab predict RUN --index 0        # ask the trained network about a validation image
    digitlab predict RUN digit.png        # ... or about your own handwriting
    digitlab tensorboard RUN              # a run's --tensorboard logs in TensorBoard
    digitlab sweep --grid learning_rate=0.01,0.1 --seeds 3 --out sweeps/lr   # many runs at once, on Ray
    digitlab runs | compare | evaluate | report | serve | bench

Bad input (a flag, a file, a run folder) prints one clear `error:` line and exits
with status 2; Ctrl-C during training saves the run and exits with status 130.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import signal
import sys
import time
from pathlib import Path

from digitlab import config as config_module
from digitlab.config import MODEL_DEFAULTS, TrainConfig

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each flag's default (unless its help already says it) and keeps line breaks."""

    def _get_help_string(self, action):
        if action.default is None or "default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _model_defaults(field: str) -> str:
    return "default: the model's own (" + ", ".join(
        f"{name} {_format_default(values[field])}" for name, values in MODEL_DEFAULTS.items()
    ) + ")"


def _format_default(value) -> str:
    if isinstance(value, list):
        return " ".join(str(item) for item in value) or "none"
    return str(value)


def _add_data_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", metavar="PATH", default=None,
        help="MNIST as a Keras-style mnist.npz or a folder of the four IDX files (default: "
        "$DIGITLAB_DATA, then ~/.keras/datasets/mnist.npz, then a download through Keras)",
    )


def _add_runs_dir_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs-dir", default="runs", help="folder that holds the run folders")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="digitlab", formatter_class=HelpFormatter,
        description="The Shallow Net in Keras of Deep Learning Illustrated (chapter 5), and the book's later "
        "MNIST nets: look at the data, train, evaluate, compare, predict your own digits.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    explore = commands.add_parser("explore", help="look at MNIST: shapes, labels, counts, figures",
                                  formatter_class=HelpFormatter)
    _add_data_flag(explore)
    explore.add_argument("--out", default="figures", help="folder for the PNG figures")

    train = commands.add_parser("train", help="train a network (the book's shallow net by default)",
                                formatter_class=HelpFormatter)
    add_config_flags(train)
    train.add_argument("--config", metavar="CONFIG_JSON", default=None, help="re-run a saved config.json (flags are ignored)")
    train.add_argument("--resume", metavar="RUN", default=None, help="continue an interrupted run from its last checkpoint")
    _add_data_flag(train)
    _add_runs_dir_flag(train)

    predict = commands.add_parser("predict", help="ask a trained network about a validation image or image files",
                                  formatter_class=HelpFormatter)
    predict.add_argument("run", metavar="RUN", help="a run folder")
    predict.add_argument("images", metavar="IMAGE", nargs="*", help="image files of handwritten digits")
    predict.add_argument("--index", type=int, default=None, help="predict validation image N instead of files")
    predict.add_argument("--json", action="store_true", help="print JSON instead of text")
    predict.add_argument("--show", metavar="DIR", default=None, help="write the 28x28 input the network saw for each image into DIR")
    _add_data_flag(predict)

    listing = commands.add_parser("runs", help="list saved runs", formatter_class=HelpFormatter)
    _add_runs_dir_flag(listing)
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")

    evaluate = commands.add_parser("evaluate", help="accuracy, loss, per-digit scores, confusion matrix and mistakes of a run",
                                   formatter_class=HelpFormatter)
    evaluate.add_argument("run", metavar="RUN", help="a run folder")
    evaluate.add_argument("--split", default="validation", choices=("validation", "test"), help="'validation' scores the images the run validated on; 'test' the 10,000 test images (for a holdout run, the one final check)")
    evaluate.add_argument("--out", metavar="DIR", default=None, help="folder for evaluation.json, confusion.png and mistakes.png; None means the run folder")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of text")
    _add_data_flag(evaluate)

    compare = commands.add_parser("compare", help="overlay the val-accuracy curves of several runs and print a table",
                                  formatter_class=HelpFormatter)
    compare.add_argument("runs", metavar="RUN", nargs="+", help="run folders")
    compare.add_argument("--out", default="compare.png", help="the PNG to write")
    compare.add_argument("--json", action="store_true", help="print JSON instead of a table")

    report = commands.add_parser("report", help="write one self-contained HTML report of a run",
                                 formatter_class=HelpFormatter)
    report.add_argument("run", metavar="RUN", help="a run folder")
    report.add_argument("--out", metavar="FILE", default=None, help="the HTML file to write; None means RUN/report.html")
    _add_data_flag(report)

    serve = commands.add_parser("serve", help="a drawing page and an HTTP API for a trained network",
                                formatter_class=HelpFormatter)
    serve.add_argument("run", metavar="RUN", help="a run folder")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback: only this machine)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")

    from digitlab.board import DEFAULT_PORT

    board = commands.add_parser("tensorboard", help="show a run's --tensorboard logs in TensorBoard",
                                formatter_class=HelpFormatter)
    board.add_argument("run", metavar="RUN", help="a run folder trained with --tensorboard")
    board.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback: only this machine)")
    board.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on")
    sweep = commands.add_parser(
        "sweep", help="train many configurations and seeds at once on Ray Tune, and tabulate them",
        formatter_class=HelpFormatter,
        description="Every trial (one configuration, one seed) is a normal run folder under OUT/runs/; "
        "results go to OUT/results.csv, .json, .md, curves.png and (two swept fields) heatmap.png. "
        "Every train flag below applies to all trials; --grid and --sample values override it.\n\n"
        "  digitlab sweep --grid loss=mean_squared_error,categorical_crossentropy \\\n"
        "                 --grid activation=sigmoid,relu --grid learning_rate=0.01,0.1 \\\n"
        "                 --seeds 3 --epochs 20 --out sweeps/chapter8\n"
        "  digitlab sweep --sample learning_rate=loguniform:1e-3:1 --samples 20 --epochs 5\n"
        "  digitlab sweep --resume sweeps/chapter8",
    )
    sweep.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2,...",
                       help="sweep FIELD (any train flag's field, as in config.json) over these values; repeat "
                       "for more fields (the sweep is their product); list fields separate items by spaces: "
                       "--grid 'units=64 64,128 128' (default: none)")
    sweep.add_argument("--sample", action="append", default=[], metavar="FIELD=DIST:...",
                       help=sweep_module_help() + " (default: none)")
    sweep.add_argument("--samples", type=int, default=None,
                       help="how many random configurations --sample draws (default: 10 with --sample)")
    sweep.add_argument("--seeds", type=int, default=1,
                       help="seeds per configuration (SEED, SEED+1, ...), each its own trial")
    sweep.add_argument("--seed", type=int, default=0, help="the first seed; also seeds the draws of --sample")
    sweep.add_argument("--out", default=None,
                       help="the sweep folder, new or empty (default: sweeps/DATE-TIME)")
    sweep.add_argument("--resume", metavar="OUT", default=None,
                       help="finish an interrupted sweep: finished trials are kept, cut ones resume from their checkpoints")
    sweep.add_argument("--address", default=None,
                       help="HOST:PORT of a running Ray cluster, or 'auto' (default: an embedded Ray on this machine)")
    sweep.add_argument("--early-stop", action="store_true",
                       help="stop hopeless trials early with an ASHA scheduler on val_accuracy")
    sweep.add_argument("--cpus-per-trial", type=float, default=1.0,
                       help="CPUs Ray gives each trial (1: as many trials at once as cores)")
    sweep.add_argument("--yes", action="store_true", help=f"allow a sweep of more than {_trial_limit()} trials")
    add_config_flags(sweep, names=[field.name for field in dataclasses.fields(TrainConfig)
                                   if field.name not in ("seed", "seeds")])
    _add_data_flag(sweep)

    bench_defaults = _bench_defaults()
    bench = commands.add_parser("bench", help="time Keras fit (TensorFlow, JAX) against digitlab's engine, side by side",
                                formatter_class=HelpFormatter)
    add_config_flags(bench, names=("epochs", "seeds", "train_limit"), defaults=bench_defaults)
    bench.add_argument("--model", default="shallow", choices=("shallow", "lenet"), help="'shallow': fit against the engine, per epoch; 'lenet': fit's steps on each Keras backend and the default one")
    bench.add_argument("--steps", type=int, default=bench_defaults["steps"], help="--model lenet: the training steps timed per backend")
    bench.add_argument("--out", default="bench", help="folder for bench.json and bench.md")
    bench.add_argument("--compare-seeds", type=int, default=0, help="also compare the final val accuracy of this many seeds, engine against fit (0: skip)")
    bench.add_argument("--compare-epochs", type=int, default=bench_defaults["compare_epochs"], help="epochs of each run in the accuracy comparison")
    _add_data_flag(bench)
    return parser


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
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["type"] = kind
            if is_list:
                options["nargs"] = "+"
            if "choices" in field.metadata:
                options["choices"] = field.metadata["choices"]
        parser.add_argument("--" + name.replace("_", "-"), **options)


def config_from_args(args) -> TrainConfig:
    if args.config:
        return TrainConfig.load(args.config)
    return TrainConfig(**{field.name: getattr(args, field.name) for field in dataclasses.fields(TrainConfig)})


def sweep_module_help() -> str:
    from digitlab import sweep_plan

    return sweep_plan.SAMPLE_HELP


def _trial_limit() -> int:
    from digitlab import sweep_plan

    return sweep_plan.TRIAL_LIMIT


def _bench_defaults() -> dict:
    from digitlab import bench

    return bench.DEFAULTS


def command_explore(args) -> int:
    from digitlab import explore

    explore.explore(data_path=args.data, out_dir=args.out)
    return 0


def command_train(args) -> int:
    from digitlab import backends

    # The Keras backend is chosen per net before Keras is first imported (by `training`).
    if args.resume:
        backends.use_for(_resumed_model(args.resume))
    else:
        backends.use_for(config_from_args(args).model)
    from digitlab import training

    # SIGTERM (a closed terminal, `kill`) stops training the way Ctrl-C does: saved, resumable.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        if args.resume:
            training.resume(args.resume, data_path=args.data)
        else:
            config = config_from_args(args)
            config.resolved()  # Report a bad flag before loading anything.
            training.train(config, runs_dir=args.runs_dir, data_path=args.data)
    except training.TrainingInterrupted as stop:
        print(
            f"\nInterrupted after epoch {stop.epoch}; the run is saved. Resume it with:\n"
            f"  digitlab train --resume {stop.run.path}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return 0


def _resumed_model(run_path: str) -> str:
    """The model a run to resume was started with, read from its config.json without Keras.

    A missing or damaged run folder falls back to the default model here; `training.resume`
    then reports it properly.
    """
    from pathlib import Path

    try:
        return TrainConfig.load(Path(run_path) / "config.json").model
    except (OSError, ValueError):
        return TrainConfig().model


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def command_sweep(args) -> int:
    from digitlab import sweep, sweep_plan

    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        if args.resume:
            sweep.resume_sweep(args.resume, data_path=args.data, address=args.address)
            return 0
        if args.seeds < 1:
            raise ValueError(f"--seeds must be at least 1, got {args.seeds}.")
        base = TrainConfig(**{field.name: getattr(args, field.name) for field in dataclasses.fields(TrainConfig)
                              if field.name not in sweep_plan.NOT_SWEPT})
        samples = args.samples if args.samples is not None else (10 if args.sample else 0)
        sweep.run_sweep(
            base, grid=sweep_plan.parse_grid(args.grid), sample=sweep_plan.parse_sample(args.sample), samples=samples,
            sample_seed=args.seed, seeds=list(range(args.seed, args.seed + args.seeds)),
            out_dir=args.out or f"sweeps/{time.strftime('%Y%m%d-%H%M%S')}", data_path=args.data,
            address=args.address, early_stop=args.early_stop, cpus_per_trial=args.cpus_per_trial,
            yes=args.yes, command="digitlab " + shlex.join(args.argv),
        )
    except sweep.SweepInterrupted as stop:
        print(f"\nInterrupted; finished trials are saved. Resume the sweep with:\n"
              f"  digitlab sweep --resume {stop.out_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def command_predict(args) -> int:
    from digitlab import data, predict, runs

    run = runs.open_run(args.run)
    if args.index is not None and args.images:
        raise ValueError("Give either --index N or image files, not both.")
    if args.index is None and not args.images:
        raise ValueError("Say what to predict: --index N for a validation image, or one or more image files.")
    model = run.load_model()
    if args.index is not None:
        config = run.config()
        (_, _), (x_valid, y_valid), _ = data.split(data.load_arrays(args.data), config.validation)
        results = [predict.predict_index(model, x_valid, y_valid, args.index)]
    else:
        results = predict.predict_files(model, args.images, show_dir=args.show)
    if args.json:
        print(json.dumps(results if len(results) > 1 or args.images else results[0], indent=2))
    else:
        for result in results:
            print(predict.format_result(result))
    return 0


def command_runs(args) -> int:
    from digitlab import runs

    rows = runs.list_runs(args.runs_dir)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"No runs in {args.runs_dir}. Train one with `digitlab train`.")
        return 0
    print(format_runs_table(rows))
    return 0


def format_runs_table(rows: list[dict]) -> str:
    """A plain-text table of `runs.list_runs` rows."""
    header = ("run", "status", "model", "optimizer", "lr", "epochs", "best val", "final val", "engine", "time s", "date")
    lines = [header]
    for row in rows:
        lines.append((
            row["run"], row["status"], row.get("model", "?"), row.get("optimizer", "?"),
            _cell(row.get("learning_rate")), f"{row.get('epochs', 0)}/{row.get('epochs_planned', '?')}",
            _cell(row.get("best_val_accuracy"), ".4f"), _cell(row.get("final_val_accuracy"), ".4f"),
            row.get("engine") or "-", _cell(row.get("wall_time_s"), ".1f"), row.get("date") or "-",
        ))
    widths = [max(len(str(line[column])) for line in lines) for column in range(len(header))]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines)


def _cell(value, spec: str = "") -> str:
    if value is None:
        return "-"
    return format(value, spec)


def command_evaluate(args) -> int:
    from digitlab import evaluation, runs

    result = evaluation.evaluate_run(runs.open_run(args.run), data_path=args.data, split=args.split, out_dir=args.out)
    print(json.dumps(result, indent=2) if args.json else evaluation.format_result(result))
    return 0


def command_compare(args) -> int:
    from digitlab import compare

    rows = compare.compare_runs(args.runs, out_path=args.out)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(compare.format_table(rows))
        print(f"Wrote {args.out}")
    return 0


def command_report(args) -> int:
    from digitlab import report, runs, sweep_state

    if (Path(args.run) / sweep_state.STATE_FILE).is_file():
        path = report.write_sweep_report(sweep_state.open_sweep(args.run), out_path=args.out)
    else:
        path = report.write_report(runs.open_run(args.run), data_path=args.data, out_path=args.out)
    print(f"Wrote {path}")
    return 0


def command_serve(args) -> int:
    from digitlab import runs, serving

    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be from 1 to 65535, got {args.port}.")
    run = runs.open_run(args.run)
    serving.serve(run.load_model(), host=args.host, port=args.port, run_name=run.name)
    return 0


def command_tensorboard(args) -> int:
    from digitlab import board, runs

    return board.serve(runs.open_run(args.run), host=args.host, port=args.port)


def command_bench(args) -> int:
    from digitlab import bench

    if args.model == "lenet":
        bench.run_lenet_bench(steps=args.steps, out_dir=args.out, data_path=args.data)
        return 0
    bench.run_bench(epochs=args.epochs, seeds=args.seeds, out_dir=args.out, data_path=args.data,
                    train_limit=args.train_limit, compare_seeds=args.compare_seeds,
                    compare_epochs=args.compare_epochs)
    return 0


COMMANDS = {
    "explore": command_explore,
    "train": command_train,
    "predict": command_predict,
    "runs": command_runs,
    "evaluate": command_evaluate,
    "compare": command_compare,
    "report": command_report,
    "serve": command_serve,
    "tensorboard": command_tensorboard,
    "sweep": command_sweep,
    "bench": command_bench,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return COMMANDS[args.command](args)
    except ValueError as error:
        # Every bad input (flag, file, image, run folder) arrives here as a ValueError subclass.
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
