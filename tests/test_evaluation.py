"""Evaluation: per-digit scores against a plain reference, and `evaluate_run` on real small runs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from digitlab import cli, config, evaluation, runs, training


@pytest.fixture(scope="module")
def test_run(tmp_path_factory, mnist_path, quiet):
    """A real intermediate net, 2 epochs on 3,000 images, validated on the test images as in the book."""
    settings = config.TrainConfig(model="intermediate", epochs=2, train_limit=3000, seed=5, engine="fit")
    return training.train(settings, runs_dir=tmp_path_factory.mktemp("runs"), print_fn=quiet, verbose=0)


@pytest.fixture(scope="module")
def holdout_run(tmp_path_factory, mnist_path, quiet):
    """A real shallow net, 1 epoch on 2,000 images, with --validation holdout."""
    settings = config.TrainConfig(
        model="shallow", epochs=1, train_limit=2000, seed=6, engine="fit", validation="holdout", learning_rate=1.0
    )
    return training.train(settings, runs_dir=tmp_path_factory.mktemp("runs"), print_fn=quiet, verbose=0)


def _reference_scores(true_labels, predicted_labels):
    """Precision, recall and F1 per digit, counted one image at a time in plain Python."""
    scores = []
    for digit in range(10):
        true_positive = false_positive = false_negative = 0
        for true, predicted in zip(true_labels, predicted_labels, strict=True):
            if predicted == digit and true == digit:
                true_positive += 1
            elif predicted == digit:
                false_positive += 1
            elif true == digit:
                false_negative += 1
        precision = true_positive / (true_positive + false_positive) if true_positive + false_positive else 0.0
        recall = true_positive / (true_positive + false_negative) if true_positive + false_negative else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores.append((precision, recall, f1, true_positive + false_negative))
    return scores


def test_scores_match_a_plain_reference():
    # Synthetic labels: a noisy classifier that never predicts 9 and often says 3 for 5.
    generator = np.random.default_rng(0)
    true_labels = generator.integers(0, 10, size=2000)
    predicted = np.where(generator.random(2000) < 0.8, true_labels, generator.integers(0, 10, size=2000))
    predicted[(true_labels == 5) & (generator.random(2000) < 0.5)] = 3
    predicted[predicted == 9] = 8
    matrix = evaluation.confusion_matrix(true_labels, predicted)
    for true in range(10):
        for guess in range(10):
            assert matrix[true, guess] == np.sum((true_labels == true) & (predicted == guess))
    scores = evaluation.per_digit_scores(matrix)
    for score, (precision, recall, f1, support) in zip(scores, _reference_scores(true_labels, predicted), strict=True):
        assert score["precision"] == pytest.approx(precision, abs=1e-12)
        assert score["recall"] == pytest.approx(recall, abs=1e-12)
        assert score["f1"] == pytest.approx(f1, abs=1e-12)
        assert score["support"] == support
    assert scores[9]["precision"] == 0.0 and scores[9]["recall"] == 0.0 and scores[9]["f1"] == 0.0


def test_confusion_matrix_rejects_bad_labels():
    with pytest.raises(ValueError, match="one predicted label per true label"):
        evaluation.confusion_matrix([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="digits from 0 to 9"):
        evaluation.confusion_matrix([1, 12], [1, 2])


def test_confident_mistakes_are_wrong_and_most_confident_first():
    probabilities = np.full((5, 10), 0.01)
    probabilities[0, 3], probabilities[1, 1], probabilities[2, 4], probabilities[3, 7], probabilities[4, 2] = (
        0.90,
        0.91,
        0.60,
        0.99,
        0.70,
    )
    labels = np.array([3, 0, 5, 1, 2])  # Images 1, 2 and 3 are wrong.
    assert evaluation.confident_mistakes(probabilities, labels).tolist() == [3, 1, 2]
    assert evaluation.confident_mistakes(probabilities, labels, count=1).tolist() == [3]


@pytest.mark.heavy  # Whole-set evaluations with their figures: the fast tier keeps test_cli_evaluate's.
def test_evaluate_run_matches_keras_and_writes_its_files(test_run, mnist_arrays, tmp_path):
    result = evaluation.evaluate_run(test_run, split="validation", out_dir=tmp_path)
    y_test = mnist_arrays["y_test"]
    assert result["images"] == 10_000 and result["split"] == "validation"
    matrix = np.array(result["confusion_matrix"])
    assert matrix.sum() == 10_000
    assert matrix.sum(axis=1).tolist() == np.bincount(y_test, minlength=10).tolist()
    assert result["accuracy"] == pytest.approx(np.trace(matrix) / 10_000, abs=1e-4)
    assert result["accuracy"] == pytest.approx(test_run.metrics()["final_val_accuracy"], abs=1e-5)
    assert result["loss"] == pytest.approx(test_run.metrics()["final_val_loss"], rel=1e-4)
    assert result["accuracy"] > 0.7  # Two short epochs already learn (chance is 0.1).
    assert len(result["mistakes"]) == evaluation.GALLERY_SIZE
    confidences = [mistake["probability"] for mistake in result["mistakes"]]
    assert confidences == sorted(confidences, reverse=True)
    for mistake in result["mistakes"]:
        assert mistake["true"] != mistake["predicted"] and y_test[mistake["index"]] == mistake["true"]
        assert mistake["probability"] > mistake["probability_of_true"]
    assert json.loads((tmp_path / "evaluation.json").read_text())["accuracy"] == result["accuracy"]
    for name in ("confusion.png", "mistakes.png", "hidden_units.png"):
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and image.width > 500 and image.height > 400
    assert result["files"]["hidden_units"] == str(tmp_path / "hidden_units.png")
    assert not (tmp_path / "filters.png").exists()  # Only LeNet has convolution filters.


@pytest.mark.heavy  # Whole-set evaluations with their figures: the fast tier keeps test_cli_evaluate's.
def test_holdout_run_validates_on_training_images_and_tests_once(holdout_run, mnist_arrays, tmp_path):
    validation = evaluation.evaluate_run(holdout_run, split="validation", out_dir=tmp_path)
    held_out = mnist_arrays["y_train"][-10_000:]
    assert np.array(validation["confusion_matrix"]).sum(axis=1).tolist() == np.bincount(held_out, minlength=10).tolist()
    assert validation["accuracy"] == pytest.approx(holdout_run.metrics()["final_val_accuracy"], abs=1e-5)
    test = evaluation.evaluate_run(holdout_run, split="test", out_dir=tmp_path)
    assert "untouched" in test["data"]
    assert (
        np.array(test["confusion_matrix"]).sum(axis=1).tolist()
        == np.bincount(mnist_arrays["y_test"], minlength=10).tolist()
    )
    assert test["accuracy"] == pytest.approx(holdout_run.metrics()["test_accuracy"], abs=1e-5)
    names = {path.name for path in tmp_path.iterdir()}
    assert {
        "evaluation.json",
        "evaluation-test.json",
        "confusion-test.png",
        "mistakes-test.png",
        "hidden_units-test.png",
    } <= names


def test_bad_split_and_unfinished_run_are_reported(test_run, tmp_path):
    with pytest.raises(ValueError, match="Unknown split 'train'"):
        evaluation.evaluate_run(test_run, split="train")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(test_run.file("config.json"), unfinished / "config.json")
    with pytest.raises(runs.RunError, match="has no trained model"):
        evaluation.evaluate_run(runs.open_run(unfinished))


def test_cli_evaluate(test_run, tmp_path, capsys):
    assert cli.main(["evaluate", str(test_run.path)]) == 0
    output = capsys.readouterr().out
    assert "accuracy 0." in output and "precision" in output
    assert len([line for line in output.splitlines() if line.strip()[:1].isdigit()]) >= 10
    # Without --out the files go into the run folder.
    assert {"evaluation.json", "confusion.png", "mistakes.png", "hidden_units.png"} <= {
        path.name for path in test_run.path.iterdir()
    }
    assert cli.main(["evaluate", str(tmp_path / "no-such-run")]) == 2
    assert "error: No run folder" in capsys.readouterr().err
    assert cli.main(["evaluate", str(test_run.path), "--json", "--out", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 10_000


@pytest.mark.heavy  # Real processes, each killed by a real SIGTERM at a different moment.
def test_sigterm_at_any_moment_of_evaluate_leaves_all_its_files_or_none(tmp_path, trained_run, mnist_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    names = ("evaluation.json", "confusion.png", "mistakes.png")

    def evaluate(run_dir, stop_after=None):
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", "digitlab", "evaluate", str(run_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        if stop_after is not None:
            time.sleep(stop_after)
            process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=300)
        return process.returncode, err, time.monotonic() - started

    shutil.copytree(trained_run, tmp_path / "whole")
    code, err, whole = evaluate(tmp_path / "whole")
    assert code == 0, err
    outcomes = []
    # SIGTERM at moments spread over a whole evaluation, most of them near its end, where it writes.
    for fraction in (0.6, 0.8, 0.9, 0.95, 1.0):
        run_dir = tmp_path / f"run-{fraction}"
        shutil.copytree(trained_run, run_dir)
        code, err, _ = evaluate(run_dir, stop_after=fraction * whole)
        present = [(run_dir / name).is_file() for name in names]
        # -15: killed while Python was still starting, before `evaluate` took SIGTERM over.
        assert code in (0, 130, -signal.SIGTERM), err
        assert "Traceback" not in err
        # All new, or none: a SIGTERM just after the renames may still stop it (130) with all there.
        assert all(present) or not any(present), (fraction, present, err)
        assert all(present) or code != 0
        assert not list(run_dir.glob(".*.tmp")), "a temporary file was left behind"
        outcomes.append((code, all(present)))
    assert (130, False) in outcomes, f"no SIGTERM stopped an evaluation: {outcomes}"
