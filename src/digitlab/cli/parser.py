"""`digitlab`'s argument parser: one small function per subcommand that adds its flags.

    from digitlab.cli import parser as cli_parser
    args = cli_parser.build_parser().parse_args(["train", "--epochs", "5"])

The flags shared by several commands (--data, --runs-dir, --host and --port, one per `TrainConfig`
field) come from `digitlab.cli.flags`, and `digitlab sweep`'s from `digitlab.cli.sweep`; a default
comes from the package module that owns it (`runs.RUNS_DIR`, `serve.settings`, `bench.runner.DEFAULTS`).
"""

from __future__ import annotations

import argparse

from digitlab import runs
from digitlab.cli import flags as cli_flags
from digitlab.cli import sweep as cli_sweep
from digitlab.serve import settings as serve_settings


def build_parser() -> argparse.ArgumentParser:
    """The `digitlab` command's parser: one subcommand per `COMMANDS` entry, each added by its own function."""
    parser = argparse.ArgumentParser(
        prog="digitlab",
        formatter_class=cli_flags.HelpFormatter,
        description="The Shallow Net in Keras of Deep Learning Illustrated (chapter 5), and the book's later "
        "MNIST nets: look at the data, train, evaluate, compare, predict your own digits.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_explore(commands)
    _add_train(commands)
    _add_predict(commands)
    _add_runs(commands)
    _add_evaluate(commands)
    _add_compare(commands)
    _add_report(commands)
    _add_serve(commands)
    _add_site(commands)
    _add_import(commands)
    _add_tensorboard(commands)
    cli_sweep.add_parser(commands)
    _add_bench(commands)
    return parser


def _command(commands, name: str, help_text: str) -> argparse.ArgumentParser:
    return commands.add_parser(name, help=help_text, formatter_class=cli_flags.HelpFormatter)


def _add_explore(commands) -> None:
    explore = _command(commands, "explore", "look at MNIST: shapes, labels, counts, figures")
    cli_flags.add_data_flag(explore)
    explore.add_argument("--out", default="figures", help="folder for the PNG figures")


def _add_train(commands) -> None:
    train = _command(commands, "train", "train a network (the book's shallow net by default)")
    cli_flags.add_config_flags(train)
    train.add_argument(
        "--config",
        metavar="CONFIG_JSON",
        default=None,
        help="start from a saved config.json (a run's, or one you wrote); a flag given beside it overrides "
        "the file's value for that field, and the command says which it overrode",
    )
    train.add_argument(
        "--resume", metavar="RUN", default=None, help="continue an interrupted run from its last checkpoint"
    )
    cli_flags.add_data_flag(train)
    cli_flags.add_runs_dir_flag(train)


def _add_predict(commands) -> None:
    predict = _command(commands, "predict", "ask a trained network about a validation image or image files")
    predict.add_argument("run", metavar="RUN", help="a run folder")
    predict.add_argument("images", metavar="IMAGE", nargs="*", help="image files of handwritten digits")
    predict.add_argument("--index", type=int, default=None, help="predict validation image N instead of files")
    predict.add_argument("--json", action="store_true", help="print JSON instead of text")
    predict.add_argument(
        "--show", metavar="DIR", default=None, help="write the 28x28 input the network saw for each image into DIR"
    )
    cli_flags.add_data_flag(predict)


def _add_runs(commands) -> None:
    listing = _command(commands, "runs", "list saved runs")
    cli_flags.add_runs_dir_flag(listing)
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _add_evaluate(commands) -> None:
    evaluate = _command(
        commands, "evaluate", "accuracy, loss, per-digit scores, confusion matrix and mistakes of a run"
    )
    evaluate.add_argument("run", metavar="RUN", help="a run folder")
    evaluate.add_argument(
        "--split",
        default="validation",
        choices=("validation", "test"),
        help="'validation' scores the images the run validated on; 'test' the 10,000 test images "
        "(for a holdout run, the one final check)",
    )
    evaluate.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="folder for evaluation.json, confusion.png and mistakes.png; None means the run folder",
    )
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of text")
    cli_flags.add_data_flag(evaluate)


