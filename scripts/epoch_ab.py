"""Times the engine's C epoch of this tree against another build, in one run: the book's deep net
(`deep.train_epoch`, chapter 9) or its shallow one (`sparse.train_epoch`, chapter 5).

    python scripts/epoch_ab.py --other /path/to/old/checkout/src      # A/B: the other tree is the anchor
    python scripts/epoch_ab.py                                        # this tree alone, 1 and 2 threads
    python scripts/epoch_ab.py --model shallow --epochs 6 --rounds 3 --threads 1,2

Each round runs, for each tree in turn (alternating, so that a change of the machine's load falls on both),
a fresh process that trains the net (seed 0, all 60,000 images) for --epochs epochs per thread count with
the C epoch alone (no validation, no Python around it) and reports each
epoch's wall seconds, its CPU seconds and the SHA-1 of every array after the epochs. The other tree is a
checkout whose C kernels are built (`python setup.py build_ext --inplace` there), e.g. `git worktree add` or
`git archive HEAD | tar -x` of the commit to compare. The table gives, per tree and thread count, the
median wall and CPU seconds per epoch over all rounds (the first epoch of each process left out), the
ratio to the anchor's (the other tree's where there is one, else this tree's one thread), and whether the
arrays ended with the anchor's bits. The figures are the machine's own only when nothing else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

# The child: one process per tree and round, its result on the last line of its output, as JSON.
CHILD = """
import hashlib, json, sys, time
import keras, numpy as np
from digitlab import config, data, engine, models
from digitlab.engine import deep, sparse
epochs, threads_list = int(sys.argv[1]), [int(t) for t in sys.argv[2].split(",")]
limit, model = int(sys.argv[3]) or None, sys.argv[4]
cfg = config.TrainConfig(model=model, seed=0).resolved()
(x, y), validation, _ = data.prepare(data.load_arrays(), train_limit=limit)
labels = np.argmax(y, axis=1)
result = {}
for threads in threads_list:
    keras.utils.set_random_seed(0)
    fast = engine.FastEngine(models.create_seeded_models(cfg), cfg, workers=threads)
    backend = fast._impl
    backend.start(x, y, validation)
    walls, cpus = [], []
    for epoch in range(epochs):
        order = np.random.RandomState(epoch).permutation(len(x))
        step = int(backend.arrays["iterations"])
        wall, cpu = time.perf_counter(), time.process_time()
        if model == "deep":
            deep.train_epoch(backend.sparse_rows[0], y, labels, order, 128, backend.deep_plans[0], step, threads)
        else:
            sparse.train_epoch(backend.sparse_rows[0], y, labels, order, 128, backend.plans[0], threads)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        backend.arrays["iterations"] += -(-len(x) // 128)
    digest = hashlib.sha1()
    for name in sorted(backend.arrays):
        digest.update(np.ascontiguousarray(backend.arrays[name]).tobytes())
    result[threads] = {"wall": walls, "cpu": cpus, "sha1": digest.hexdigest()}
print(json.dumps(result))
"""


def run_tree(source: Path, epochs: int, threads: str, limit: int, model: str) -> dict:
    """One child process on the tree whose package lies in `source` (its `src` folder); `limit` images (0: all)."""
    environment = dict(os.environ, PYTHONPATH=str(source))
    command = [sys.executable, "-c", CHILD, str(epochs), threads, str(limit), model]
    done = subprocess.run(command, env=environment, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"The run on {source} failed:\n{done.stderr[-2000:]}")
    return {int(key): value for key, value in json.loads(done.stdout.strip().splitlines()[-1]).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--other", type=Path, help="the other tree's src folder (its C kernels built): the anchor")
    parser.add_argument("--model", choices=("deep", "shallow"), default="deep", help="the net (default deep)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per process and thread count (default 4)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each tree once a round (default 3)")
    parser.add_argument("--threads", default="1,2", help="thread counts, comma-separated (default 1,2)")
    parser.add_argument("--limit", type=int, default=0, help="train on this many images (default 0: all 60,000)")
    args = parser.parse_args()
    if args.epochs < 2 or args.rounds < 1:
        raise SystemExit("Give --epochs 2 or more (the first is left out) and --rounds 1 or more.")
    this = Path(__file__).resolve().parent.parent / "src"
    trees = {"this tree": this} | ({"other tree": args.other.resolve()} if args.other else {})
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    for _ in range(args.rounds):
        for name, source in trees.items():
            runs[name].append(run_tree(source, args.epochs, args.threads, args.limit, args.model))
    counts = [int(count) for count in args.threads.split(",")]
    medians = {
        (name, count): {
            kind: statistics.median(value for run in runs[name] for value in run[count][kind][1:])
            for kind in ("wall", "cpu")
        }
        for name in trees
        for count in counts
    }
    # The anchor of each row: the other tree at the same thread count, or this tree on the first thread count.
    anchor_of = {count: ("other tree", count) if args.other else ("this tree", counts[0]) for count in counts}
    images = args.limit or 60000
    call = "deep.train_epoch" if args.model == "deep" else "sparse.train_epoch"
    print(f"The {args.model} net's C epoch ({call}, {images} images), {args.rounds} round(s) x {args.epochs} epochs")
    print(f"this tree: {this}" + (f"; other tree (the anchor): {args.other}" if args.other else ""))
    print("| tree | threads | wall s/epoch | CPU s/epoch | wall × anchor | same bits as the anchor |")
    print("|---|---:|---:|---:|---:|---|")
    for name in trees:
        for count in counts:
            anchor = anchor_of[count]
            ratio = medians[(name, count)]["wall"] / medians[anchor]["wall"]
            same = runs[name][0][count]["sha1"] == runs[anchor[0]][0][anchor[1]]["sha1"]
            print(
                f"| {name} | {count} | {medians[(name, count)]['wall']:.3f} | {medians[(name, count)]['cpu']:.3f} | "
                f"{ratio:.2f} | {'yes' if same else 'no'} |"
            )


if __name__ == "__main__":
    main()
