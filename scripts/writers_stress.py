"""Two writers on one run, many times over: issue 22's target for the run lock (`digitlab.runlock`).

    python scripts/writers_stress.py                      # 50 tries of each case (minutes)
    python scripts/writers_stress.py --tries 3 --cases pair sweep

Each try copies a run stopped after epoch 3 (made once, with an uninterrupted run of the same
seed as the reference) and lets two writers at it at the same instant:

- pair:  two `digitlab train --resume RUN`;
- sweep: `digitlab train --resume RUN` and a sweep trial of that run (`sweep.trial.train_trial`, what
         a Ray Tune trial runs where the sweep's folder is).

Every writer is a process of its own that imports digitlab, loads what it needs, says "ready" and
waits; the script then releases both within a fraction of a second, in a random order, so the two
reach the run's lock at about the same instant (started cold, one would often arrive after the
other had finished). It prints a table:
tries, damaged runs (not complete, or history or weights not those of the reference, or files left
over: 0 expected), refusals that were the lock's sentence naming the winner (exit 2), and runs
whose winner's history and weights equal the uninterrupted run's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = ("pair", "sweep")  # The page's resume went with the server's training (the page trains in the browser).
# The run: the shallow net on 10,000 images, 10 epochs, stopped after epoch 3.
CONFIG = {"model": "shallow", "epochs": 10, "train_limit": 10_000, "seed": 5, "engine": "auto"}
STOPPED_AFTER = 3
WRITERS = ("resume", "trial")
# The most by which the second writer of a try is released after the first.
STAGGER_S = 0.3
REFUSAL = "is being written by another process: pid"


def prepare(out: Path, data_path: str | None) -> tuple[Path, Path]:
    """(the reference run, the run stopped after epoch STOPPED_AFTER), trained once in a child process."""
    done = subprocess.run(
        [sys.executable, __file__, "prepare", str(out)] + (["--data", data_path] if data_path else []),
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise SystemExit(f"preparing the runs failed:\n{done.stdout}{done.stderr}")
    (reference,) = (out / "reference").iterdir()
    (stopped,) = (out / "stopped").iterdir()
    return reference, stopped


def _prepare(out: Path, data_path: str | None) -> None:
    from digitlab import config, data, training

    loaded = data.load(data_path)
    quiet = lambda *args, **kwargs: None  # noqa: E731
    training.train(config.TrainConfig(**CONFIG), out / "reference", loaded=loaded, print_fn=quiet, verbose=0)

    def stop(epoch, histories, wall_time_s):
        if epoch == STOPPED_AFTER:
            raise KeyboardInterrupt  # Training's own clean stop: checkpoint of epoch 3, status interrupted.

    try:
        training.train(
            config.TrainConfig(**CONFIG), out / "stopped", loaded=loaded, print_fn=quiet, verbose=0, on_epoch_end=stop
        )
    except training.TrainingInterrupted:
        pass


class Writer:
    """One contender: a process that has imported what it needs and waits for the word."""

    def __init__(self, kind: str, run: Path, data_path: str | None):
        self.kind = kind
        command = [sys.executable, __file__, "writer", kind, str(run)] + (["--data", data_path] if data_path else [])
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != "ready":
            self.process.kill()
            _, error = self.process.communicate()
            raise SystemExit(f"the {kind} writer did not start:\n{line}{error}")

    @property
    def pid(self) -> int:
        return self.process.pid

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def wait(self, timeout: float = 600) -> tuple[int, str]:
        """(exit status, stderr)."""
        _, error = self.process.communicate(timeout=timeout)
        return self.process.returncode, error


def _writer(kind: str, run: Path, data_path: str | None) -> int:
    """The contender's side: get ready, wait for "go", write the run; 0 when it wrote the run to the
    end, 2 with an `error:` line when it was refused (as the CLI prints it)."""
    from digitlab import cli, data, errors, runs

    if kind == "resume":
        from digitlab import backends

        backends.use_for("shallow")  # As `digitlab train` chooses it, before Keras is imported...
        from digitlab import training  # noqa: F401  (...which this does, so that "go" finds it warm.)

        act = lambda: cli.main(["train", "--resume", str(run)] + (["--data", data_path] if data_path else []))  # noqa: E731
    elif kind == "trial":
        from digitlab import training  # noqa: F401  (A Ray worker has it imported since its first trial.)
        from digitlab.sweep import trial as sweep_trial

        loaded = data.load(data_path)  # A Ray trial gets the data with its parameters.
        trial = {"index": 0, "run": run.name, "config": runs.Run(run).config().to_dict()}

        def act() -> int:
            try:
                status = sweep_trial.train_trial(trial, run.parent, loaded, lambda metrics: None)  # type: ignore[arg-type]
            except errors.DigitlabError as error:  # What raytune records as the trial's failure.
                print(f"error: {error}", file=sys.stderr)
                return 2
            return 0 if status == "complete" else 1

    else:
        raise SystemExit(f"unknown writer {kind!r}")
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 3
    return act()


def check(run: Path, reference, winner: Writer, loser: Writer, results: dict) -> dict:
    """One try's verdict: damaged, the refusal a sentence naming the winner, the run equal to the reference."""
    import numpy as np

    from digitlab import runs

    (winner_code, _), (loser_code, refusal) = results[winner], results[loser]
    finished = runs.Run(run)
    leftovers = [path.name for path in run.rglob(".*")]
    try:
        complete = finished.status()["status"] == "complete"
        same_history = finished.history() == reference.history()
        ours, theirs = finished.load_model().get_weights(), reference.load_model().get_weights()
        same_weights = all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))
    except runs.RunError:
        complete = same_history = same_weights = False
    lines = [line for line in refusal.splitlines() if line.startswith("error: ")]
    sentence = lines[-1] if lines else ""
    return {
        "damaged": not (complete and same_history and same_weights) or bool(leftovers),
        "sentence": winner_code == 0 and loser_code == 2 and REFUSAL in sentence and f"pid {winner.pid} " in sentence,
        "equal": winner_code == 0 and complete and same_history and same_weights,
        "detail": {"codes": (winner_code, loser_code), "refusal": sentence, "leftovers": leftovers},
    }


