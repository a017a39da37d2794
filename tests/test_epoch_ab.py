"""scripts/epoch_ab.py: the engine's C epoch of two trees side by side, on a shrunken run."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "epoch_ab.py"


@pytest.mark.parametrize("model", ["deep", "shallow"])
def test_the_table_times_each_tree_and_compares_their_bits(model):
    """This tree against itself as the other tree: every row's bits are the anchor's, each thread count's too."""
    source = SCRIPT.parent.parent / "src"
    command = [sys.executable, str(SCRIPT), "--other", str(source), "--epochs", "2", "--rounds", "1", "--limit", "600"]
    command += ["--model", model]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| this tree") or line.startswith("| other")]
    assert len(rows) == 4 and all(row.endswith("| yes |") for row in rows), done.stdout
    assert "600 images" in done.stdout and f"The {model} net's C epoch" in done.stdout
