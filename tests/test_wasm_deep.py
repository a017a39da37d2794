"""The deep net's epoch (_deep.c: BatchNormalization, Dropout, Adam) in the WebAssembly engine, bit for bit
against the native portable path.

Node runs the committed .wasm builds' raw export, digitlab_train_epoch_deep (tests/wasm_deep.mjs), from the
initial arrays, batch orders and step sizes the native run used; every array (kernels, biases, gamma, beta,
the moving statistics) after every epoch, the loss sums and the right answers must be the same bits. The
Dropout masks are the engine's own hash, so Dropout 0.2 is in the comparison too. The threads build runs it
on two Web Workers sharing each batch, to the same bits.

Then the same through engine.js (tests/wasm_equivalence.mjs), as the page's training Worker drives it: a page
run's initial arrays and Dropout seed (digitlab.browser.prng), two epochs, every array equal to the native
portable path's after each, validation and predictions with the moving statistics (digitlab_infer_deep).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path

import keras
import numpy as np
import pytest

from digitlab import config, data, engine, models
from digitlab.browser import prng
from digitlab.engine import deep, sparse, spec
from test_wasm import DRIVER as EQUIVALENCE
from test_wasm import ENGINE_DIR, NODE, mnist_bytes, need_node

DRIVER = Path(__file__).with_name("wasm_deep.mjs")
SEED, EPOCHS, TRAIN = 5, 2, 700


@contextlib.contextmanager
def portable_path():
    """The native engine on its portable C path (DIGITLAB_KERNEL_SCALAR=1) inside the block."""
    previous = os.environ.get(sparse.SCALAR_VARIABLE)
    os.environ[sparse.SCALAR_VARIABLE] = "1"
    sparse.reload()
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(sparse.SCALAR_VARIABLE, None)
        else:
            os.environ[sparse.SCALAR_VARIABLE] = previous
        sparse.reload()


def assert_same_bits(path: Path, native: np.ndarray, epoch: int) -> None:
    """The float32 arrays the driver wrote to `path` are `native`'s bits, every one."""
    browser = np.fromfile(path, np.float32)
    assert browser.shape == native.shape
    differing = int(np.count_nonzero(browser.view(np.uint32) != native.view(np.uint32)))
    assert differing == 0, f"epoch {epoch + 1}: {differing} of {browser.size} values differ from the native path"


