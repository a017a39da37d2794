"""scripts/browser_bench.py --quick: every row of issue 23's table is printed, from one run, and the browser's
weights equal the native portable path's, bit for bit, after every epoch at one thread and at two; issue 24's
row, the handwriting set of 100 scored every epoch, is printed with a percent of an epoch."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.heavy, pytest.mark.browser]

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "browser_bench.py"
ROWS = [
    r"\| digitlab train, OMP_NUM_THREADS={n} \(.*AVX.*\): training time \| [0-9.]+ s \|",
    r"\| digitlab train, OMP_NUM_THREADS={n}, DIGITLAB_KERNEL_SCALAR=1 \(.*portable C.*\): training time "
    r"\| [0-9.]+ s \|",
    r"\| Browser, {n} threads?, engine(-threads)?\.wasm: Train to epoch 5's end \| [0-9.]+ s \|",
    r"\| Browser, {n} threads?, .*: first epoch \(the Worker's own\) \| [0-9.]+ s \|",
    r"\| Ratio browser \(Train to end\) / digitlab train \(AVX2\), {n} thread\(s\) \(target <= 2\) \| [0-9.]+x \|",
    r"\| Ratio browser \(Train to end\) / digitlab train \(portable C\), {n} thread\(s\) \| [0-9.]+x \|",
    r"\| Page load to epoch 1's end, MNIST cached, {n} thread\(s\) \(target <= 5 s\) \| [0-9.]+ s \|",
    r"\| Page load to epoch 1's end, first visit \(MNIST fetched\), {n} thread\(s\) \| [0-9.]+ s \|",
    r"\| Page's peak memory, {n} thread\(s\) .* \| [0-9]+ MiB \|",
    r"\| Differing weights, browser \({n} thread\(s\)\) vs native portable path, after each of epochs 1-5 "
    r"\| 0, 0, 0, 0, 0 of 50,890 \|",
]


def test_the_quick_benchmark_prints_every_row_with_no_differing_weight(mnist_path, tmp_path):
    figures = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(figures)],
        env=dict(os.environ, DIGITLAB_DATA=str(mnist_path)),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout
    assert re.search(r"^Machine: .+, \d+ cores .*; Chromium [0-9.]+; \d{4}-\d\d-\d\d \d\d:\d\d UTC\.$", table, re.M)
    for threads in (1, 2):
        for row in ROWS:
            assert re.search(row.format(n=threads), table), (row.format(n=threads), table)
        handwriting = re.search(
            rf"^\| Handwriting set of 100, scored each epoch, {threads} thread\(s\): ([0-9.]+) ms = ([0-9.]+)% of an "
            r"epoch \(target <= 5%; .*\) \| ([0-9.]+)% \|$",
            table,
            re.M,
        )
        assert handwriting, table
        assert float(handwriting[1]) > 0 and float(handwriting[2]) > 0 and handwriting[2] == handwriting[3]
    for name in ("engine.js", "engine.wasm", "engine-threads.wasm", "engine-scalar.wasm"):
        assert re.search(rf"\| Engine file {re.escape(name)}: bytes, gzip'ed \| [0-9,]+ / [0-9,]+ \|", table)
    assert re.search(r"\| MNIST's transfer .* \| [0-9,]+ bytes \|", table)
    results = json.loads(figures.read_text())
    check = results["check"]
    assert [row["differing"] for row in check["browser"]] == [[0] * 5, [0] * 5]
    # Same weights give the same validation accuracy, to every digit the logs hold.
    assert all(row["val_accuracy"] == check["native_val_accuracy"] for row in check["browser"])
    # The two thread counts trained as asked: one thread without isolation, two with COOP/COEP.
    assert [(row["threads"], row["build"]) for row in results["browser"]] == [
        (1, "engine.wasm"),
        (2, "engine-threads.wasm"),
    ]
    # The set was scored once an epoch, all 100 digits, in the timed run of each thread count.
    assert [len(row["handwriting_scoring_ms"]) for row in results["browser"]] == [5, 5]
    assert all(row["handwriting_digits"] == 100 for row in results["browser"])
    # A first visit fetched all of MNIST, compressed.
    assert 10_000_000 < results["mnist_transfer_bytes"] < 20_000_000
