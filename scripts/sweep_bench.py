"""The same trials as one `digitlab sweep` and as `digitlab train` one after another, side by side.

    python scripts/sweep_bench.py --grid loss=mean_squared_error,categorical_crossentropy \
        --grid activation=sigmoid,relu --grid learning_rate=0.01,0.1 --seeds 3 --epochs 20 --out bench-sweep

Takes `digitlab sweep`'s flags (and `--sweep-only`, which leaves out the one-by-one loop: for
measuring the sweep alone while changing it). First it runs the sweep as a user would (one command,
an embedded Ray started and stopped inside it), then every trial of the same plan as
its own `digitlab train --config TRIAL.json` process, one after another, as one would
in a shell loop. It times both from the outside, checks that each trial's history is
the same both ways, and prints (and writes to OUT/bench.md and bench.json) a table
with the machine and its load average, since a shared machine slows both unevenly.

A second table says where the sweep's time went, from the times its files were written and the
moments sweep.json's `timeline` records (`digitlab.sweep.runner.TIMELINE`): until its first
trial's run folder (Python and digitlab's imports with MNIST read beside Ray's and Tune's import;
Ray's start; Tune's start and the first trial's worker; that worker's imports of Keras and JAX and
its first model), the trials (first run folder to last metrics.json; with the training time summed
over trials, divided by the trials that train at once, and the rest: each trial's run folder,
model.keras, curves.png and next model), and after the last trial (the results and figures,
written while Ray shuts down, then the process's end).
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

from digitlab import atomic, cli, config, runs, system
from digitlab.config import TrainConfig
from digitlab.sweep import plan as sweep_plan


def _timed(command: list[str], environment: dict) -> tuple[float, float]:
    """Runs `command`; its wall seconds, and the CPU seconds (user + system) of it and every process it
    started, Ray's daemons and workers included: each process's times as last seen, sampled every 0.2 s
    (psutil, which Ray brings), or the times the kernel reported for it once it was waited for."""
    import psutil

    started, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL)
    seen: dict[tuple[int, float], float] = {}
    root = psutil.Process(process.pid)
    while process.poll() is None:
        try:
            family = [root, *root.children(recursive=True)]
        except psutil.Error:
            family = []
        for member in family:
            try:
                times = member.cpu_times()
                seen[(member.pid, member.create_time())] = times.user + times.system
            except psutil.Error:
                continue
        time.sleep(0.2)
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"error: {' '.join(command)} failed (exit {process.returncode}).")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    waited = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, max(waited, sum(seen.values()))


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children and theirs."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str]) -> int:
    sweep_only = "--sweep-only" in argv
    argv = [a for a in argv if a != "--sweep-only"]
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
    started_at = time.time()
    sweep_seconds, sweep_cpu = _timed(command, environment)
    ended_at = started_at + sweep_seconds
    print(f"digitlab sweep: {sweep_seconds:.1f} s, {sweep_cpu:.1f} CPU-s")

    (out / "configs").mkdir(parents=True)
    started, cpu = time.perf_counter(), _children_cpu()
    for trial in trials if not sweep_only else []:
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
    loop_cpu = _children_cpu() - cpu
    if not sweep_only:
        print(f"digitlab train, one after another: {loop_seconds:.1f} s, {loop_cpu:.1f} CPU-s")

    swept = [runs.Run(out / "sweep" / "runs" / trial["run"]) for trial in trials]
    same = sweep_only or all(
        run.history() == runs.Run(next((out / "one-by-one" / trial["run"]).iterdir())).history()
        for run, trial in zip(swept, trials, strict=True)
    )
    timeline = json.loads((out / "sweep" / "sweep.json").read_text())["timeline"]
    phases = _phases(swept, timeline, started_at, ended_at, at_once=min(len(trials), max(1, int(os.cpu_count() or 1))))
    load = os.getloadavg()[0]
    result = {
        "trials": len(trials),
        "command": "python scripts/sweep_bench.py " + shlex.join(argv),
        "sweep_s": round(sweep_seconds, 1),
        "sweep_cpu_s": round(sweep_cpu, 1),
        "one_by_one_s": None if sweep_only else round(loop_seconds, 1),
        "one_by_one_cpu_s": None if sweep_only else round(loop_cpu, 1),
        "speedup": None if sweep_only else round(loop_seconds / sweep_seconds, 2),
        "same_histories": None if sweep_only else same,
        "sweep_phases_s": phases,
        "machine": machine,
        "load_average_end": round(load, 2),
        "versions": system.software_versions(),
    }
    table = "\n".join(
        [
            f"{len(trials)} trials ({result['command']}) on {machine['cpu']}, {machine['cores']} cores; "
            f"load average {load:.1f} at the end (a shared machine)",
            "",
            "| way | trials | wall time | per trial | CPU-s | speedup |",
            "|---|---:|---:|---:|---:|---:|",
            *(
                []
                if sweep_only
                else [
                    f"| `digitlab train`, one after another | {len(trials)} | {loop_seconds:.1f} s | "
                    f"{loop_seconds / len(trials):.1f} s | {loop_cpu:.1f} | 1.0× |"
                ]
            ),
            f"| `digitlab sweep` (embedded Ray) | {len(trials)} | {sweep_seconds:.1f} s | "
            f"{sweep_seconds / len(trials):.1f} s | {sweep_cpu:.1f} | "
            + ("-" if sweep_only else f"{loop_seconds / sweep_seconds:.2f}×")
            + " |",
            "",
            "(CPU-s: user + system seconds of the command and every process it started, Ray's included.)",
            "",
            "The one-by-one loop was left out (--sweep-only)."
            if sweep_only
            else f"Every trial's history the same both ways: {'yes' if same else 'NO'}.",
            "",
            "Where the sweep's time went (from the times its files were written and sweep.json's timeline):",
            "",
            "| phase | seconds |",
            "|---|---:|",
            f"| start to the first trial's run folder | {phases['until_first_trial']:.1f} |",
            f"| of which Python, imports, plan, MNIST read beside Ray's import | {phases['imports']:.1f} |",
            f"| of which Ray's start (ray.init) | {phases['ray_start']:.1f} |",
            f"| of which Tune's start and the first trial's worker | {phases['tune_start']:.1f} |",
            f"| of which that worker's imports (Keras, JAX) and first model | {phases['first_model']:.1f} |",
            f"| first run folder to the last metrics.json (the trials) | {phases['trials']:.1f} |",
            f"| of which training, summed over trials / {phases['at_once']} at once | {phases['training']:.1f} |",
            f"| of which the rest (run files, model.keras, curves.png, next model, Tune) | "
            f"{phases['trials'] - phases['training']:.1f} |",
            f"| last metrics.json to the end | {phases['after_last_trial']:.1f} |",
            f"| of which Tune's end | {phases['tune_end']:.1f} |",
            f"| of which results and figures (beside Ray's shutdown) | {phases['results']:.1f} |",
            f"| of which Ray's shutdown (beside the results) | {phases['ray_shutdown']:.1f} |",
            f"| of which the process's end | {phases['exit']:.1f} |",
        ]
    )
    print(table)
    atomic.write_text(out / "bench.md", table + "\n")
    atomic.write_json(out / "bench.json", result)
    return 0 if same else 1


def _phases(swept: list[runs.Run], timeline: dict, started_at: float, ended_at: float, at_once: int) -> dict:
    """Where the sweep's time went, in seconds: the four phases, each with its parts (see the module's docstring)."""
    first = min(run.file(runs.CONFIG_FILE).stat().st_mtime for run in swept)
    last = max(run.file(runs.METRICS_FILE).stat().st_mtime for run in swept)
    training = sum(run.metrics()["wall_time_s"] for run in swept)
    done = max(timeline["results_written"], timeline["ray_stopped"])
    return {
        key: round(value, 1)
        for key, value in {
            "until_first_trial": first - started_at,
            "imports": timeline["ray_starting"] - started_at,
            "ray_start": timeline["ray_started"] - timeline["ray_starting"],
            "tune_start": timeline["first_trial_started"] - timeline["ray_started"],
            "first_model": first - timeline["first_trial_started"],
            "trials": last - first,
            "training": training / at_once,
            "after_last_trial": ended_at - last,
            "tune_end": timeline["trials_done"] - last,
            "results": timeline["results_written"] - timeline["trials_done"],
            "ray_shutdown": timeline["ray_stopped"] - timeline["trials_done"],
            "exit": ended_at - done,
        }.items()
    } | {"at_once": at_once}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
