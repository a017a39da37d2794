"""Tests of `digitlab bench` on a shrunken configuration: every contender runs in its own process.

One epoch on a few hundred real MNIST images keeps this to about a minute, most
of it the start-up of a worker process per row (TensorFlow's is the slowest).
"""

import importlib.util
import json

import pytest

from digitlab import atomic
from digitlab.bench import arithmetic, breakdown
from digitlab.bench import markdown as bench_markdown
from digitlab.bench import runner as bench
from digitlab.bench import worker as bench_worker
from digitlab.engine import sparse, timing

ROW_NAMES = [
    "Keras fit, TensorFlow backend",
    "Keras fit, JAX backend",
    "digitlab engine, 1 seed",
    "digitlab engine, 1 seed, one core",  # On a machine with more than one core, as CI's.
    "digitlab engine, 2 seeds",
]


@pytest.mark.heavy
def test_run_bench_writes_every_row(tmp_path):
    printed = []
    results = bench.run_bench(
        epochs=2,
        seeds=2,
        out_dir=tmp_path,
        train_limit=300,
        print_fn=printed.append,
        compare_seeds=2,
        compare_epochs=1,
        profile=True,
    )
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["rows"] == results["rows"]
    assert [row["name"] for row in saved["rows"]] == ROW_NAMES
    markdown = (tmp_path / "bench.md").read_text()
    for row in saved["rows"]:
        assert row["name"] in markdown
        if row.get("keras_backend") == "tensorflow" and importlib.util.find_spec("tensorflow") is None:
            assert row["status"] == bench.NOT_INSTALLED
            continue
        assert row["status"] == "ok", row["status"]
        assert row["seconds_per_epoch"] > 0 and row["projected_seconds"] > row["seconds_per_epoch"]
        assert 0.0 <= row["val_accuracy"] <= 1.0
        assert 50 < row["peak_memory_mb"] < 4000
        assert row["times_limit"] > 0 and row["speedup_vs_fit_jax"] > 0
        # Fewer useful multiply-adds than dense ones: the useful limit is the stricter one.
        assert row["times_useful_limit"] > row["times_limit"]
    engine_rows = [row for row in saved["rows"] if row["kind"] == "engine"]
    assert [row["networks"] for row in engine_rows] == [1, 1, 2]
    assert [row["workers"] for row in engine_rows] == [None, 1, None]
    assert engine_rows[2]["flops_per_epoch"] == 2 * engine_rows[0]["flops_per_epoch"]
    # Per network against one seed on one core, for the other engine rows.
    assert set(saved["scaling"]) == {ROW_NAMES[2], ROW_NAMES[4]} and all(
        ratio > 0 for ratio in saved["scaling"].values()
    )
    assert "against one seed on one core" in markdown
    # Each engine row says what ran, and (with profile=True) where its epochs went, phase by phase.
    kernel = "AVX-512 (512-bit)" if sparse.avx512() else "AVX2 (256-bit)"  # The first layer's code on this CPU.
    assert all(row["kernel"] == kernel.split(" ")[0] and row["thread_counts"] for row in engine_rows)
    assert f"digitlab engine, 1 seed, one core (fast-numpy, {kernel}, 1 thread per network)" in markdown
    assert engine_rows[2]["seed_threads"] == 2 and "2 threads over the seeds" in markdown
    assert set(saved["bandwidth"]) == {"l1", "l2", "memory"} and min(saved["bandwidth"].values()) > 0
    for row in engine_rows:
        phases = {entry["phase"]: entry for entry in row["breakdown"]}
        assert phases["first layer forward"]["limit_seconds"] > 0 and phases["first layer forward"]["times_limit"] > 0
        assert phases["wait after the rows"]["limit_seconds"] == 0 and "validation" in phases
        assert f"Where an epoch goes: {row['name']} (" in markdown
    assert saved["gflops"]["one_core"] > 0 and saved["gflops"]["all_cores"] > 0
    # The same seeds, initial weights and batches: fit and the engine end at the same accuracy.
    comparison = saved["comparison"]
    assert comparison["fit"]["final_val_accuracies"] == pytest.approx(
        comparison["engine"]["final_val_accuracies"], abs=2e-3
    )
    assert comparison["within_one_point"] is True
    assert "Accuracy check" in markdown
    assert any("bench.md" in line for line in printed)


def test_deep_net_rows_time_fit_against_the_engine(tmp_path):
    results = bench.run_bench(
        epochs=2,
        seeds=1,
        out_dir=tmp_path,
        train_limit=300,
        backends=("jax",),
        print_fn=lambda line: None,
        model="deep",
        profile=True,
    )
    assert [row["name"] for row in results["rows"]] == [ROW_NAMES[1], ROW_NAMES[2], ROW_NAMES[3]]
    assert all(row["status"] == "ok" and row["speedup_vs_fit_jax"] > 0 for row in results["rows"])
    engine_rows = results["rows"][1:]
    assert all(row["engine"] == "fast-numpy" and "whole epochs in C" in row["path"] for row in engine_rows)
    markdown = (tmp_path / "bench.md").read_text()
    assert markdown.startswith("Book's deep net") and "20 epochs (projected)" in markdown
    # --profile: the deep net's own phases (_deep.c), with no limits (the work model counts the shallow net's).
    for row in engine_rows:
        phases = [entry["phase"] for entry in row["breakdown"]]
        assert phases == list(timing.DEEP_PHASES) + [timing.VALIDATION, timing.PYTHON]
        assert all(entry["limit_seconds"] == 0 for entry in row["breakdown"])
    assert "Where an epoch goes" in markdown and "| BatchNormalization statistics | " in markdown
    assert "× limit" not in markdown and "have no limits counted" in markdown
    assert "the first layer's update sums its gradient as it goes" in markdown
    # Where the host had the cores before and after the rows: read, or None where it could not be (one core).
    handover = results["handover_ns"]
    assert set(handover) == {"before", "after"}
    assert all(ns is None or 1 < ns < 1e8 for ns in handover.values())
    if any(ns is not None for ns in handover.values()):
        assert "Cores' hand-over (a cache line between two threads, there and back): " in markdown