def native_run():
    """The deep net's epochs on the native portable path: the inputs the driver needs, and each epoch's arrays."""
    (x_train, y_train), _, _ = data.split(data.load_arrays(), train_limit=TRAIN)
    x, y = data.to_inputs(x_train), data.to_targets(y_train)
    cfg = config.TrainConfig(model="deep").resolved()
    keras.utils.set_random_seed(SEED)
    with portable_path():
        fast = engine.FastEngine([models.create_model(cfg)], cfg, backend="numpy")
        names = spec.weight_names(fast.network)
        start = fast.get_state()
        initial = np.concatenate([start[name][0].ravel() for name in names])
        plan = deep.DeepPlan(fast.network, start, 0)
        batches = -(-len(x) // cfg.batch_size)
        sizes = np.concatenate([plan.step_sizes(epoch * batches, batches) for epoch in range(EPOCHS)])
        rng = np.random.RandomState(SEED)
        epochs, logs = [], []

        def keep(epoch, epoch_logs):
            state = fast.get_state()
            epochs.append(np.concatenate([state[name][0].ravel() for name in names]))
            logs.append(epoch_logs[0])

        fast.fit(x, y, None, epochs=EPOCHS, rngs=[rng], on_epoch_end=keep)
        assert fast.path.startswith("whole epochs in C, sparse first layer (portable C"), fast.path
    generator = np.random.RandomState(SEED)
    orders = np.stack([generator.permutation(len(x)) for _ in range(EPOCHS)]).astype(np.int32)
    network = fast.network
    inputs = dict(
        units=[784, *cfg.units, 10],
        activations=[layer.activation for layer in network.dense],
        loss=network.loss,
        lossCode=sparse.FUSED_LOSSES[network.loss],
        dropout=plan.dropout.tolist(),
        norm=plan.norm.ravel().tolist(),
        normed=[layer.norm is not None for layer in network.dense],
        hyper=plan.hyper.tolist(),
        optimizer=deep.OPTIMIZERS[network.optimizer.name],
        clip=spec.CROSSENTROPY_CLIP,
        batchSize=cfg.batch_size,
        seed=plan.seed,
        step=0,
        epochs=EPOCHS,
    )
    return (x_train, y_train), inputs, initial, orders, sizes, epochs, logs


@pytest.mark.parametrize(
    ("simd", "threads"), [(True, 1), (False, 1), (True, 2)], ids=["simd128", "scalar", "simd128-2-threads"]
)
def test_node_trains_the_deep_net_to_the_native_bits(tmp_path, simd, threads):
    need_node()
    (x_train, y_train), inputs, initial, orders, sizes, epochs, logs = native_run()
    assert inputs["dropout"][-1] == pytest.approx(0.2) and sum(inputs["normed"]) == 3
    (tmp_path / "deep.json").write_text(json.dumps({**inputs, "simd": simd, "threads": threads}))
    (tmp_path / "train_pixels.bin").write_bytes(np.ascontiguousarray(x_train, np.uint8).tobytes())
    (tmp_path / "train_labels.bin").write_bytes(np.ascontiguousarray(y_train, np.uint8).tobytes())
    (tmp_path / "arrays.bin").write_bytes(initial.astype(np.float32).tobytes())
    (tmp_path / "orders.bin").write_bytes(orders.tobytes())
    (tmp_path / "step_sizes.bin").write_bytes(sizes.astype(np.float32).tobytes())
    subprocess.run([NODE, str(DRIVER), str(tmp_path), str(ENGINE_DIR)], check=True, timeout=600)
    result = json.loads((tmp_path / "results.json").read_text())
    assert (result["build"], result["threads"]) == (
        ("engine-threads.wasm" if threads > 1 else "engine.wasm" if simd else "engine-scalar.wasm"),
        threads,
    )
    for epoch in range(EPOCHS):
        assert_same_bits(tmp_path / f"arrays_{epoch}.bin", epochs[epoch], epoch)
        assert result["losses"][epoch] / TRAIN == logs[epoch]["loss"]
        assert result["correct"][epoch] / TRAIN == logs[epoch]["accuracy"]
    assert np.abs(epochs[-1] - initial).max() > 1e-3  # The arrays moved.


PAGE_SEED, PAGE_TRAIN, PAGE_VALID = 3, 700, 500
NORMED = [True, True, True, False]


def native_page_run():
    """The deep net as a page run starts it (prng.page_arrays, prng.dropout_seed), trained on the native portable
    path with validation: (the config, its initial arrays, each epoch's arrays and logs, the last predictions)."""
    (x_train, y_train), (x_valid, y_valid) = mnist_bytes(PAGE_TRAIN, PAGE_VALID)
    x, y = data.to_inputs(x_train), data.to_targets(y_train)
    validation = (data.to_inputs(x_valid), data.to_targets(y_valid))
    cfg = config.TrainConfig(model="deep", seed=PAGE_SEED).resolved()
    network = models.create_seeded_models(cfg)[0]
    initial = prng.page_arrays(PAGE_SEED, [784, *cfg.units, 10], NORMED)
    network.set_weights(initial)
    with portable_path():
        fast = engine.FastEngine([network], cfg, backend="numpy")
        state = fast.get_state()
        state["dropout_seeds"] = np.array([prng.dropout_seed(PAGE_SEED)], np.uint32)
        fast.set_state(state)
        names = spec.weight_names(fast.network)
        epochs, logs = [], []

        def keep(epoch, epoch_logs):
            trained = fast.get_state()
            epochs.append(np.concatenate([trained[name][0].ravel() for name in names]))
            logs.append(epoch_logs[0])

        fast.fit(x, y, validation, epochs=EPOCHS, rngs=[np.random.RandomState(PAGE_SEED)], on_epoch_end=keep)
        assert fast.path.startswith("whole epochs in C, sparse first layer (portable C"), fast.path
        fast.sync_to_models()
        outputs = np.asarray(network.predict(validation[0][:100], verbose=0))
    return cfg, initial, epochs, logs, outputs


@pytest.mark.parametrize(("simd", "threads"), [(True, 1), (False, 1), (True, 2)], ids=["simd128", "scalar", "threads"])
def test_engine_js_trains_the_deep_net_as_a_page_run_to_the_native_bits(tmp_path, simd, threads):
    """engine.js's setNetwork with BatchNormalization, Dropout and Adam (engine-deep.js), as the training Worker
    calls it, from a page run's initial arrays and Dropout seed: every array after each epoch is the native
    portable path's, the training logs too; validation and predictions use the moving statistics."""
    need_node()
    cfg, initial, epochs, logs, outputs = native_page_run()
    (x_train, y_train), (x_valid, y_valid) = mnist_bytes(PAGE_TRAIN, PAGE_VALID)
    units = [784, *cfg.units, 10]
    net = dict(
        units=units,
        activations=[cfg.activation] * len(cfg.units) + ["softmax"],
        norm=[{"momentum": 0.99, "epsilon": 1e-3} if normed else None for normed in NORMED],
        dropout=[0.0] * len(cfg.units) + [cfg.dropout[0]],
        loss=cfg.loss,
        optimizer=cfg.optimizer,
        learningRate=cfg.learning_rate,
        dropoutSeed=prng.dropout_seed(PAGE_SEED),
        batchSize=cfg.batch_size,
    )
    inputs = dict(net=net, threads=threads, epochs=EPOCHS, simd=simd, seed=PAGE_SEED, sizes=[a.size for a in initial])
    (tmp_path / "inputs.json").write_text(json.dumps(inputs))
    for name, array in [("train_pixels", x_train), ("train_labels", y_train), ("valid_pixels", x_valid)]:
        (tmp_path / f"{name}.bin").write_bytes(np.ascontiguousarray(array, np.uint8).tobytes())
    (tmp_path / "valid_labels.bin").write_bytes(np.ascontiguousarray(y_valid, np.uint8).tobytes())
    (tmp_path / "initial.bin").write_bytes(np.concatenate([a.ravel() for a in initial]).astype(np.float32).tobytes())
    subprocess.run([NODE, str(EQUIVALENCE), str(tmp_path), str(ENGINE_DIR)], check=True, timeout=600)
    result = json.loads((tmp_path / "results.json").read_text())
    # The threaded build (a cross-origin isolated page) trains the deep net on one of its threads.
    assert result["build"] == (
        "engine-threads.wasm" if threads > 1 else "engine.wasm" if simd else "engine-scalar.wasm"
    )
    for epoch in range(EPOCHS):
        assert_same_bits(tmp_path / f"weights_{epoch}.bin", epochs[epoch], epoch)
        given = result["epochs"][epoch]["logs"]
        assert (given["loss"], given["accuracy"]) == (logs[epoch]["loss"], logs[epoch]["accuracy"])
        # Validation: _deep.c's digitlab_infer_deep against NumPy's (norm.evaluate, BLAS): the same formulas,
        # other summation orders, so within float32 rounding rather than bit for bit.
        assert given["val_loss"] == pytest.approx(logs[epoch]["val_loss"], rel=1e-5)
        assert abs(given["val_accuracy"] - logs[epoch]["val_accuracy"]) <= 1 / PAGE_VALID
    assert np.abs(epochs[-1] - np.concatenate([a.ravel() for a in initial])).max() > 1e-3
    predicted = np.array(result["outputs"], np.float32).reshape(outputs.shape)
    np.testing.assert_allclose(predicted, outputs, rtol=1e-4, atol=1e-6)
    assert result["floatOutputs"] == result["outputs"]
