"""Evaluation of a trained run: accuracy, loss, per-digit scores, confusion matrix, mistakes.

    from digitlab import evaluation, runs
    result = evaluation.evaluate_run(runs.open_run("runs/x"))            # the run's validation data
    result = evaluation.evaluate_run(run, split="test")                  # the test images
    print(evaluation.format_result(result))

`evaluate_run` loads the run's model and the images it validated on (the test
images for a run trained with `--validation test`, as in the book; the 10,000
held-out training images for `--validation holdout`), and writes into the run
folder (or `out_dir`):

    evaluation.json   accuracy, loss, precision/recall/F1 per digit, confusion matrix, mistakes
    confusion.png     the confusion matrix, counts in every cell
    mistakes.png      the most confidently wrong digits with true and predicted labels
    hidden_units.png  (dense nets) the first layer's weights as 28x28 images, and its
                      activations and the ten probabilities for the first image (see digitlab.inside)
    filters.png       (LeNet) the first convolution's filters
    feature_maps.png  (LeNet) the maps they make of the first image

They are written together (`write_together`): all of them new, or, after a Ctrl-C, a
SIGTERM or a full disk, none of them touched; evaluation.json comes last.

With `split="test"` the files are named evaluation-test.json, confusion-test.png,
mistakes-test.png and so on, so a holdout run's one final check on the test images
never overwrites its validation results. `evaluate_model` does the same work on
any model and images (the notebooks use it) and returns the figures instead of
writing them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from digitlab import atomic, data, errors, inside, interrupts, models, plots, runs

SPLITS = ("validation", "test")
NUM_CLASSES = data.NUM_CLASSES
# How many of the most confidently wrong digits the gallery shows.
GALLERY_SIZE = 24


def confusion_matrix(true_labels, predicted_labels, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """`matrix[t, p]` counts the images of digit t that the network called p."""
    true_labels = np.asarray(true_labels, dtype=np.int64)
    predicted_labels = np.asarray(predicted_labels, dtype=np.int64)
    if true_labels.shape != predicted_labels.shape or true_labels.ndim != 1:
        raise ValueError(
            f"Give one predicted label per true label; got shapes {true_labels.shape} and {predicted_labels.shape}."
        )
    for name, labels in (("true", true_labels), ("predicted", predicted_labels)):
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"The {name} labels must be digits from 0 to {num_classes - 1}.")
    flat = np.bincount(true_labels * num_classes + predicted_labels, minlength=num_classes**2)
    return flat.reshape(num_classes, num_classes)


def per_digit_scores(matrix: np.ndarray) -> list[dict]:
    """Precision, recall, F1 and support for each digit, from a confusion matrix.

    A score whose denominator is zero (a digit never predicted, or absent) is 0.0.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    hits = np.diag(matrix)
    predicted = matrix.sum(axis=0)
    support = matrix.sum(axis=1)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, support, out=np.zeros_like(hits), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(hits), where=total > 0)
    return [
        dict(
            digit=digit,
            precision=float(precision[digit]),
            recall=float(recall[digit]),
            f1=float(f1[digit]),
            support=int(support[digit]),
        )
        for digit in range(len(hits))
    ]


def confident_mistakes(probabilities: np.ndarray, true_labels, count: int = GALLERY_SIZE) -> np.ndarray:
    """Indices of the wrongly classified images, most confident (highest top probability) first."""
    probabilities = np.asarray(probabilities)
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != np.asarray(true_labels))
    confidence = probabilities[wrong, predicted[wrong]]
    # A stable sort keeps equally confident mistakes in image order, so results repeat.
    order = np.argsort(-confidence, kind="stable")
    return wrong[order[:count]]


