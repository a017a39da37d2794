"""The deep net's epoch (_deep.c: BatchNormalization, Dropout, Adam) in the WebAssembly engine, bit for bit
against the native portable path.

Node runs the committed .wasm builds' raw export, digitlab_train_epoch_deep (tests/wasm_deep.mjs), from the
initial arrays, batch orders and step sizes the native run used; every array (kernels, biases, gamma, beta,
the moving statistics) after every epoch, the loss sums and the right answers must be the same bits. The
Dropout masks are the engine's own hash, so Dropout 0.2 is in the comparison too. The threads build runs it
on two Web Workers sharing each batch, to the same bits.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import keras
import numpy as np
import pytest

from digitlab import config, data, engine, models
from digitlab.engine import deep, sparse, spec
from test_wasm import ENGINE_DIR, NODE, need_node

DRIVER = Path(__file__).with_name("wasm_deep.mjs")
SEED, EPOCHS, TRAIN = 5, 2, 700


def native_run():
    """The deep net's epochs on the native portable path: the inputs the driver needs, and each epoch's arrays."""
    (x_train, y_train), _, _ = data.split(data.load_arrays(), train_limit=TRAIN)
    x, y = data.to_inputs(x_train), data.to_targets(y_train)
    cfg = config.TrainConfig(model="deep").resolved()
    keras.utils.set_random_seed(SEED)
    previous = os.environ.get(sparse.SCALAR_VARIABLE)
    os.environ[sparse.SCALAR_VARIABLE] = "1"
    sparse.reload()
    try:
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
    finally:
        if previous is None:
            os.environ.pop(sparse.SCALAR_VARIABLE, None)
        else:
            os.environ[sparse.SCALAR_VARIABLE] = previous
        sparse.reload()
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
        browser = np.fromfile(tmp_path / f"arrays_{epoch}.bin", np.float32)
        assert browser.shape == epochs[epoch].shape
        differing = int(np.count_nonzero(browser.view(np.uint32) != epochs[epoch].view(np.uint32)))
        assert differing == 0, f"epoch {epoch + 1}: {differing} of {browser.size} values differ from the native path"
        assert result["losses"][epoch] / TRAIN == logs[epoch]["loss"]
        assert result["correct"][epoch] / TRAIN == logs[epoch]["accuracy"]
    assert np.abs(epochs[-1] - initial).max() > 1e-3  # The arrays moved.
