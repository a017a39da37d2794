"""scripts/handover_trace.py: a short trace of the cores' hand-over and both thread counts, replayed by each rule."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "handover_trace.py"
RULES = ("times alone", "with the hand-over", "always two", "always one", "best of each slot")


def whole_row(output: str) -> dict[str, float]:
    """Each rule's seconds over the whole trace, from the table's last row."""
    row = [line for line in output.splitlines() if line.startswith("| all ")][0]
    cells = [cell.strip() for cell in row.strip("|").split("|")][2:]
    return {rule: float(cell.split("**")[1]) for rule, cell in zip(RULES, cells, strict=True)}


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_a_short_trace_is_recorded_saved_and_replayed_the_same(tmp_path):
    """Six seconds on 2,000 images: every slot has its four figures, the table a row per window and the whole,
    no rule beats the best of each slot, and the saved trace replays to the same table."""
    trace = tmp_path / "trace.json"
    command = [sys.executable, str(SCRIPT), "--minutes", "0.1", "--limit", "2000", "--window", "20"]
    done = subprocess.run(command + ["--save", str(trace)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    slots = json.loads(trace.read_text())["slots"]
    assert len(slots) >= 20 and all(len(slot) == 4 and slot[2] > 0 and slot[3] > 0 for slot in slots)
    assert all(slot[0] == -1 or slot[0] > 0 for slot in slots)  # Read, or -1 (the other core busy: the tests' load).
    seconds = whole_row(done.stdout)
    assert seconds["always two"] == pytest.approx(sum(slot[2] for slot in slots), abs=0.01)
    assert seconds["always one"] == pytest.approx(sum(slot[3] for slot in slots), abs=0.01)
    assert all(seconds[rule] >= seconds["best of each slot"] - 0.01 for rule in RULES)
    assert sum(line.startswith("| 0-19 ") for line in done.stdout.splitlines()) == 1
    again = subprocess.run(
        [sys.executable, str(SCRIPT), "--load", str(trace), "--window", "20"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0 and again.stdout == done.stdout, again.stderr


def test_a_trace_that_is_not_one_is_refused(tmp_path):
    """A file --save did not write, or none: a one-line message naming it, exit 2, no traceback."""
    for text in ("not json", '{"slots": [[1, 2, 3]]}', "{}"):
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        done = subprocess.run(
            [sys.executable, str(SCRIPT), "--load", str(bad)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 2 and "Could not read the trace" in done.stderr and "Traceback" not in done.stderr
    done = subprocess.run([sys.executable, str(SCRIPT), "--minutes", "0"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "give --minutes above 0" in done.stderr and "Traceback" not in done.stderr
