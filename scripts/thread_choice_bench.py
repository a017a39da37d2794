"""How one network's thread count follows the epochs' own times (engine/cores.py, SpeedCheck), in one table.

    python scripts/thread_choice_bench.py                    # the book's shallow net, 3 stretches of 12 epochs
    python scripts/thread_choice_bench.py --model deep --epochs 8

Three ways of training the same network from the same weights, each in a fresh process: always two
threads, always one, and the engine's own choice (two threads, fewer where the load or the epochs' times
say so). Each process trains three stretches of --epochs epochs: quiet, then with a thread of the same
process hashing in C beside the epochs (a core busy in a way the load count cannot see: it is the
process's own CPU time, like a virtual machine's core that its host shares with another guest), then
quiet again. The table gives each way's median epoch (the C epoch alone) in each stretch, the epochs it
ran on one thread, and its total; the weights must end with the same bits on every way (checked). On a
machine with more than two cores the processes are kept to two, where the busy core matters.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import hashlib, json, os, sys, threading, time
os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:2])
import keras, numpy as np
from digitlab import config, data, engine, models
from digitlab.engine import cores
model, epochs, way, limit = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]) or None
if way != "follows":  # A fixed count: the load cannot lower it either.
    cores.FreeCores.threads = lambda self, wanted: wanted
cfg = config.TrainConfig(model=model, seed=0).resolved()
(x, y), validation, _ = data.prepare(data.load_arrays(), train_limit=limit)
keras.utils.set_random_seed(0)
fast = engine.FastEngine(models.create_seeded_models(cfg), cfg, workers=1 if way == "one" else 2)
backend = fast._impl
backend.start(x, y, validation)
rng = np.random.RandomState(0)
stop = threading.Event()
blob = bytes(1 << 22)
def spin():
    while not stop.is_set():
        hashlib.sha256(blob).digest()
stretches, chosen = [[], [], []], []
for stretch in range(3):
    spinner = threading.Thread(target=spin)
    if stretch == 1:
        spinner.start()
    for _ in range(epochs):
        counts = dict(backend.thread_counts)
        started = time.perf_counter()
        backend.train_epoch(rng.permutation(len(x))[None])
        stretches[stretch].append(time.perf_counter() - started)
        # The count the epoch ran on: the one train_epoch counted (not asked again: the load may have changed).
        (ran,) = [n for n, seen in backend.thread_counts.items() if seen > counts.get(n, 0)]
        chosen.append(ran)
    if stretch == 1:
        stop.set()
        spinner.join()
digest = hashlib.sha1(b"".join(np.ascontiguousarray(v).tobytes() for _, v in sorted(backend.arrays.items())))
print(json.dumps({"stretches": stretches, "chosen": chosen, "sha1": digest.hexdigest()}))
"""

WAYS = {"two": "always two threads", "one": "always one thread", "follows": "the engine's choice (default)"}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("shallow", "deep"), default="shallow", help="(default: shallow)")
    parser.add_argument("--epochs", type=int, default=12, help="epochs of each stretch (default: 12)")
    parser.add_argument("--limit", type=int, default=0, help="train on this many images (default 0: all 60,000)")
    args = parser.parse_args(argv)
    if args.epochs < 4:
        parser.error("give --epochs 4 or more (the engine's first epochs set its reference)")
    if args.limit < 0:
        parser.error(f"give --limit 0 (all 60,000 images) or a number of images above 0, not {args.limit}")
    if len(os.sched_getaffinity(0)) < 2:
        parser.error("this machine gives the process one core: there is no second thread to choose")
    from digitlab import system

    results = {}
    for way in WAYS:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, args.model, str(args.epochs), way, str(args.limit)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise SystemExit(f"The {way} run failed:\n{done.stderr[-2000:]}")
        results[way] = json.loads(done.stdout.strip().splitlines()[-1])
    images = f"{args.limit:,}" if args.limit else "60,000"
    load = os.getloadavg()[0]
    print(f"The {args.model} net's C epoch ({images} images) on {system.machine_name()}, load average {load:.1f};")
    print(f"{args.epochs} epochs quiet, {args.epochs} with a core busy (a thread hashing in C), {args.epochs} quiet.\n")
    print("| way | quiet, ms/epoch | core busy | quiet again | epochs on one thread | total s |")
    print("|---|---:|---:|---:|---:|---:|")
    for way, result in results.items():
        medians = [f"{1000 * statistics.median(times):.0f}" for times in result["stretches"]]
        total = sum(sum(times) for times in result["stretches"])
        print(f"| {WAYS[way]} | {' | '.join(medians)} | {result['chosen'].count(1)} | {total:.2f} |")
    same = len({result["sha1"] for result in results.values()}) == 1
    print(f"\nThe weights after the last epoch: {'the same bits on every way' if same else 'DIFFERENT bits'}.")
    chosen = "".join(str(count) for count in results["follows"]["chosen"])
    print(f"The engine's choice, epoch by epoch: {chosen}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