def one_try(case: str, stopped: Path, reference, folder: Path, data_path: str | None, seed: int = 0) -> dict:
    """Two writers of `case` at a copy of `stopped`; the first released is chosen at random, the second
    follows within STAGGER_S (either may take the lock first)."""
    run = folder / stopped.name
    shutil.copytree(stopped, run)
    kinds = {"pair": ("resume", "resume"), "sweep": ("resume", "trial")}[case]
    writers = [Writer(kind, run, data_path) for kind in kinds]
    rng = random.Random(seed)
    rng.shuffle(writers)
    writers[0].go()
    time.sleep(rng.uniform(0.0, STAGGER_S))
    writers[1].go()
    results = {writer: writer.wait() for writer in writers}
    winners = [writer for writer in writers if results[writer][0] == 0]
    if len(winners) != 1:  # Both wrote (the lock failed) or neither did: damaged, whatever the files say.
        detail = {writer.kind: results[writer] for writer in writers}
        return {"damaged": True, "sentence": False, "equal": False, "detail": detail}
    (winner,) = winners
    (loser,) = [writer for writer in writers if writer is not winner]
    verdict = check(run, reference, winner, loser, results)
    verdict["winner"] = winner.kind
    return verdict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode")
    stress = sub.add_parser("stress", help="the tries and their table (the default)")
    for each in (parser, stress):
        each.add_argument("--tries", type=int, default=50, help="tries of each case (default: 50)")
        each.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES), help="default: both")
        each.add_argument("--out", default=None, help="folder for the runs (default: a temporary one, removed)")
        each.add_argument("--data", default=os.environ.get("DIGITLAB_DATA"), help="MNIST (default: $DIGITLAB_DATA)")
    prepare_parser = sub.add_parser("prepare")
    prepare_parser.add_argument("out")
    prepare_parser.add_argument("--data", default=None)
    writer_parser = sub.add_parser("writer")
    writer_parser.add_argument("kind", choices=WRITERS)
    writer_parser.add_argument("run")
    writer_parser.add_argument("--data", default=None)
    args = parser.parse_args(argv)
    if args.mode == "prepare":
        _prepare(Path(args.out), args.data)
        return 0
    if args.mode == "writer":
        return _writer(args.kind, Path(args.run).resolve(), args.data)

    from digitlab import runs

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="writers-stress-"))
    started = time.monotonic()
    reference_path, stopped = prepare(out, args.data)
    reference = runs.Run(reference_path)
    rows, examples = [], []
    for case in args.cases:
        verdicts = []
        for index in range(args.tries):
            verdict = one_try(case, stopped, reference, out / case / f"try-{index:03d}", args.data, seed=index)
            verdicts.append(verdict)
            if verdict["damaged"] or not verdict["sentence"]:
                print(f"{case} try {index}: {json.dumps(verdict, default=str)}", file=sys.stderr)
        winners = {kind: sum(verdict.get("winner") == kind for verdict in verdicts) for kind in WRITERS}
        examples.append(f"{case}: {verdicts[0]['detail'].get('refusal')}")
        rows.append(
            (
                case,
                len(verdicts),
                sum(verdict["damaged"] for verdict in verdicts),
                sum(verdict["sentence"] for verdict in verdicts),
                sum(verdict["equal"] for verdict in verdicts),
                ", ".join(f"{kind} {count}" for kind, count in winners.items() if count),
            )
        )
    print("| case | tries | damaged runs | refusals that were the sentence | winner == uninterrupted | winners |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(str(value) for value in row) + " |")
    print("\nA refusal of each case:\n" + "\n".join(examples))
    seconds = time.monotonic() - started
    print(f"({seconds:.0f} s; the runs are in {out})" if args.out else f"({seconds:.0f} s)")
    if not args.out:
        shutil.rmtree(out, ignore_errors=True)
    return 0 if all(row[2] == 0 and row[3] == row[1] == row[4] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
