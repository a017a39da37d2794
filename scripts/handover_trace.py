"""engine/cores.py's thread choice replayed on epoch times recorded on this machine, with and without the cores'
hand-over (issue 25: the book's run in 10 s on a host that moves its two virtual cores apart and back).

    python scripts/handover_trace.py --minutes 6 --save trace.json     # record, then replay
    python scripts/handover_trace.py --load trace.json                 # replay a saved trace
    python scripts/handover_trace.py --minutes 0.1 --limit 2000       # a short look (tests/test_handover_trace.py)

Recording: one process trains the book's shallow net (or --model deep) from seed 0 on all 60,000 images, the
C epoch alone, and in every slot measures the cores' hand-over (`sparse.handover_ns`, with what the call
costs), then runs one epoch on two threads and one on one thread (which first alternates from slot to slot),
and keeps the four figures. What either thread count would have taken is then known in every slot, so each
rule runs on the same trace: `SpeedCheck` on the times alone (as the browser's engine, and as `digitlab train`
ran before the hand-over), `SpeedCheck` told the hand-over before the epochs where it asks for it (as
`digitlab train` runs now, each read's cost added), always two threads, always one, and the faster of each
slot (no rule can beat it).
The table gives each rule's seconds per window of --window epochs (200: the book's run), with how often the
hand-over changed by 2x or more from one slot to the next in it (the host moved the cores), and over the whole
trace (against the best of each slot). Nothing else may run meanwhile: the figures are the machine's only
when it is quiet.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from digitlab import system

RULES = ("times alone", "with the hand-over", "always two", "always one", "best of each slot")


def record(minutes: float, model: str, limit: int | None = None) -> list[list[float]]:
    """[hand-over ns or -1, its call's seconds, two threads' seconds, one thread's seconds] per slot."""
    import keras
    import numpy as np

    from digitlab import config, data, engine, models
    from digitlab.engine import sparse

    cfg = config.TrainConfig(model=model, seed=0).resolved()
    (x, y), validation, _ = data.prepare(data.load_arrays(), train_limit=limit)
    keras.utils.set_random_seed(0)
    fast = engine.FastEngine(models.create_seeded_models(cfg), cfg, workers=2)
    backend = fast._impl
    backend.start(x, y, validation)
    count = [2]  # The count is this script's: no load check, no speed check, no read inside the epochs.
    backend._threads_now, backend.free_cores = (lambda: count[0]), None
    orders = np.empty((1, len(x)), np.int64)
    rng, slots, until = np.random.RandomState(0), [], time.monotonic() + minutes * 60
    while time.monotonic() < until:
        began = time.perf_counter()
        handover = sparse.handover_ns()
        cost = time.perf_counter() - began
        seconds = {}
        for threads in (2, 1) if len(slots) % 2 == 0 else (1, 2):
            orders[0] = rng.permutation(len(x))
            count[0] = threads
            started = time.perf_counter()
            backend.train_epoch(orders)
            seconds[threads] = time.perf_counter() - started
        slots.append([handover if handover is not None else -1.0, cost, seconds[2], seconds[1]])
    return slots


def replay(slots: list[list[float]], rule: str) -> list[float]:
    """Each slot's seconds (the epoch, and the hand-over's call where the rule makes it) under `rule`."""
    from digitlab.engine import cores

    check, spent = cores.SpeedCheck(), []
    for handover, cost, two, one in slots:
        if rule == "always two":
            spent.append(two)
        elif rule == "always one":
            spent.append(one)
        elif rule == "best of each slot":
            spent.append(min(one, two))
        else:
            extra = 0.0
            if rule == "with the hand-over" and check.wants_handover():
                check.measured(handover if handover > 0 else None)
                extra = cost
            threads = check.allowed(2)
            seconds = two if threads == 2 else one
            check.record(threads, seconds)
            spent.append(seconds + extra)
    return spent


def moves(slots: list[list[float]]) -> list[int]:
    """The slots where the hand-over is 2x or more away from the slot before's (both measured)."""
    found = []
    for number in range(1, len(slots)):
        before, now = slots[number - 1][0], slots[number][0]
        if before > 0 and now > 0 and max(before, now) >= 2 * min(before, now):
            found.append(number)
    return found


def table(slots: list[list[float]], window: int) -> str:
    """A row per window of `window` slots (the moves of the hand-over in it, each rule's seconds), and the whole."""
    spent = {rule: replay(slots, rule) for rule in RULES}
    moved = moves(slots)
    handovers = [slot[0] for slot in slots if slot[0] > 0]
    lines = [
        f"{len(slots)} slots; hand-over measured in {len(handovers)}: "
        + (
            f"{min(handovers):.0f}-{max(handovers):.0f} ns (median {statistics.median(handovers):.0f})"
            if handovers
            else "never"
        )
        + f"; its call {statistics.median(slot[1] for slot in slots) * 1e3:.2f} ms (median)",
        f"epochs: two threads {statistics.median(slot[2] for slot in slots):.4f} s,"
        f" one thread {statistics.median(slot[3] for slot in slots):.4f} s (medians)",
        "",
        "| slots | moves of the hand-over (2x) | " + " | ".join(RULES) + " |",
        "|---|---:|" + "---:|" * len(RULES),
    ]
    for first in range(0, len(slots) - window + 1, window):
        inside = sum(first <= number < first + window for number in moved)
        cells = [f"{sum(spent[rule][first : first + window]):.2f}" for rule in RULES]
        lines.append(f"| {first}-{first + window - 1} | {inside} | " + " | ".join(cells) + " |")
    best = sum(spent["best of each slot"])
    whole = [f"**{sum(spent[rule]):.2f}** ({sum(spent[rule]) / best:.3f}x)" for rule in RULES]
    lines.append(f"| all {len(slots)} | {len(moved)} | " + " | ".join(whole) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=6.0, help="how long to record (default 6)")
    parser.add_argument("--model", choices=("shallow", "deep"), default="shallow")
    parser.add_argument("--window", type=int, default=200, help="epochs per window of the table (default 200)")
    parser.add_argument("--limit", type=int, default=0, help="train on the first N images (default 0: all)")
    parser.add_argument("--save", type=Path, help="write the recorded trace here (JSON)")
    parser.add_argument("--load", type=Path, help="replay this saved trace instead of recording one")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.window < 1 or args.limit < 0:
        parser.error("give --minutes above 0, --window 1 or more and --limit 0 (all images) or more")
    if args.load:
        try:
            text = args.load.read_text()
        except OSError as error:
            print(f"Could not read the trace {args.load}: {error.strerror or error}.", file=sys.stderr)
            return 2
        try:
            trace = json.loads(text)
            if not trace["slots"] or any(len(slot) != 4 for slot in trace["slots"]):
                raise ValueError("it holds no slots of four figures")
            trace["model"], trace["machine"], trace["recorded"]  # noqa: B018 (what the heading needs)
        except (ValueError, KeyError, TypeError) as error:
            reason = f"no {error} in it" if isinstance(error, KeyError) else str(error)
            print(f"Could not read the trace {args.load} ({reason}): give a file that --save wrote.", file=sys.stderr)
            return 2
    else:
        trace = {
            "model": args.model,
            "machine": system.machine_name(),
            "recorded": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "slots": record(args.minutes, args.model, args.limit or None),
        }
        if args.save:
            args.save.write_text(json.dumps(trace) + "\n")
    print(f"# {trace['model']} net, {trace['machine']}, recorded {trace['recorded']}\n")
    print(table(trace["slots"], min(args.window, len(trace["slots"]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
