"""The `digitlab` command: parses flags and calls the package; no logic of its own.

    digitlab explore                      # shapes, labels, counts, and the book's figures
    digitlab train                        # chapter 5 exactly: shallow net, 200 epochs
    digitlab train --model lenet          # the book's later nets
    digitlab train --resume RUN           # finish a run cut short
    digitlab predict RUN --index 0        # ask the trained network about a validation image
    digitlab predict RUN digit.png        # ... or about your own handwriting
    digitlab tensorboard RUN              # a run's --tensorboard logs in TensorBoard
    digitlab sweep --grid learning_rate=0.01,0.1 --seeds 3 --out sweeps/lr   # many runs at once, on Ray
    digitlab serve                        # a page that trains the net live and reads your handwriting
    digitlab site public/                 # the page as static files that train in the browser
    digitlab import page-run-....json     # a run trained in the page, kept as a run folder
    digitlab runs | compare | evaluate | report | bench

Bad input (a flag, a file, a run folder) prints one clear `error:` line and exits
with status 2 (only those: anything else is a bug, shown with its traceback, status 1); Ctrl-C
during training saves the run and exits with status 130.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import traceback
from pathlib import Path

from digitlab import errors
from digitlab.cli import flags as cli_flags
from digitlab.cli import sweep as cli_sweep
from digitlab.config import TrainConfig

EXIT_BUG = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
BUG_REPORT = (
    "digitlab: this is a bug in digitlab, not a mistake in what you gave it. Please report it on the "
    "project's issue tracker with the traceback above, the command you ran and `pip show digitlab`'s "
    "version (README: Reporting a bug). Your runs are as they were saved."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="digitlab",
        formatter_class=cli_flags.HelpFormatter,
        description="The Shallow Net in Keras of Deep Learning Illustrated (chapter 5), and the book's later "
        "MNIST nets: look at the data, train, evaluate, compare, predict your own digits.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    explore = commands.add_parser(
        "explore", help="look at MNIST: shapes, labels, counts, figures", formatter_class=cli_flags.HelpFormatter
    )
    cli_flags.add_data_flag(explore)
    explore.add_argument("--out", default="figures", help="folder for the PNG figures")

    train = commands.add_parser(
        "train", help="train a network (the book's shallow net by default)", formatter_class=cli_flags.HelpFormatter
    )
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

    predict = commands.add_parser(
        "predict",
        help="ask a trained network about a validation image or image files",
        formatter_class=cli_flags.HelpFormatter,
    )
    predict.add_argument("run", metavar="RUN", help="a run folder")
    predict.add_argument("images", metavar="IMAGE", nargs="*", help="image files of handwritten digits")
    predict.add_argument("--index", type=int, default=None, help="predict validation image N instead of files")
    predict.add_argument("--json", action="store_true", help="print JSON instead of text")
    predict.add_argument(
        "--show", metavar="DIR", default=None, help="write the 28x28 input the network saw for each image into DIR"
    )
    cli_flags.add_data_flag(predict)

    listing = commands.add_parser("runs", help="list saved runs", formatter_class=cli_flags.HelpFormatter)
    cli_flags.add_runs_dir_flag(listing)
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")

    evaluate = commands.add_parser(
        "evaluate",
        help="accuracy, loss, per-digit scores, confusion matrix and mistakes of a run",
        formatter_class=cli_flags.HelpFormatter,
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

    compare = commands.add_parser(
        "compare",
        help="overlay the val-accuracy curves of several runs and print a table",
        formatter_class=cli_flags.HelpFormatter,
    )
    compare.add_argument("runs", metavar="RUN", nargs="+", help="run folders")
    compare.add_argument("--out", default="compare.png", help="the PNG to write")
    compare.add_argument("--json", action="store_true", help="print JSON instead of a table")

    report = commands.add_parser(
        "report", help="write one self-contained HTML report of a run", formatter_class=cli_flags.HelpFormatter
    )
    report.add_argument("run", metavar="RUN", help="a run folder")
    report.add_argument(
        "--out", metavar="FILE", default=None, help="the HTML file to write; None means RUN/report.html"
    )
    cli_flags.add_data_flag(report)

    serve = commands.add_parser(
        "serve",
        help="a page that trains the net live and reads your handwriting, and its HTTP API",
        formatter_class=cli_flags.HelpFormatter,
    )
    serve.add_argument("run", metavar="RUN", nargs="?", default=None, help="a run folder to open (default: none)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback: only this machine)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve.add_argument(
        "--runs-dir",
        default=None,
        help="folder of the runs the page lists and trains into (default: RUN's folder, else runs)",
    )
    serve.add_argument(
        "--token",
        default=None,
        help="the operator's token (trains, stops), needed on every request when --host is not loopback "
        "(default: generated and printed in a link)",
    )
    serve.add_argument(
        "--view-token",
        default=None,
        help="the view-only token (watch, draw) (default: generated when a token is needed)",
    )
    serve.add_argument("--max-epochs", type=int, default=1000, help="the most epochs one run from the page may train")
    serve.add_argument(
        "--max-train-images", type=int, default=60_000, help="the most training images one run from the page may use"
    )
    serve.add_argument("--max-viewers", type=int, default=100, help="the most event streams open at once")
    serve.add_argument(
        "--class",
        dest="classroom",
        action="store_true",
        help="a class: each student's page trains and sends its run here (a students' link is printed)",
    )
    serve.add_argument("--class-board", action="store_true", help="with --class, students see the class board too")
    serve.add_argument(
        "--class-cap-mb", type=float, default=2048, help="with --class, the most the runs folder may hold, in MB"
    )
    cli_flags.add_data_flag(serve)

    site = commands.add_parser(
        "site",
        help="write the page, its engine and MNIST as static files that train in any browser",
        formatter_class=cli_flags.HelpFormatter,
    )
    site.add_argument("folder", metavar="DIR", help="a new or empty folder, or a previous site's to replace it")
    cli_flags.add_data_flag(site)

    keep = commands.add_parser(
        "import",
        help="keep a run trained in the page (its downloaded page-run JSON) as a run folder",
        formatter_class=cli_flags.HelpFormatter,
    )
    keep.add_argument("file", metavar="FILE", help="the page-run JSON file the page's Download run button saved")
    keep.add_argument("--runs-dir", default="runs", help="folder to keep the run folder in")
    cli_flags.add_data_flag(keep)

    from digitlab.serve.board import DEFAULT_PORT

    board = commands.add_parser(
        "tensorboard", help="show a run's --tensorboard logs in TensorBoard", formatter_class=cli_flags.HelpFormatter
    )
    board.add_argument("run", metavar="RUN", help="a run folder trained with --tensorboard")
    board.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback: only this machine)")
    board.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on")
    cli_sweep.add_parser(commands)

    bench_defaults = _bench_defaults()
    bench = commands.add_parser(
        "bench",
        help="time Keras fit (TensorFlow, JAX) against digitlab's engine, side by side",
        formatter_class=cli_flags.HelpFormatter,
    )
    cli_flags.add_config_flags(bench, names=("epochs", "seeds", "train_limit"), defaults=bench_defaults)
    bench.add_argument(
        "--model",
        default="shallow",
        choices=("shallow", "deep", "lenet"),
        help="'shallow' (chapter 5) or 'deep' (chapter 9): fit against the engine, per epoch; "
        "'lenet': fit's steps on each Keras backend and the default one",
    )
    bench.add_argument(
        "--steps", type=int, default=bench_defaults["steps"], help="--model lenet: the training steps timed per backend"
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
        default=bench_defaults["compare_epochs"],
        help="epochs of each run in the accuracy comparison",
    )
    bench.add_argument(
        "--profile",
        action="store_true",
        help="also measure where the engine's epochs go, phase by phase, against each phase's limit",
    )
    cli_flags.add_data_flag(bench)
    return parser


def _bench_defaults() -> dict:
    from digitlab.bench import runner as bench

    return bench.DEFAULTS


def command_explore(args) -> int:
    from digitlab import explore

    explore.explore(data_path=args.data, out_dir=args.out)
    return 0


def command_train(args) -> int:
    from digitlab import backends

    # The Keras backend is chosen per net before Keras is first imported (by `training`).
    if args.resume:
        _refuse_settings_beside_resume(args)
        backends.use_for(_resumed_model(args.resume))
    else:
        config = cli_flags.config_from_args(args)
        config.resolved()  # Report a bad flag before loading anything.
        note = cli_flags.override_note(args)
        if note:
            print(note)
        backends.use_for(config.model)
    from digitlab import runs, training

    # SIGTERM (a closed terminal, `kill`) stops training the way Ctrl-C does: saved, resumable.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        if args.resume:
            training.resume(args.resume, data_path=args.data)
        else:
            training.train(config, runs_dir=args.runs_dir, data_path=args.data)
    except training.TrainingInterrupted as stop:
        print(
            f"\nInterrupted after epoch {stop.epoch}; the run is saved. Resume it with:\n"
            f"  {runs.resume_command(stop.run.path)}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return 0


def _refuse_settings_beside_resume(args) -> None:
    """--resume trains on with the run's own config.json: a setting given beside it would be ignored, so
    it is refused with what to do instead."""
    given = [f"--{name.replace('_', '-')}" for name in cli_flags.flags_given(args)]
    given += ["--config"] if args.config else []
    if given:
        config_file = Path(args.resume) / "config.json"
        raise errors.DigitlabError(
            f"--resume continues a run with the settings of its own {config_file}, so {', '.join(given)} "
            "cannot be given with it. Change a setting in that file (epochs, to train longer), or start a new "
            f"run from it with `digitlab train --config {config_file}` and those flags."
        )


def _resumed_model(run_path: str) -> str:
    """The model a run to resume was started with, read from its config.json without Keras.

    A missing or damaged run folder falls back to the default model here; `training.resume`
    then reports it properly.
    """
    from digitlab import runs

    try:
        return TrainConfig.load(Path(run_path) / runs.CONFIG_FILE).model
    except (OSError, errors.DigitlabError):
        return TrainConfig().model


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def command_sweep(args) -> int:
    from digitlab.sweep import runner as sweep_runner
    from digitlab.sweep import state as sweep_state

    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        cli_sweep.run(args)
    except sweep_runner.SweepInterrupted as stop:
        print(
            f"\nInterrupted; finished trials are saved. Resume the sweep with:\n"
            f"  {sweep_state.resume_command(stop.out_dir)}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return 0


def command_predict(args) -> int:
    from digitlab import data, predict, runs

    run = runs.open_run(args.run)
    if args.index is not None and args.images:
        raise errors.DigitlabError("Give either --index N or image files, not both.")
    if args.index is None and not args.images:
        raise errors.DigitlabError("Say what to predict: --index N for a validation image, or one or more image files.")
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
        # Folder names that are not UTF-8 come as backslash escapes (runs.display_name): always valid JSON text.
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"No runs in {args.runs_dir}. Train one with `digitlab train`.")
        return 0
    print(format_runs_table(rows))
    return 0


def format_runs_table(rows: list[dict]) -> str:
    """A plain-text table of `runs.list_runs` rows."""
    header = (
        "run",
        "status",
        "model",
        "optimizer",
        "lr",
        "epochs",
        "best val",
        "final val",
        "engine",
        "time s",
        "date",
    )
    lines = [header]
    for row in rows:
        lines.append(
            (
                row["run"],
                row["status"],
                row.get("model", "?"),
                row.get("optimizer", "?"),
                _cell(row.get("learning_rate")),
                f"{row.get('epochs', 0)}/{row.get('epochs_planned', '?')}",
                _cell(row.get("best_val_accuracy"), ".4f"),
                _cell(row.get("final_val_accuracy"), ".4f"),
                row.get("engine") or "-",
                _cell(row.get("wall_time_s"), ".1f"),
                row.get("date") or "-",
            )
        )
    widths = [max(len(str(line[column])) for line in lines) for column in range(len(header))]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def _cell(value, spec: str = "") -> str:
    if value is None:
        return "-"
    return format(value, spec)


def command_evaluate(args) -> int:
    from digitlab import evaluation, interrupts, runs

    # SIGTERM stops an evaluation as Ctrl-C does: its files all new, or none of them touched. Either
    # is a request that the evaluation acts on between its steps, never inside JAX or Keras (see
    # `interrupts`; a KeyboardInterrupt raised there could crash the process as it exits).
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    with interrupts.requests_stop():
        result = evaluation.evaluate_run(
            runs.open_run(args.run), data_path=args.data, split=args.split, out_dir=args.out
        )
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
    from digitlab import report, runs
    from digitlab.sweep import report as sweep_report
    from digitlab.sweep import state as sweep_state

    if (Path(args.run) / sweep_state.STATE_FILE).is_file():
        path = sweep_report.write_sweep_report(sweep_state.open_sweep(args.run), out_path=args.out)
    else:
        run = runs.open_run(args.run)
        out_path = Path(args.out) if args.out else run.file(runs.REPORT_FILE)
        if out_path.parent.is_dir() and not out_path.is_dir():
            runs.check_writable(
                out_path.parent, advice="Give a file you can write with `digitlab report RUN --out FILE`."
            )
        path = report.write_report(run, data_path=args.data, out_path=out_path)
    print(f"Wrote {path}")
    return 0


def check_port_free(host: str, port: int) -> None:
    """Binds `host:port` for a moment on each address of `host`, as uvicorn's asyncio server will, so
    that a port in use (or a host this machine does not have) is one clear sentence before the
    server says it is serving."""
    import errno
    import socket

    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise errors.DigitlabError(f"Cannot listen on --host {host}: {error.strerror}.") from None
    for family, kind, protocol, _, address in dict.fromkeys(addresses):
        with socket.socket(family, kind, protocol) as probe:
            # As asyncio does: a port held only by closed connections (TIME_WAIT) counts as free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    raise errors.DigitlabError(
                        f"Port {port} on {host} is already in use by another program (another `digitlab serve`?). "
                        "Stop it, or choose a free port with --port N."
                    ) from None
                if error.errno == errno.EACCES:
                    raise errors.DigitlabError(
                        f"Not permitted to listen on port {port} ({error.strerror}): ports below 1024 need "
                        "administrator rights. Choose one from 1024 up with --port N."
                    ) from None
                raise errors.DigitlabError(f"Cannot listen on {host}, port {port} ({error.strerror}).") from None


def command_serve(args) -> int:
    if not 0 < args.port < 65536:
        raise errors.DigitlabError(f"--port must be from 1 to 65535, got {args.port}.")
    check_port_free(args.host, args.port)  # At once, before the seconds that importing the server takes.
    from digitlab import runs
    from digitlab.serve import access, live
    from digitlab.serve import app as serving

    for flag, value in (("--max-epochs", args.max_epochs), ("--max-train-images", args.max_train_images)):
        if value < 1:
            raise errors.DigitlabError(f"{flag} must be a positive whole number, got {value}.")
    if args.max_viewers < 1:
        raise errors.DigitlabError(f"--max-viewers must be a positive whole number, got {args.max_viewers}.")
    permissions = access.Access.for_host(args.host, args.token, args.view_token)
    limits = live.Limits(args.max_epochs, args.max_train_images, args.max_viewers)
    class_settings = None
    if args.classroom:
        from digitlab.serve import classroom

        if not args.class_cap_mb > 0:
            raise errors.DigitlabError(f"--class-cap-mb must be a positive number of MB, got {args.class_cap_mb}.")
        class_settings = classroom.ClassSettings(
            cap_bytes=int(args.class_cap_mb * 1024**2), board_for_students=args.class_board
        )
    run = runs.open_run(args.run) if args.run else None
    runs_dir = args.runs_dir or (run.path.parent if run else "runs")
    serving.serve(
        run.load_model() if run else None,
        host=args.host,
        port=args.port,
        run_name=run.name if run else "",
        runs_dir=runs_dir,
        data_path=args.data,
        permissions=permissions,
        limits=limits,
        class_settings=class_settings,
    )
    return 0


def command_site(args) -> int:
    from digitlab import data
    from digitlab.browser import site

    written = site.write_site(Path(args.folder), data.load(args.data))
    size = sum((Path(args.folder) / name).stat().st_size for name in written)
    print(
        f"digitlab: wrote the site ({len(written)} files, {size / 1e6:.1f} MB) in {args.folder}; serve it from any "
        f"static host, e.g. `python -m http.server -d {args.folder}`, and open it in a browser"
    )
    return 0


def command_import(args) -> int:
    from digitlab import data
    from digitlab.browser import page_runs

    run = page_runs.save_page_run(page_runs.read_document(Path(args.file)), args.runs_dir, data.load(args.data))
    print(f"digitlab: kept {args.file} as the run folder {run.path}")
    return 0


def command_tensorboard(args) -> int:
    from digitlab import runs
    from digitlab.serve import board

    return board.serve(runs.open_run(args.run), host=args.host, port=args.port)


def command_bench(args) -> int:
    from digitlab.bench import runner as bench

    if args.model == "lenet":
        bench.run_lenet_bench(steps=args.steps, out_dir=args.out, data_path=args.data)
        return 0
    bench.run_bench(
        epochs=args.epochs,
        seeds=args.seeds,
        out_dir=args.out,
        data_path=args.data,
        train_limit=args.train_limit,
        compare_seeds=args.compare_seeds,
        compare_epochs=args.compare_epochs,
        profile=args.profile,
        model=args.model,
    )
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
    "site": command_site,
    "import": command_import,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return COMMANDS[args.command](args)
    except errors.DigitlabError as error:
        # Every bad input (flag, file, image, run folder) arrives here, and only bad input.
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:
        # Anything else is a bug in digitlab: its traceback is what a report needs.
        traceback.print_exc()
        print(BUG_REPORT, file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