def test_the_bench_header_says_where_the_cores_were():
    """markdown.handover_text: each read in ns, or 'not read'; a bench.json from before it has none."""
    assert bench_markdown.handover_text({"before": 64.4, "after": 301.0}) == "64 ns before the rows, 301 ns after"
    assert bench_markdown.handover_text({"before": None, "after": 66.0}) == "not read before the rows, 66 ns after"


@pytest.mark.heavy
def test_lenet_bench_times_each_backend_and_marks_the_default(tmp_path):
    results = bench.run_lenet_bench(steps=bench.WARMUP_STEPS + 2, out_dir=tmp_path, print_fn=lambda line: None)
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert rows == results["rows"]
    assert [row.get("keras_backend") for row in rows] == ["tensorflow", "jax", "tensorflow"]
    assert [row.get("default", False) for row in rows] == [False, False, True]
    assert all(row["status"] == "ok" and row["ms_per_step"] > 0 and row["times_fastest"] >= 1 for row in rows)
    assert "**`digitlab train --model lenet`" in (tmp_path / "bench.md").read_text()


def test_useful_flops_count_only_nonzero_pixels():
    dense = arithmetic.epoch_flops([784, 64, 10], 100, 10)
    assert arithmetic.useful_epoch_flops([784, 64, 10], 100, 10, 100 * 784, 10 * 784) == dense
    assert (
        arithmetic.useful_epoch_flops([784, 64, 10], 100, 10, 0, 0)
        == dense - 2 * 2 * 784 * 64 * 100 - 2 * 784 * 64 * 10
    )


def test_epoch_flops_of_the_shallow_net():
    # Forward 784*64 + 64*10 multiply-adds, the same for weight gradients, 64*10 for the hidden input gradient.
    assert (
        arithmetic.epoch_flops([784, 64, 10], 60_000, 10_000) == 2 * (2 * 50_816 + 640) * 60_000 + 2 * 50_816 * 10_000
    )


def test_bad_arguments_raise_value_error(tmp_path):
    with pytest.raises(ValueError, match="epochs"):
        bench.run_bench(epochs=0, out_dir=tmp_path)
    with pytest.raises(ValueError, match="Keras backend"):
        bench.run_bench(epochs=1, backends=("torch",), out_dir=tmp_path)
    assert bench_worker.main(["--epochs", "0", "--out", str(tmp_path)]) == 2  # It only runs --worker.


def test_results_are_written_atomically_or_not_at_all(tmp_path):
    results = {"rows": [], "created": "now"}
    bench.write_results(tmp_path / "out", results, "| table |\n", print_fn=lambda line: None)
    assert json.loads((tmp_path / "out" / "bench.json").read_text()) == results
    assert (tmp_path / "out" / "bench.md").read_text() == "| table |\n"
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["bench.json", "bench.md"]  # No temporaries.
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    with pytest.raises(atomic.WriteError, match="Could not write"):
        bench.write_results(blocked / "out", results, "", print_fn=lambda line: None)


def test_each_engine_row_names_what_ran():
    row = {"kind": "engine", "engine": "fast-numpy", "kernel": "AVX2", "thread_counts": {"2": 4}, "seed_threads": 1}
    assert breakdown.describe_path(row) == "fast-numpy, AVX2 (256-bit), 2 threads per network"
    row.update(thread_counts={"1": 1, "2": 3}, seed_threads=2, kernel="portable C")
    assert breakdown.describe_path(row) == (
        "fast-numpy, portable C, 1–2 threads per network (following the load), 2 threads over the seeds"
    )
    assert breakdown.describe_path({"kind": "engine", "engine": "fast-jax", "kernel": "JAX"}) == "fast-jax, JAX"
    assert breakdown.describe_path({"kind": "fit", "engine": "keras-fit-jax"}) == "keras-fit-jax"


def test_each_phase_is_set_against_its_own_limit():
    """A phase's limit is its multiply-adds at the matmul speed or its bytes at their level's bandwidth,
    whichever is longer; phases without work have none."""
    phases = {name: [0.0] for name in timing.PHASES}
    phases["first layer forward"] = [0.004]
    row = {
        "networks": 1,
        "cores": 2,
        "profile": {"epochs": 3, "phases": phases, timing.VALIDATION: 0.001, timing.PYTHON: 0.0005},
        "work": {
            "first layer forward": {"flops": 2e9, "bytes": {"l2": 1e8, "memory": 1e6}},
            timing.VALIDATION: {"flops": 1e6, "bytes": {"l2": 5e8}},
        },
    }
    table = {
        entry["phase"]: entry
        for entry in breakdown.phases(
            row, {"one_core": 100.0, "all_cores": 180.0}, {"l1": 1e11, "l2": 5e10, "memory": 1e10}
        )
    }
    forward = table["first layer forward"]
    assert forward["bound"] == "arithmetic" and forward["limit_seconds"] == pytest.approx(2e9 / 100e9)
    assert forward["times_limit"] == pytest.approx(0.004 / 0.02)
    assert table[timing.VALIDATION]["bound"] == "l2" and table[timing.VALIDATION]["limit_seconds"] == 0.01
    assert table["loss"]["limit_seconds"] == 0 and table["loss"]["times_limit"] is None
    assert table[timing.PYTHON]["seconds"] == [0.0005]
