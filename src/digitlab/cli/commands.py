"""The `digitlab` command: parses flags and calls the package; no logic of its own.

    digitlab explore                      # shapes, labels, counts, and the book's figures
    digitlab train                        # chapter 5 exactly: shallow net, 200 epochs
    digitlab train --model lenet          # the book's later nets
    digitlab train --resume RUN           # finish a run cut short
    digitlab predict RUN --index 0        # ask the trained network about a validation image
    digitlab predict RUN digit.png        # ... or about your own handwriting
    digitlab tensorboard RUN              # a run's --tensorboard logs in TensorBoard
    digitlab sweep --grid learning_rate=0.01,0.1 --seeds 3 --out sweeps/lr   # many runs at once, on Ray
    digitlab serve                        # the page: trains in your browser, shows runs live, reads your handwriting
    digitlab site public/                 # the page as static files that train in the browser
    digitlab import page-run-....json     # a run trained in the page, kept as a run folder
    digitlab runs | compare | evaluate | report | bench

Bad input (a flag, a file, a run folder) prints one clear `error:` line and exits
with status 2 (only those: anything else is a bug, shown with its traceback, status 1); Ctrl-C
during training saves the run and exits with status 130.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

from digitlab import errors, interrupts, runs
from digitlab.cli import flags as cli_flags
from digitlab.cli import parser as cli_parser
from digitlab.cli import sweep as cli_sweep
from digitlab.serve import settings as serve_settings

EXIT_BUG = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
BUG_REPORT = (
    "digitlab: this is a bug in digitlab, not a mistake in what you gave it. Please report it on the "
    "project's issue tracker with the traceback above, the command you ran and `pip show digitlab`'s "
    "version (README: Reporting a bug). Your runs are as they were saved."
)


def command_explore(args) -> int:
    """`digitlab explore`: MNIST's shapes, labels and counts, and the book's figures."""
    from digitlab import explore

    explore.explore(data_path=args.data, out_dir=args.out)
    return 0


def command_train(args) -> int:
    """`digitlab train`: a new run from the flags (or --config), or --resume's run trained on."""
    from digitlab import backends

    # The Keras backend is chosen for the net before Keras is first imported (by `training`).
    if args.resume:
        cli_flags.refuse_settings_beside_resume(args)
        backends.use_for(runs.model_to_resume(args.resume))
    else:
        from digitlab import startup

        config = cli_flags.config_from_args(args)
        config.resolved()  # Report a bad flag before loading anything.
        note = cli_flags.override_note(args)
        if note:
            print(note)
        backends.use_for(config.model)
        loading = startup.keras_beside_data(config, args.data)  # The data loads while Keras is imported.
    from digitlab import training

    interrupts.sigterm_as_ctrl_c()
    try:
        if args.resume:
            training.resume(args.resume, data_path=args.data)
        else:
            training.train(config, runs_dir=args.runs_dir, loaded=loading.loaded())
    except training.TrainingInterrupted as stop:
        print(
            f"\nInterrupted after epoch {stop.epoch}; the run is saved. Resume it with:\n"
            f"  {runs.resume_command(stop.run.path)}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return 0


def command_sweep(args) -> int:
    """`digitlab sweep`: many runs at once on Ray Tune, or --resume's sweep finished."""
    from digitlab.sweep import runner as sweep_runner
    from digitlab.sweep import state as sweep_state

    interrupts.sigterm_as_ctrl_c()
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
    """`digitlab predict`: the network's answer for a validation image (--index) or image files."""
    from digitlab import predict

    run = runs.open_run(args.run)
    if args.index is not None and args.images:
        raise errors.DigitlabError("Give either --index N or image files, not both.")
    if args.index is None and not args.images:
        raise errors.DigitlabError("Say what to predict: --index N for a validation image, or one or more image files.")
    if args.index is not None:
        results = [predict.predict_validation_image(run, args.index, data_path=args.data)]
    else:
        results = predict.predict_files(run.load_model(), args.images, show_dir=args.show)
    if args.json:
        print(json.dumps(results if len(results) > 1 or args.images else results[0], indent=2))
    else:
        for result in results:
            print(predict.format_result(result))
    return 0


def command_runs(args) -> int:
    """`digitlab runs`: the saved runs as a table (or JSON)."""
    rows = runs.list_runs(args.runs_dir)
    if args.json:
        # Folder names that are not UTF-8 come as backslash escapes (runs.display_name): always valid JSON text.
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"No runs in {args.runs_dir}. Train one with `digitlab train`.")
    else:
        print(runs.format_table(rows))
    return 0


