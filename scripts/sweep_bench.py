"""The same trials as one `digitlab sweep` and as `digitlab train` one after another, side by side.

    python scripts/sweep_bench.py --grid learning_rate=0.01,0.1 --grid activation=sigmoid,relu \
        --seeds 2 --epochs 10 --out bench-sweep

Takes `digitlab sweep`'s flags. First it runs the sweep as a user would (one command,
an embedded Ray started and stopped inside it), then every trial of the same plan as
its own `digitlab train --config TRIAL.json` process, one after another, as one would
in a shell loop. It times both from the outside, checks that each trial's history is
the same both ways, and prints (and writes to OUT/bench.md and bench.json) a table
with the machine and its load average, since a shared machine slows both unevenly.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from digitlab import cli, config, runs, system
from digitlab.config import TrainConfig
from digitlab.sweep import plan as sweep_plan


def main(argv: list[str]) -> int:
    parser = cli.build_parser()
    args = parser.parse_args(["sweep", *argv])
    out = Path(args.out or "bench-sweep")
    if out.exists():
        raise SystemExit(f"error: {out} exists; give a new --out.")
    base = TrainConfig(
        **{
            name: getattr(args, name)
            for name in config.TrainConfig.__dataclass_fields__
            if name not in sweep_plan.NOT_SWEPT
        }
    )
    seeds = list(range(args.seed, args.seed + args.seeds))
    trials = sweep_plan.plan_trials(base, sweep_plan.parse_grid(args.grid), [], seeds)
    environment = dict(os.environ, PYTHONUNBUFFERED="1")
    machine = system.machine_info()
    print(
        f"{len(trials)} trials on {machine['cpu']}, {machine['cores']} cores; load average "
        f"{os.getloadavg()[0]:.1f} at the start"
    )

    sweep_argv = [a for a in argv if a != "--out" and a != args.out]
    command = [sys.executable, "-m", "digitlab", "sweep", *sweep_argv, "--out", str(out / "sweep")]
    started = time.perf_counter()
    subprocess.run(command, env=environment, check=True, stdout=subprocess.DEVNULL)
    sweep_seconds = time.perf_counter() - started
    print(f"digitlab sweep: {sweep_seconds:.1f} s")

    (out / "configs").mkdir(parents=True)
    started = time.perf_counter()
    for trial in trials:
        path = out / "configs" / f"{trial['run']}.json"
        TrainConfig.from_dict(trial["config"]).save(path)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "digitlab",
                "train",
                "--config",
                str(path),
                "--runs-dir",
                str(out / "one-by-one" / trial["run"]),
            ],
            env=environment,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    loop_seconds = time.perf_counter() - started
    print(f"digitlab train, one after another: {loop_seconds:.1f} s")

    same = all(
        runs.Run(out / "sweep" / "runs" / trial["run"]).history()
        == runs.Run(next((out / "one-by-one" / trial["run"]).iterdir())).history()
        for trial in trials
    )
    load = os.getloadavg()[0]
    result = {
        "trials": len(trials),
        "command": "python scripts/sweep_bench.py " + shlex.join(argv),
        "sweep_s": round(sweep_seconds, 1),
        "one_by_one_s": round(loop_seconds, 1),
        "speedup": round(loop_seconds / sweep_seconds, 2),
        "same_histories": same,
        "machine": machine,
        "load_average_end": round(load, 2),
        "versions": system.software_versions(),
    }
    table = "\n".join(
        [
            f"{len(trials)} trials ({result['command']}) on {machine['cpu']}, {machine['cores']} cores; "
            f"load average {load:.1f} at the end (a shared machine)",
            "",
            "| way | trials | wall time | per trial | speedup |",
            "|---|---:|---:|---:|---:|",
            f"| `digitlab train`, one after another | {len(trials)} | {loop_seconds:.1f} s | "
            f"{loop_seconds / len(trials):.1f} s | 1.0× |",
            f"| `digitlab sweep` (embedded Ray) | {len(trials)} | {sweep_seconds:.1f} s | "
            f"{sweep_seconds / len(trials):.1f} s | {loop_seconds / sweep_seconds:.2f}× |",
            "",
            f"Every trial's history the same both ways: {'yes' if same else 'NO'}.",
        ]
    )
    print(table)
    (out / "bench.md").write_text(table + "\n")
    (out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
