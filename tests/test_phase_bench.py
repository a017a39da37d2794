"""scripts/phase_bench.py: one run measures the native default path, the native portable path and the
WebAssembly engine (in node) phase by phase, and prints every phase for each side with its ratio."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.heavy]

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "phase_bench.py"


def phase_labels() -> list[str]:
    """The script's labels of the C engine's phases, and the validation row's."""
    spec = importlib.util.spec_from_file_location("phase_bench", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [label for _, label in module.PHASES] + ["validation"]


def test_the_phase_table_has_every_phase_for_each_side(mnist_path):
    if shutil.which("node") is None:
        pytest.fail("node (18 or later) runs the WebAssembly engine here: apt-get install nodejs (make test does).")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--epochs", "1", "--rounds", "1", "--threads", "1", "--train-limit", "1000"],
        env=dict(os.environ, DIGITLAB_DATA=str(mnist_path)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout
    assert re.search(
        r"^Where an epoch goes: the book's net, 1,000 images; .* \d{4}-\d\d-\d\d \d\d:\d\d UTC\.$", table, re.M
    )
    assert re.search(
        r"^1 thread\(s\): native (AVX-512|AVX2|portable C) \(1 ran\), portable C, WebAssembly engine\.wasm", table, re.M
    )
    labels = phase_labels()
    assert len(labels) == 10
    for phase in labels:
        assert re.search(
            rf"^\| {re.escape(phase)}[^|]* \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| ([0-9.]+x)? \|$", table, re.M
        ), phase
    epoch = re.search(r"^\| \*\*the epoch\*\* \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+)x \|$", table, re.M)
    assert epoch, table
    native, _, browser, ratio = (float(value) for value in epoch.groups())
    assert native > 0 and browser > 0
    assert abs(ratio - browser / native) <= 0.01 * ratio + 0.01
