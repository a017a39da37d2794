"""Predictions from a trained model: one MNIST image by index, picture files, or raw inputs.

`digitlab predict RUN --index N` and `digitlab predict RUN IMAGE...` call these,
and the web server uses `probabilities` for every request:

    from digitlab import predict
    predict.probabilities(model, inputs)                        # (N, 10), same as model.predict
    result = predict.predict_index(model, x_valid, y_valid, 7)  # digit, true label, ten probabilities
    results = predict.predict_files(model, ["seven.png"], show_dir="seen/")
    print(predict.format_result(results[0]))                    # text; the dicts are JSON-ready

`model.predict` costs a few milliseconds per call however small the batch (it
builds a data adapter and a loop each time). For small batches `probabilities`
instead calls one compiled forward pass: on the JAX backend a `jax.jit` of the
model's `stateless_call` with the model's current weights, elsewhere the model
called directly. The tests check that it equals `model.predict`.
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path

import keras
import numpy as np

from digitlab import data, errors, imaging

# Batches up to this size take the compiled fast path; larger ones go to model.predict.
FAST_PATH_MAX_BATCH = 64
_compiled: weakref.WeakKeyDictionary[keras.Model, object] = weakref.WeakKeyDictionary()


def _forward(model: keras.Model):
    """A compiled function `inputs -> probabilities` for this model, built once and cached."""
    function = _compiled.get(model)
    if function is not None:
        return function
    if keras.backend.backend() == "jax":
        import jax

        def stateless_forward(trainable, non_trainable, inputs):
            outputs, _ = model.stateless_call(trainable, non_trainable, inputs, training=False)
            return outputs

        compiled = jax.jit(stateless_forward)

        def function(inputs):
            # The current weights go in on every call, so a model trained further
            # after the first prediction is still read correctly.
            trainable = [variable.value for variable in model.trainable_variables]
            non_trainable = [variable.value for variable in model.non_trainable_variables]
            return np.asarray(compiled(trainable, non_trainable, inputs))
    else:

        def function(inputs):
            return keras.ops.convert_to_numpy(model(inputs, training=False))

    _compiled[model] = function
    return function


def probabilities(model: keras.Model, inputs: np.ndarray) -> np.ndarray:
    """The model's ten probabilities for each input: (N, 10) float32.

    `inputs` are network inputs (float 0-1, shaped as `model.input_shape`); one
    input without its batch axis is accepted too.
    """
    inputs = np.asarray(inputs, dtype=np.float32)
    expected = tuple(model.input_shape[1:])
    if inputs.shape == expected:
        inputs = inputs[np.newaxis]
    if inputs.shape[1:] != expected:
        raise ValueError(
            f"The model takes inputs of shape (N, {', '.join(map(str, expected))}); got {inputs.shape}. "
            "Use imaging.model_inputs(pixels, model) to shape 28x28 pixels for it."
        )
    if len(inputs) == 0:
        return np.zeros((0, 10), dtype=np.float32)
    if len(inputs) > FAST_PATH_MAX_BATCH:
        return np.asarray(model.predict(inputs, verbose=0), dtype=np.float32)
    return np.asarray(_forward(model)(inputs), dtype=np.float32)


def pixel_probabilities(model: keras.Model, pixels: np.ndarray) -> np.ndarray:
    """`probabilities` for (28, 28) or (N, 28, 28) uint8 pixels (ink high, as MNIST)."""
    return probabilities(model, imaging.model_inputs(pixels, model))


def answer(probability_row: np.ndarray) -> dict:
    """The predicted digit, the top three (digit, probability) and all ten, JSON-ready."""
    row = np.asarray(probability_row, dtype=np.float64).ravel()
    order = np.argsort(-row, kind="stable")
    return {
        "digit": int(order[0]),
        "top3": [{"digit": int(digit), "probability": float(row[digit])} for digit in order[:3]],
        "probabilities": [float(value) for value in row],
    }


def predict_index(model: keras.Model, x_valid_uint8: np.ndarray, y_valid: np.ndarray, index: int) -> dict:
    """The prediction for validation image `index`: digit, true label, ten probabilities."""
    count = len(x_valid_uint8)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise errors.DigitlabError(f"The index must be a whole number from 0 to {count - 1}; got {index!r}.")
    if not 0 <= index < count:
        raise errors.DigitlabError(f"Index {index} is out of range; choose a validation image from 0 to {count - 1}.")
    pixels = np.asarray(x_valid_uint8[index])
    result = {"index": int(index), "label": int(y_valid[index])}
    result.update(answer(pixel_probabilities(model, pixels)[0]))
    result["correct"] = result["digit"] == result["label"]
    return result


def predict_validation_image(run, index: int, data_path=None) -> dict:
    """`predict_index` on the run's own validation images (its config's split of the MNIST at `data_path`)."""
    model = run.load_model()
    (_, _), (x_valid, y_valid), _ = data.split(data.load_arrays(data_path), run.config().validation)
    return predict_index(model, x_valid, y_valid, index)


def predict_files(
    model: keras.Model,
    paths,
    show_dir: str | os.PathLike | None = None,
    skip_errors: bool = False,
) -> list[dict]:
    """Reads each picture with `imaging.prepare_image` and predicts its digit.

    Each result holds `path`, `digit`, `top3`, `probabilities` and, with `show_dir`,
    `shown`: the path of a PNG of the 28x28 input the network saw, enlarged ten
    times. A bad file raises ImageError naming it; with `skip_errors` it gets a
    result with an `error` message instead and the other files go on.
    """
    paths = [Path(path) for path in paths]
    if not paths:
        raise errors.DigitlabError("No image files given; name one or more PNG, JPEG, WebP, BMP or GIF files.")
    results, used_names = [], set()
    for path in paths:
        try:
            pixels = imaging.prepare_image(path)
        except imaging.ImageError as error:
            if not skip_errors:
                # Name the file once: errors from opening it already do, those about its content not.
                message = str(error)
                raise imaging.ImageError(message if str(path) in message else f"{path}: {message}") from None
            results.append({"path": str(path), "error": str(error)})
            continue
        result = {"path": str(path)}
        result.update(answer(pixel_probabilities(model, pixels)[0]))
        if show_dir is not None:
            name = f"{path.stem}_seen.png"
            counter = 2
            while name in used_names:
                name, counter = f"{path.stem}_seen_{counter}.png", counter + 1
            used_names.add(name)
            result["shown"] = str(imaging.save_preview(pixels, Path(show_dir) / name))
        results.append(result)
    return results


def format_result(result: dict) -> str:
    """One result of `predict_index` or `predict_files` as a few lines of text."""
    if "error" in result:
        return f"{result['path']}: error: {result['error']}"
    top = ", ".join(f"{entry['digit']} {entry['probability']:.1%}" for entry in result["top3"])
    if "index" in result:
        verdict = "right" if result["correct"] else "wrong"
        head = (
            f"validation image {result['index']}: predicted {result['digit']}, true label {result['label']} ({verdict})"
        )
    else:
        head = f"{result['path']}: {result['digit']}"
    lines = [head, f"  top three: {top}"]
    lines.append(
        "  all ten:   " + "  ".join(f"{digit}:{value:.3f}" for digit, value in enumerate(result["probabilities"]))
    )
    if result.get("shown"):
        lines.append(f"  input the network saw: {result['shown']}")
    return "\n".join(lines)


def format_results(results: list[dict]) -> str:
    """Several results, one block each."""
    return "\n".join(format_result(result) for result in results)
