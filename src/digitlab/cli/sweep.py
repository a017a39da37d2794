"""`digitlab sweep`'s flags, and the sweep they start or resume.

    from digitlab.cli import sweep as cli_sweep
    cli_sweep.add_parser(commands)     # in cli.build_parser: --grid, --sample, --seeds, ..., and train's flags
    cli_sweep.run(args)                # in command_sweep: sweep_runner.run_sweep, or resume_sweep with --resume

Like the rest of the command, it only turns flags into a call: the sweep itself is
`digitlab.sweep.runner`, its plan and its checks `digitlab.sweep.plan`.
"""

from __future__ import annotations

import shlex
import time

from digitlab import errors
from digitlab.cli import flags as cli_flags
from digitlab.config import TrainConfig
from digitlab.sweep import plan as sweep_plan


def add_parser(commands) -> None:
    """Adds the `sweep` command to the `digitlab` command's subparsers."""
    sweep = commands.add_parser(
        "sweep",
        help="train many configurations and seeds at once on Ray Tune, and tabulate them",
        formatter_class=cli_flags.HelpFormatter,
        description="Every trial (one configuration, one seed) is a normal run folder under OUT/runs/; "
        "results go to OUT/results.csv, .json, .md, curves.png and (two swept fields) heatmap.png. "
        "Every train flag below applies to all trials; --grid and --sample values override it.\n\n"
        "  digitlab sweep --grid loss=mean_squared_error,categorical_crossentropy \\\n"
        "                 --grid activation=sigmoid,relu --grid learning_rate=0.01,0.1 \\\n"
        "                 --seeds 3 --epochs 20 --out sweeps/chapter8\n"
        "  digitlab sweep --sample learning_rate=loguniform:1e-3:1 --samples 20 --epochs 5\n"
        "  digitlab sweep --resume sweeps/chapter8",
    )
    sweep.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="FIELD=V1,V2,...",
        help="sweep FIELD (any train flag's field, as in config.json) over these values; repeat "
        "for more fields (the sweep is their product); list fields separate items by spaces: "
        "--grid 'units=64 64,128 128' (default: none)",
    )
    sweep.add_argument(
        "--sample",
        action="append",
        default=[],
        metavar="FIELD=DIST:...",
        help=sweep_plan.SAMPLE_HELP + " (default: none)",
    )
    sweep.add_argument(
        "--samples",
        type=int,
        default=None,
        help="how many random configurations --sample draws (default: 10 with --sample)",
    )
    sweep.add_argument(
        "--seeds", type=int, default=1, help="seeds per configuration (SEED, SEED+1, ...), each its own trial"
    )
    sweep.add_argument("--seed", type=int, default=0, help="the first seed; also seeds the draws of --sample")
    sweep.add_argument("--out", default=None, help="the sweep folder, new or empty (default: sweeps/DATE-TIME)")
    sweep.add_argument(
        "--resume",
        metavar="OUT",
        default=None,
        help="finish an interrupted sweep: finished trials are kept, cut ones resume from their checkpoints",
    )
    sweep.add_argument(
        "--address",
        default=None,
        help="HOST:PORT of a running Ray cluster, or 'auto' (default: an embedded Ray on this machine)",
    )
    sweep.add_argument(
        "--early-stop", action="store_true", help="stop hopeless trials early with an ASHA scheduler on val_accuracy"
    )
    sweep.add_argument(
        "--cpus-per-trial",
        type=float,
        default=1.0,
        help="CPUs Ray gives each trial (1: as many trials at once as cores)",
    )
    sweep.add_argument("--yes", action="store_true", help=f"allow a sweep of more than {sweep_plan.TRIAL_LIMIT} trials")
    cli_flags.add_config_flags(sweep, names=sweep_plan.SWEPT_FIELDS)
    cli_flags.add_data_flag(sweep)


def run(args) -> None:
    """Runs the sweep the flags describe, or resumes the one --resume names; SweepInterrupted on Ctrl-C."""
    from digitlab.sweep import runner as sweep_runner

    if args.resume:
        sweep_runner.resume_sweep(args.resume, data_path=args.data, address=args.address)
        return
    if args.seeds < 1:
        raise errors.SweepError(f"--seeds must be at least 1, got {args.seeds}.")
    base = TrainConfig(**{name: getattr(args, name) for name in sweep_plan.SWEPT_FIELDS})
    samples = args.samples if args.samples is not None else (10 if args.sample else 0)
    sweep_runner.run_sweep(
        base,
        grid=sweep_plan.parse_grid(args.grid),
        sample=sweep_plan.parse_sample(args.sample),
        samples=samples,
        sample_seed=args.seed,
        seeds=list(range(args.seed, args.seed + args.seeds)),
        out_dir=args.out or f"sweeps/{time.strftime('%Y%m%d-%H%M%S')}",
        data_path=args.data,
        address=args.address,
        early_stop=args.early_stop,
        cpus_per_trial=args.cpus_per_trial,
        yes=args.yes,
        command="digitlab " + shlex.join(args.argv),
    )
