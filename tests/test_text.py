"""`digitlab.text`: the one way a value is written as text, and the aligned table, as every table,
report and sweep label uses them."""

from digitlab import compare, runs, text
from digitlab.sweep import plan as sweep_plan


def test_a_value_reads_the_same_in_flags_tables_reports_and_sweep_labels():
    assert text.value_text([64, 64]) == "64 64"  # As --units 64 64 and --grid 'units=64 64' take it.
    assert text.value_text([]) == "none"
    assert text.value_text(None) == "none" and text.value_text(None, ".4f", missing="-") == "-"
    assert text.value_text(0.123456) == "0.1235" and text.value_text(0.01) == "0.01"
    assert text.value_text(0.98765, ".2f") == "0.99" and text.value_text(12) == "12"
    assert text.value_text([0.123456, 1]) == "0.1235 1"
    assert text.value_text(True) == "True" and text.value_text("relu") == "relu"
    assert sweep_plan.label({"units": [64, 64], "learning_rate": 0.1}) == "units=64 64, learning_rate=0.1"


def test_the_aligned_table_pads_each_column_to_its_widest_cell():
    table = text.aligned_table(("run", "lr"), [("a", "0.1"), ("longer", "0.01")])
    assert table.splitlines() == ["run     lr", "a       0.1", "longer  0.01"]
    assert text.aligned_table(("only",), []) == "only"


def test_the_runs_and_compare_tables_are_the_one_table():
    listed = [{"run": "r1", "status": "complete", "learning_rate": 0.01, "epochs": 2, "epochs_planned": 2}]
    lines = runs.format_table(listed).splitlines()
    assert " ".join(lines[0].split()) == "run status model optimizer lr epochs best val final val engine time s date"
    assert lines[1].split() == ["r1", "complete", "?", "?", "0.01", "2/2", "-", "-", "-", "-", "-"]
    compared = {
        "run": "r1",
        "status": "complete",
        "model": "shallow",
        "optimizer": "sgd",
        "learning_rate": 0.01,
        "validation": "split",
        "epochs": 2,
        "epochs_planned": 2,
        "best_val_accuracy": 0.5,
        "best_epoch": 2,
        "final_val_accuracy": 0.5,
        "test_accuracy": None,
        "wall_time_s": 1.5,
    }
    assert compare.format_table([compared]).splitlines()[1].split() == [
        "r1",
        "complete",
        "shallow",
        "sgd",
        "0.01",
        "split",
        "2/2",
        "0.5000",
        "(2)",
        "0.5000",
        "-",
        "1.5",
    ]
