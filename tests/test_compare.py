"""Comparing runs (the overlay PNG and the table) and the TensorBoard logs of `--tensorboard`."""

from __future__ import annotations

import json
import struct

import pytest
from PIL import Image

from digitlab import atomic, cli, compare, config, runs, training


def _train(runs_dir, quiet, **settings):
    settings = dict(epochs=3, train_limit=2000, seed=1, engine="fit", **settings)
    return training.train(config.TrainConfig(**settings), runs_dir=runs_dir, print_fn=quiet, verbose=0)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, mnist_path, quiet):
    """Two real short runs: the shallow net at two learning rates."""
    runs_dir = tmp_path_factory.mktemp("runs")
    return _train(runs_dir, quiet, learning_rate=0.01), _train(runs_dir, quiet, learning_rate=1.0, tensorboard=True)


def test_compare_runs_writes_the_overlay_and_returns_rows(two_runs, tmp_path):
    out = tmp_path / "compare.png"
    rows = compare.compare_runs([run.path for run in two_runs], out_path=out)
    assert [row["run"] for row in rows] == [run.name for run in two_runs]
    assert [row["learning_rate"] for row in rows] == [0.01, 1.0]
    for row, run in zip(rows, two_runs, strict=True):
        curve = run.history()["val_accuracy"]
        assert row["model"] == "shallow" and row["epochs"] == 3 and row["status"] == "complete"
        assert row["final_val_accuracy"] == pytest.approx(curve[-1])
        assert row["best_val_accuracy"] == pytest.approx(max(curve))
        assert curve[row["best_epoch"] - 1] == pytest.approx(max(curve))
        assert row["wall_time_s"] > 0
    # The larger learning rate learns far faster in three short epochs; the table marks it best.
    assert rows[1]["final_val_accuracy"] > rows[0]["final_val_accuracy"] + 0.1
    table = compare.format_table(rows).splitlines()
    assert len(table) == 3 and table[2].startswith(two_runs[1].name + " *")
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 600


def test_compare_includes_an_interrupted_run(two_runs, tmp_path):
    # A run cut after one epoch: config and history, but no model or metrics yet.
    cut = tmp_path / "cut-run"
    cut.mkdir()
    for name in ("config.json", "status.json"):
        (cut / name).write_bytes(two_runs[0].file(name).read_bytes())
    history = two_runs[0].history()
    atomic.write_json(cut / "history.json", {"seeds": [{key: values[:1] for key, values in history.items()}]})
    status = json.loads((cut / "status.json").read_text())
    atomic.write_json(cut / "status.json", dict(status, status="interrupted", epoch=1))
    rows = compare.compare_runs([two_runs[0].path, cut], out_path=tmp_path / "c.png")
    assert rows[1]["status"] == "interrupted" and rows[1]["epochs"] == 1 and rows[1]["wall_time_s"] is None
    assert "1/3" in compare.format_table(rows)


def test_compare_rejects_bad_input(two_runs, tmp_path):
    with pytest.raises(ValueError, match="at least one run"):
        compare.compare_runs([], out_path=tmp_path / "c.png")
    with pytest.raises(runs.RunError, match="No run folder"):
        compare.compare_runs([tmp_path / "missing"], out_path=tmp_path / "c.png")
    with pytest.raises(runs.RunError, match="does not exist"):
        compare.compare_runs([two_runs[0].path], out_path=tmp_path / "no-folder" / "c.png")


def test_cli_compare(two_runs, tmp_path, capsys):
    out = tmp_path / "cmp.png"
    assert cli.main(["compare", *(str(run.path) for run in two_runs), "--out", str(out)]) == 0
    output = capsys.readouterr().out
    assert all(run.name in output for run in two_runs) and "best val" in output and out.is_file()
    assert cli.main(["compare", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("error: No run folder")


def _read_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """Parses TensorBoard event files (TFRecord framing around Event protobufs) into tag -> [(step, value)]."""
    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        payload = path.read_bytes()
        offset = 0
        while offset < len(payload):
            (length,) = struct.unpack("<Q", payload[offset : offset + 8])
            record = payload[offset + 12 : offset + 12 + length]
            offset += 12 + length + 4
            event = event_pb2.Event.FromString(record)
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_tensorboard_writes_event_files_with_the_history(two_runs):
    run = two_runs[1]
    folder = run.file("tensorboard")
    assert list(folder.rglob("events.out.tfevents.*")), "--tensorboard wrote no event files"
    scalars = _read_scalars(folder)
    history = run.history()
    accuracy = scalars["epoch_accuracy/validation"]
    assert [step for step, _ in accuracy] == [1, 2, 3]
    assert [value for _, value in accuracy] == pytest.approx(history["val_accuracy"], abs=1e-6)
    assert [value for _, value in scalars["epoch_loss/train"]] == pytest.approx(history["loss"], abs=1e-6)
    assert not two_runs[0].file("tensorboard").exists()
