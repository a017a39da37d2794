"""scripts/thread_choice_bench.py: one network's thread count beside a busy core, three ways, on a shrunken run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "thread_choice_bench.py"


@pytest.mark.heavy
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_the_table_has_each_way_its_stretches_and_the_same_bits():
    """Three rows (two threads, one, the engine's choice), each with its three stretches; every way ends with
    the same bits; the engine's choice is printed epoch by epoch (1 or 2 each)."""
    command = [sys.executable, str(SCRIPT), "--epochs", "4", "--limit", "2000"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| always") or line.startswith("| the engine")]
    assert len(rows) == 3 and all(len(row.split("|")) == 8 for row in rows), done.stdout
    assert "2,000 images" in done.stdout and "the same bits on every way" in done.stdout
    chosen = done.stdout.split("epoch by epoch: ")[1].split()[0]
    assert len(chosen) == 12 and set(chosen) <= {"1", "2"}
    # Always one thread: all 12 epochs on one thread.
    assert rows[1].split("|")[5].strip() == "12"


def test_a_single_stretch_too_short_is_refused():
    """Fewer than 4 epochs a stretch would leave the engine no reference: a one-line message, exit 2."""
    done = subprocess.run([sys.executable, str(SCRIPT), "--epochs", "2"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "give --epochs 4 or more" in done.stderr and "Traceback" not in done.stderr


def test_a_negative_limit_is_refused():
    """--limit -5 would train on all but the last 5 images, silently: a one-line message, exit 2."""
    done = subprocess.run([sys.executable, str(SCRIPT), "--limit", "-5"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "give --limit 0" in done.stderr and "Traceback" not in done.stderr