def score(
    probabilities: np.ndarray, labels: np.ndarray, gallery_size: int = GALLERY_SIZE
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """The predicted digits, the confusion matrix and the gallery's mistakes (the most confidently wrong
    first, each a dict: index, true, predicted, probability, probability_of_true) of a network's
    `probabilities` for images whose digits are `labels`. `evaluate_model` and the server's evaluation
    of any epoch (`serve.networks`) both score with it."""
    predicted = probabilities.argmax(axis=1)
    mistakes = [
        dict(
            index=int(index),
            true=int(labels[index]),
            predicted=int(predicted[index]),
            probability=float(probabilities[index, predicted[index]]),
            probability_of_true=float(probabilities[index, labels[index]]),
        )
        for index in confident_mistakes(probabilities, labels, gallery_size)
    ]
    return predicted, confusion_matrix(labels, predicted), mistakes


def evaluate_model(
    model,
    images: np.ndarray,
    labels: np.ndarray,
    flat: bool = True,
    gallery_size: int = GALLERY_SIZE,
    title: str = "",
    digit_name: str = "X_valid[0]",
) -> tuple[dict, dict]:
    """Scores a compiled Keras model on uint8 images; returns (result, figures).

    `result` holds accuracy and loss (from `model.evaluate`), per-digit scores,
    the confusion matrix and the gallery's mistakes; `figures` maps "confusion",
    "mistakes" and the look inside the network at the first image ("hidden_units",
    or "filters" and "feature_maps"; see `inside.figures`) to Matplotlib figures.
    """
    if len(images) == 0 or len(images) != len(labels):
        raise ValueError(
            f"Give one label per image and at least one image; got {len(images)} images and {len(labels)} labels."
        )
    inputs, targets = data.to_inputs(images, flat), data.to_targets(labels)
    loss, accuracy = model.evaluate(inputs, targets, batch_size=1000, verbose=0)
    probabilities = np.asarray(model.predict(inputs, batch_size=1000, verbose=0))
    predicted, matrix, mistakes = score(probabilities, labels, gallery_size)
    scores = per_digit_scores(matrix)
    wrong = np.array([mistake["index"] for mistake in mistakes], dtype=np.intp)
    result = {
        "images": int(len(images)),
        "accuracy": float(accuracy),
        "loss": float(loss),
        "errors": int(len(images) - np.trace(matrix)),
        "per_digit": scores,
        "macro_precision": float(np.mean([score["precision"] for score in scores])),
        "macro_recall": float(np.mean([score["recall"] for score in scores])),
        "macro_f1": float(np.mean([score["f1"] for score in scores])),
        "confusion_matrix": matrix.tolist(),
        "mistakes": mistakes,
    }
    heading = f"{title}: " if title else ""
    confusion_title = f"{heading}confusion matrix" if title else "Confusion matrix"
    figures = {
        "confusion": plots.confusion_matrix(
            matrix, title=f"{confusion_title} ({result['errors']} errors in {len(images)})"
        ),
        "mistakes": plots.mistakes_gallery(
            images[wrong],
            labels[wrong],
            predicted[wrong],
            probabilities[wrong, predicted[wrong]],
            title=f"{heading}the {len(wrong)} most confidently wrong digits"
            if title
            else f"The {len(wrong)} most confidently wrong digits",
        ),
        **inside.figures(model, images[0], int(labels[0]), flat=flat, digit_name=digit_name),
    }
    return result, figures


def evaluation_images(run: runs.Run, arrays: dict[str, np.ndarray], split: str = "validation"):
    """The images and labels `split` means for this run, and a sentence describing them."""
    if split not in SPLITS:
        raise errors.DigitlabError(f"Unknown split {split!r}; choose validation or test.")
    config = run.config()
    (_, _), (x_valid, y_valid), test = data.split(arrays, config.validation)
    if split == "validation":
        if config.validation == "holdout":
            return x_valid, y_valid, "the 10,000 held-out training images the run validated on"
        return x_valid, y_valid, "the 10,000 test images the run validated on, as in the book"
    if test is None:
        return (
            arrays["x_test"],
            arrays["y_test"],
            ("the 10,000 test images (this run also validated on them, so they are not an untouched check)"),
        )
    return test[0], test[1], "the 10,000 test images, untouched during training (the one final check)"


def evaluate(run: runs.Run, arrays: dict[str, np.ndarray], split: str = "validation", model=None) -> tuple[dict, dict]:
    """Evaluates a run on already loaded data (and its model, if already loaded); returns
    (result, figures) without writing files."""
    images, labels, description = evaluation_images(run, arrays, split)
    config = run.config()
    if model is None:
        model = run.load_model()
    result, figures = evaluate_model(
        model,
        images,
        labels,
        flat=not models.is_convolutional(config.model),
        title=f"{config.model} net, {split}",
        digit_name=f"{split} image 0",
    )
    result = {
        "run": run.name,
        "model": config.model,
        "split": split,
        "data": description,
        "validation": config.validation,
        **result,
    }
    return result, figures


def output_names(split: str, figures=("confusion", "mistakes")) -> dict[str, str]:
    """The file names an evaluation of `split` writes: the JSON and one PNG per figure."""
    suffix = "" if split == "validation" else f"-{split}"
    return {"json": f"evaluation{suffix}.json", **{name: f"{name}{suffix}.png" for name in figures}}


def evaluate_run(run: runs.Run, data_path=None, split: str = "validation", out_dir=None) -> dict:
    """Evaluates a run and writes evaluation.json and its figures (confusion.png, mistakes.png and the
    look inside); returns the result.

    The files are written together: all of them new, or (after a Ctrl-C, a SIGTERM, a full disk)
    none of them touched. A folder that cannot be written is reported before the work starts.
    """
    if split not in SPLITS:
        raise errors.DigitlabError(f"Unknown split {split!r}; choose validation or test.")
    out_dir = Path(out_dir) if out_dir is not None else run.path
    runs.check_folder(out_dir, "output folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise runs.RunError(f"Cannot create the output folder {out_dir} ({error.strerror}).") from None
    runs.check_writable(out_dir, advice=WRITABLE_ADVICE)
    result, figures = evaluate(run, data.load_arrays(data_path), split)
    names = output_names(split, figures)
    result["files"] = {key: str(out_dir / name) for key, name in names.items()}
    payloads = {}
    for key, figure in figures.items():
        interrupts.check()  # A Ctrl-C or SIGTERM asked for under `interrupts.requests_stop` stops here.
        payloads[out_dir / names[key]] = plots.figure_png(figure, palette=inside.is_inside_figure(key))
    # evaluation.json last: a reader that finds it finds the figures of the same evaluation.
    payloads[out_dir / names["json"]] = (json.dumps(result, indent=2) + "\n").encode()
    interrupts.check()
    write_together(payloads)
    return result


# What `digitlab evaluate` can do when the run folder is read-only.
WRITABLE_ADVICE = "Give a folder you can write with `digitlab evaluate RUN --out DIR`; the run stays as it is."


def write_together(files: dict[Path, bytes]) -> None:
    """Writes several files so that either all of them are new or none is.

    Each goes to a temporary file of this process first (flushed to disk); a failure or an
    interrupt there removes the temporary files and leaves every target as it was. Then they
    are renamed into place in order, with Ctrl-C and SIGTERM held back for those few
    microseconds (see `interrupts.held`), so the last file's presence means the set is whole.
    """
    temporaries: dict[Path, Path] = {}
    renamed: list[Path] = []
    path = next(iter(files), Path("."))
    try:
        for path, payload in files.items():
            temporaries[path] = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with open(temporaries[path], "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
        with interrupts.held():
            for path, temporary in temporaries.items():
                os.replace(temporary, path)
                renamed.append(path)
    except OSError as error:
        changed = ", ".join(path.name for path in renamed) or "no file of this evaluation"
        raise atomic.WriteError(
            f"Could not write {path} ({error.strerror or error}); {changed} was changed. "
            "Free some space, or give another folder with --out DIR, and evaluate again."
        ) from None
    finally:
        for temporary in temporaries.values():
            atomic.remove_quietly(temporary)


def format_result(result: dict) -> str:
    """Accuracy, loss and the per-digit table as plain text, for the command line."""
    lines = [
        f"{result.get('run', 'model')} ({result.get('model', '?')} net) on {result.get('data', result.get('split'))}:",
        f"  accuracy {result['accuracy']:.4f}   loss {result['loss']:.4f}   "
        f"errors {result['errors']} of {result['images']}",
        "",
        "  digit  precision  recall  f1      support",
    ]
    for score in result["per_digit"]:
        lines.append(
            f"  {score['digit']:>5}  {score['precision']:>9.4f}  {score['recall']:>6.4f}  "
            f"{score['f1']:.4f}  {score['support']:>7}"
        )
    lines.append(
        f"  {'mean':>5}  {result['macro_precision']:>9.4f}  {result['macro_recall']:>6.4f}  "
        f"{result['macro_f1']:.4f}  {result['images']:>7}"
    )
    if result.get("files"):
        lines += ["", "Wrote " + ", ".join(result["files"].values())]
    return "\n".join(lines)