def _add_compare(commands) -> None:
    compare = _command(commands, "compare", "overlay the val-accuracy curves of several runs and print a table")
    compare.add_argument("runs", metavar="RUN", nargs="+", help="run folders")
    compare.add_argument("--out", default="compare.png", help="the PNG to write")
    compare.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _add_report(commands) -> None:
    report = _command(commands, "report", "write one self-contained HTML report of a run")
    report.add_argument("run", metavar="RUN", help="a run folder")
    report.add_argument(
        "--out", metavar="FILE", default=None, help="the HTML file to write; None means RUN/report.html"
    )
    cli_flags.add_data_flag(report)


def _add_serve(commands) -> None:
    serve = _command(
        commands, "serve", "the page (it trains in your browser): runs live, your handwriting read, the API"
    )
    serve.add_argument("run", metavar="RUN", nargs="?", default=None, help="a run folder to open (default: none)")
    cli_flags.add_host_port_flags(serve, serve_settings.PORT)
    serve.add_argument(
        "--runs-dir",
        default=None,
        help=f"folder of the runs the page lists and keeps (default: RUN's folder, else {runs.RUNS_DIR})",
    )
    serve.add_argument(
        "--token",
        default=None,
        help="the operator's token (keeps the page's runs here), needed on every request when --host is not loopback "
        "(default: generated and printed in a link)",
    )
    serve.add_argument(
        "--view-token",
        default=None,
        help="the view-only token (watch, draw) (default: generated when a token is needed)",
    )
    serve.add_argument(
        "--max-viewers", type=int, default=serve_settings.MAX_VIEWERS, help="the most event streams open at once"
    )
    serve.add_argument(
        "--class",
        dest="classroom",
        action="store_true",
        help="a class: each student's page trains and sends its run here (a students' link is printed)",
    )
    serve.add_argument("--class-board", action="store_true", help="with --class, students see the class board too")
    serve.add_argument(
        "--class-cap-mb",
        type=float,
        default=serve_settings.CLASS_CAP_MB,
        help="with --class, the most the runs folder may hold, in MB",
    )
    cli_flags.add_data_flag(serve)


def _add_site(commands) -> None:
    site = _command(commands, "site", "write the page, its engine and MNIST as static files that train in any browser")
    site.add_argument("folder", metavar="DIR", help="a new or empty folder, or a previous site's to replace it")
    cli_flags.add_data_flag(site)


def _add_import(commands) -> None:
    keep = _command(commands, "import", "keep a run trained in the page (its downloaded page-run JSON) as a run folder")
    keep.add_argument("file", metavar="FILE", help="the page-run JSON file the page's Download run button saved")
    cli_flags.add_runs_dir_flag(keep, help_text="folder to keep the run folder in")
    cli_flags.add_data_flag(keep)


def _add_tensorboard(commands) -> None:
    from digitlab.serve import board

    tensorboard = _command(commands, "tensorboard", "show a run's --tensorboard logs in TensorBoard")
    tensorboard.add_argument("run", metavar="RUN", help="a run folder trained with --tensorboard")
    cli_flags.add_host_port_flags(tensorboard, board.DEFAULT_PORT)


def _add_bench(commands) -> None:
    from digitlab.bench import runner as bench_runner

    defaults = bench_runner.DEFAULTS
    bench = _command(commands, "bench", "time Keras fit (TensorFlow, JAX) against digitlab's engine, side by side")
    cli_flags.add_config_flags(bench, names=("epochs", "seeds", "train_limit"), defaults=defaults)
    bench.add_argument(
        "--model",
        default="shallow",
        choices=("shallow", "deep", "lenet"),
        help="'shallow' (chapter 5) or 'deep' (chapter 9): fit against the engine, per epoch; "
        "'lenet': fit's steps on each Keras backend and the default one",
    )
    bench.add_argument(
        "--steps", type=int, default=defaults["steps"], help="--model lenet: the training steps timed per backend"
    )
    bench.add_argument("--out", default="bench", help="folder for bench.json and bench.md")
    bench.add_argument(
        "--compare-seeds",
        type=int,
        default=0,
        help="also compare the final val accuracy of this many seeds, engine against fit (0: skip)",
    )
    bench.add_argument(
        "--compare-epochs",
        type=int,
        default=defaults["compare_epochs"],
        help="epochs of each run in the accuracy comparison",
    )
    bench.add_argument(
        "--profile",
        action="store_true",
        help="also measure where the engine's epochs go, phase by phase, against each phase's limit",
    )
    cli_flags.add_data_flag(bench)