def command_evaluate(args) -> int:
    """`digitlab evaluate`: a run's scores, confusion matrix and mistakes, on validation or test images."""
    from digitlab import evaluation

    # SIGTERM stops an evaluation as Ctrl-C does: its files all new, or none of them touched. Either
    # is a request that the evaluation acts on between its steps, never inside JAX or Keras (see
    # `interrupts`; a KeyboardInterrupt raised there could crash the process as it exits).
    interrupts.sigterm_as_ctrl_c()
    with interrupts.requests_stop():
        result = evaluation.evaluate_run(
            runs.open_run(args.run), data_path=args.data, split=args.split, out_dir=args.out
        )
    print(json.dumps(result, indent=2) if args.json else evaluation.format_result(result))
    return 0


def command_compare(args) -> int:
    """`digitlab compare`: the runs' val-accuracy curves in one PNG, and a table."""
    from digitlab import compare

    rows = compare.compare_runs(args.runs, out_path=args.out)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(compare.format_table(rows))
        print(f"Wrote {args.out}")
    return 0


def command_report(args) -> int:
    """`digitlab report`: a run's (or a sweep's) self-contained HTML report."""
    from digitlab import report
    from digitlab.sweep import report as sweep_report
    from digitlab.sweep import state as sweep_state

    if sweep_state.is_sweep_folder(args.run):
        path = sweep_report.write_sweep_report(sweep_state.open_sweep(args.run), out_path=args.out)
    else:
        path = report.write_report(runs.open_run(args.run), data_path=args.data, out_path=args.out)
    print(f"Wrote {path}")
    return 0


def command_serve(args) -> int:
    """`digitlab serve`: the page (it trains in the browser), the runs live, predictions and the API, until Ctrl-C."""
    serve_settings.check(args.port, args.max_viewers, class_cap_mb=args.class_cap_mb if args.classroom else None)
    serve_settings.check_port_free(args.host, args.port)  # At once, before the seconds the server's imports take.
    from digitlab.serve import access
    from digitlab.serve import app as serving

    class_settings = None
    if args.classroom:
        from digitlab.serve import classroom

        class_settings = classroom.ClassSettings(
            cap_bytes=int(args.class_cap_mb * 1024**2), board_for_students=args.class_board
        )
    run = runs.open_run(args.run) if args.run else None
    serving.serve(
        run.load_model() if run else None,
        host=args.host,
        port=args.port,
        run_name=run.name if run else "",
        runs_dir=args.runs_dir or (run.path.parent if run else runs.RUNS_DIR),
        data_path=args.data,
        permissions=access.Access.for_host(args.host, args.token, args.view_token),
        max_viewers=args.max_viewers,
        class_settings=class_settings,
    )
    return 0


def command_site(args) -> int:
    """`digitlab site`: the page, its engine and MNIST as static files."""
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
    """`digitlab import`: a run trained in the page, kept as a run folder."""
    from digitlab import data
    from digitlab.browser import page_runs

    run = page_runs.save_page_run(page_runs.read_document(Path(args.file)), args.runs_dir, data.load(args.data))
    print(f"digitlab: kept {args.file} as the run folder {run.path}")
    return 0


def command_tensorboard(args) -> int:
    """`digitlab tensorboard`: TensorBoard on a run's --tensorboard logs."""
    from digitlab.serve import board

    return board.serve(runs.open_run(args.run), host=args.host, port=args.port)


def command_bench(args) -> int:
    """`digitlab bench`: Keras fit against digitlab's engine (or LeNet's steps per backend)."""
    from digitlab.bench import runner as bench

    other = _flags_of_the_other_bench(args, bench.DEFAULTS)
    if other:
        does, it = ("does", "it") if len(other) == 1 else ("do", "them")
        if args.model == "lenet":
            what, instead = "times fit's --steps", "--model shallow or deep"
        else:
            what, instead = "times epochs (--epochs)", "--model lenet"
        raise errors.DigitlabError(
            f"{', '.join(other)} {does} not apply to --model {args.model}, whose bench {what}: "
            f"leave {it} out, or bench {instead}."
        )
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


def _flags_of_the_other_bench(args, defaults: dict) -> list[str]:
    """The flags given that only the other kind of bench reads: the epoch rows' with --model lenet, --steps with
    shallow or deep (refused, not ignored). The config flags count where given; the others where not their default."""
    if args.model != "lenet":
        return ["--steps"] if args.steps != defaults["steps"] else []
    given = ["--" + name.replace("_", "-") for name in cli_flags.flags_given(args)]  # --epochs, --seeds, --train-limit
    others = (("profile", False), ("compare_seeds", 0), ("compare_epochs", defaults["compare_epochs"]))
    return given + ["--" + name.replace("_", "-") for name, default in others if getattr(args, name) != default]


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
    """Runs the command `argv` (default: the process's) names; returns its exit status (0, 1, 2 or 130)."""
    parser = cli_parser.build_parser()
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
