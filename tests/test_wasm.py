"""The browser's engine (WebAssembly, src/digitlab/serve/static/engine/) against the native engine, bit for bit.

From the same initial weights and the same seed, the native engine's portable C path (what `digitlab
train` runs with DIGITLAB_KERNEL_SCALAR=1, through engine.FastEngine, its batch orders drawn by
np.random.RandomState(seed)) and the WebAssembly engine (node, tests/wasm_equivalence.mjs, and headless
Chromium, its orders drawn by engine.js's NumpyRandomState) must hold the same weights after every epoch:
every float's bits. The logs must match too. The committed .wasm files must be what `make wasm` builds
from the C sources now (a reproducible build).
"""

from __future__ import annotations

import base64
import filecmp
import functools
import http.server
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from digitlab import config, data, engine, models
from digitlab.engine import sparse

ROOT = Path(__file__).resolve().parents[1]
ENGINE_DIR = ROOT / "src/digitlab/serve/static/engine"
DRIVER = Path(__file__).with_name("wasm_equivalence.mjs")
NODE = shutil.which("node")
SEED = 11
EPOCHS = 5
FAST_TRAIN, FAST_VALID = 3000, 1000
ACTIVATION_NAMES = {"shallow": ["sigmoid", "softmax"], "intermediate": ["relu", "relu", "softmax"]}


def need_node():
    if NODE is None:
        pytest.fail("node (18 or later) runs the WebAssembly engine here: apt-get install nodejs (make test does).")


@functools.cache
def mnist_bytes(train: int | None, valid: int | None):
    """MNIST's uint8 training and validation images (test images, as the book validates) and labels."""
    (x_train, y_train), (x_valid, y_valid), _ = data.split(data.load_arrays(), train_limit=train)
    return (x_train, y_train), (x_valid[:valid], y_valid[:valid])


@functools.cache
def native_run(model_name: str, train: int | None, valid: int | None):
    """Trains on the native portable C path: (initial weights, per-epoch weights, logs and seconds, the config)."""
    (x_train, y_train), (x_valid, y_valid) = mnist_bytes(train, valid)
    x, y = data.to_inputs(x_train), data.to_targets(y_train)
    validation = (data.to_inputs(x_valid), data.to_targets(y_valid))
    cfg = config.TrainConfig(model=model_name).resolved()
    keras.utils.set_random_seed(SEED)
    model = models.create_model(cfg)
    initial = model.get_weights()
    weights, logs, seconds = [], [], []
    previous = os.environ.get(sparse.SCALAR_VARIABLE)
    os.environ[sparse.SCALAR_VARIABLE] = "1"
    sparse.reload()
    try:
        fast = engine.FastEngine([model], cfg, backend="numpy")
        marks = [time.perf_counter()]

        def keep(epoch, epoch_logs):
            marks.append(time.perf_counter())
            fast.sync_to_models()
            weights.append([np.array(array) for array in model.get_weights()])
            logs.append(epoch_logs[0])
            marks.append(time.perf_counter())

        # Each epoch's order is RandomState(SEED).permutation(n), drawn in turn, as `digitlab train --seed` draws it.
        fast.fit(x, y, validation, epochs=EPOCHS, rngs=[np.random.RandomState(SEED)], on_epoch_end=keep)
        path = fast.path
        seconds = [marks[2 * e + 1] - marks[2 * e] for e in range(EPOCHS)]
    finally:
        if previous is None:
            os.environ.pop(sparse.SCALAR_VARIABLE, None)
        else:
            os.environ[sparse.SCALAR_VARIABLE] = previous
        sparse.reload()
    assert path.startswith("whole epochs in C, sparse first layer (portable C"), path
    return initial, weights, logs, seconds, cfg


def write_inputs(folder: Path, model_name: str, train, valid, threads: int, simd: bool = True) -> None:
    """The files tests/wasm_equivalence.mjs reads (its docstring lists them)."""
    (x_train, y_train), (x_valid, y_valid) = mnist_bytes(train, valid)
    initial, _, _, _, cfg = native_run(model_name, train, valid)
    units = [784, *cfg.units, 10]
    net = dict(
        units=units,
        activations=ACTIVATION_NAMES[model_name],
        loss=cfg.loss,
        optimizer=cfg.optimizer,
        learningRate=cfg.learning_rate,
        batchSize=cfg.batch_size,
    )
    inputs = dict(net=net, threads=threads, epochs=EPOCHS, simd=simd, seed=SEED)
    (folder / "inputs.json").write_text(json.dumps(inputs))
    (folder / "train_pixels.bin").write_bytes(np.ascontiguousarray(x_train, np.uint8).tobytes())
    (folder / "train_labels.bin").write_bytes(np.ascontiguousarray(y_train, np.uint8).tobytes())
    (folder / "valid_pixels.bin").write_bytes(np.ascontiguousarray(x_valid, np.uint8).tobytes())
    (folder / "valid_labels.bin").write_bytes(np.ascontiguousarray(y_valid, np.uint8).tobytes())
    (folder / "initial.bin").write_bytes(np.concatenate([w.ravel() for w in initial]).astype(np.float32).tobytes())


def compare(model_name, train, valid, result: dict, epoch_weights: list[np.ndarray]) -> None:
    """Every weight's bits after every epoch, and every log, against the native portable path."""
    _, weights, logs, _, _ = native_run(model_name, train, valid)
    assert len(epoch_weights) == EPOCHS
    for epoch in range(EPOCHS):
        native = np.concatenate([w.ravel() for w in weights[epoch]]).view(np.uint32)
        browser = epoch_weights[epoch].view(np.uint32)
        assert browser.shape == native.shape
        differing = int(np.count_nonzero(native != browser))
        assert differing == 0, f"epoch {epoch + 1}: {differing} of {native.size} weights differ from the native path"
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert result["epochs"][epoch]["logs"][key] == logs[epoch][key], (epoch, key)
    # The weights moved: the comparison is not between two untrained nets.
    initial = np.concatenate([w.ravel() for w in native_run(model_name, train, valid)[0]])
    assert np.abs(epoch_weights[-1] - initial).max() > 1e-3
    # predict: the trained net's outputs, as NumPy computes them from the same weights.
    (_, _), (x_valid, _) = mnist_bytes(train, valid)
    values = data.to_inputs(x_valid[:100])
    for layer, activation in enumerate(ACTIVATION_NAMES[model_name]):
        values = values @ weights[-1][2 * layer] + weights[-1][2 * layer + 1]
        if activation == "sigmoid":
            values = 1 / (1 + np.exp(-values))
        elif activation == "relu":
            values = np.maximum(values, 0)
        else:
            values = np.exp(values - values.max(axis=1, keepdims=True))
            values /= values.sum(axis=1, keepdims=True)
    outputs = np.array(result["outputs"], np.float32).reshape(values.shape)
    np.testing.assert_allclose(outputs, values, rtol=1e-4, atol=1e-6)
    assert result["floatOutputs"] == result["outputs"]  # Float inputs pixel / 255: the same answer.


def run_node(tmp_path, model_name, train, valid, threads, simd=True):
    need_node()
    write_inputs(tmp_path, model_name, train, valid, threads, simd)
    subprocess.run([NODE, str(DRIVER), str(tmp_path), str(ENGINE_DIR)], check=True, timeout=900)
    result = json.loads((tmp_path / "results.json").read_text())
    weights = [np.fromfile(tmp_path / f"weights_{epoch}.bin", np.float32) for epoch in range(EPOCHS)]
    return result, weights


@pytest.mark.parametrize(
    ("model_name", "threads", "simd"),
    [("shallow", 1, True), ("shallow", 2, True), ("shallow", 1, False), ("intermediate", 2, True)],
)
def test_node_trains_the_same_bits_as_the_native_portable_path(tmp_path, model_name, threads, simd):
    result, weights = run_node(tmp_path, model_name, FAST_TRAIN, FAST_VALID, threads, simd)
    assert result["threads"] == threads
    build = "engine-threads.wasm" if threads > 1 else "engine.wasm" if simd else "engine-scalar.wasm"
    assert result["build"] == build
    compare(model_name, FAST_TRAIN, FAST_VALID, result, weights)


@pytest.mark.heavy
def test_node_trains_the_book_net_on_all_of_mnist_to_the_same_bits(tmp_path):
    result, weights = run_node(tmp_path, "shallow", None, None, 2)
    compare("shallow", None, None, result, weights)
    native_seconds = native_run("shallow", None, None)[3]
    node_seconds = [entry["seconds"] for entry in result["epochs"]]
    print("epoch seconds, native portable:", native_seconds, "node (2 threads):", node_seconds)


class _IsolatedHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with the headers that make a page cross-origin isolated (SharedArrayBuffer, threads)."""

    isolate = True

    def end_headers(self):
        if self.isolate:
            self.send_header("Cross-Origin-Opener-Policy", "same-origin")
            self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, *args):
        pass


PAGE = """<!doctype html><meta charset="utf-8"><title>engine</title><script type="module">
window.train = () => new Promise((resolve) => {
  const worker = new Worker("wasm_equivalence.mjs", { type: "module" });
  worker.onmessage = (event) => {
    const result = event.data;
    if (result.error) return resolve(result);
    for (const entry of result.epochs) {
      const bytes = new Uint8Array(entry.weights);
      let text = "";
      for (let i = 0; i < bytes.length; i += 8192) text += String.fromCharCode(...bytes.subarray(i, i + 8192));
      entry.weights = btoa(text);
    }
    result.isolated = crossOriginIsolated;
    resolve(result);
  };
  worker.postMessage({ base: location.href, engine: "engine/" });
});
</script>"""


@pytest.mark.browser
@pytest.mark.parametrize(
    ("model_name", "threads", "isolated", "train", "valid"),
    [
        ("shallow", 1, False, FAST_TRAIN, FAST_VALID),
        ("shallow", 2, True, FAST_TRAIN, FAST_VALID),
        # Two threads asked for on a page that is not cross-origin isolated: one thread, the same bits.
        ("shallow", 2, False, FAST_TRAIN, FAST_VALID),
        ("intermediate", 2, True, FAST_TRAIN, FAST_VALID),
        pytest.param("shallow", 1, False, None, None, marks=pytest.mark.heavy, id="all-of-mnist-1"),
        pytest.param("shallow", 2, True, None, None, marks=pytest.mark.heavy, id="all-of-mnist-2"),
    ],
)
def test_chromium_trains_the_same_bits_as_the_native_portable_path(
    tmp_path, chromium, model_name, threads, isolated, train, valid
):
    write_inputs(tmp_path, model_name, train, valid, threads)
    shutil.copytree(ENGINE_DIR, tmp_path / "engine")
    shutil.copy(DRIVER, tmp_path / DRIVER.name)
    (tmp_path / "index.html").write_text(PAGE)
    handler = type("Handler", (_IsolatedHandler,), {"isolate": isolated})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        context = chromium.new_context()
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{server.server_address[1]}/index.html")
        result = page.evaluate("() => window.train()")
        context.close()
    finally:
        server.shutdown()
    assert "error" not in result, result.get("error")
    assert result["isolated"] is isolated
    assert result["threads"] == (threads if isolated else 1)
    assert result["build"] == ("engine-threads.wasm" if isolated and threads > 1 else "engine.wasm")
    weights = [np.frombuffer(base64.b64decode(entry["weights"]), np.float32) for entry in result["epochs"]]
    compare(model_name, train, valid, result, weights)
    print("Chromium epoch seconds:", [entry["seconds"] for entry in result["epochs"]])


@pytest.mark.heavy
def test_the_committed_engine_is_what_make_wasm_builds(tmp_path):
    """A reproducible build: the .wasm files in the package are the C sources' build, byte for byte."""
    built = tmp_path / "engine"
    shutil.copytree(ENGINE_DIR, built)
    make = subprocess.run(["make", "-C", str(ROOT), "wasm", f"WASM_OUT={built}"], capture_output=True, text=True)
    assert make.returncode == 0, f"make wasm failed:\n{make.stdout}\n{make.stderr}"
    for name in ("engine.wasm", "engine-threads.wasm", "engine-scalar.wasm"):
        assert filecmp.cmp(built / name, ENGINE_DIR / name, shallow=False), (
            f"{name} is not what the C sources build now: run `make wasm` and commit "
            f"src/digitlab/serve/static/engine/{name}."
        )


BAD_SETTINGS = """
import { loadEngine } from "ENGINE/engine.js";
const engine = await loadEngine();
const net = { units: [784, 64, 10], activations: ["sigmoid", "softmax"], loss: "mean_squared_error",
              optimizer: "sgd", learningRate: 0.01, batchSize: 128 };
const said = {};
const attempt = (name, action) => {
  try { action(); said[name] = null; } catch (error) { said[name] = error.message; }
};
attempt("no network", () => engine.trainEpoch(new Int32Array([0])));
attempt("adam", () => engine.setNetwork({ ...net, optimizer: "adam" }));
attempt("rate", () => engine.setNetwork({ ...net, learningRate: 0 }));
attempt("batch", () => engine.setNetwork({ ...net, batchSize: 1.5 }));
attempt("activation", () => engine.setNetwork({ ...net, activations: ["swish", "softmax"] }));
attempt("softmax inside", () => engine.setNetwork({ ...net, activations: ["softmax", "softmax"] }));
const sigmoidOut = { ...net, loss: "categorical_crossentropy", activations: ["relu", "sigmoid"] };
attempt("cross-entropy", () => engine.setNetwork(sigmoidOut));
engine.setNetwork(net);
attempt("weights", () => engine.setWeights([new Float32Array(3)]));
attempt("pixels", () => engine.setTrainingData(new Uint8Array(785), new Uint8Array(1)));
attempt("labels", () => engine.setTrainingData(new Uint8Array(784 * 2), new Uint8Array(3)));
attempt("label 10", () => engine.setTrainingData(new Uint8Array(784), new Uint8Array([10])));
attempt("no data", () => engine.trainEpoch(new Int32Array([0])));
engine.setTrainingData(new Uint8Array(784 * 2), new Uint8Array([1, 2]));
attempt("order", () => engine.trainEpoch(new Int32Array([0, 2])));
attempt("order type", () => engine.trainEpoch([0, 1]));
try { await loadEngine({ threads: 0 }); said.threads = null; } catch (error) { said.threads = error.message; }
console.log(JSON.stringify(said));
"""


def test_the_engine_says_what_was_wrong_with_a_bad_setting():
    need_node()
    script = BAD_SETTINGS.replace("ENGINE", ENGINE_DIR.as_uri())
    answer = subprocess.run(
        [NODE, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=120, check=True
    )
    said = json.loads(answer.stdout)
    expected = {
        "no network": "Call setNetwork first.",
        "adam": "plain SGD only, got optimizer adam",
        "rate": "learningRate must be a number above 0, got 0",
        "batch": "batchSize must be a whole number >= 1, got 1.5",
        "activation": "Unknown activation swish",
        "softmax inside": "softmax is for the last layer only",
        "cross-entropy": "categorical_crossentropy needs a softmax last layer",
        "weights": "Give 4 arrays (each layer's kernel, then bias), got 1",
        "pixels": "pixels must be a Uint8Array (or Float32Array) of whole images of 784 pixels",
        "labels": "The training data: 2 images but 3 labels",
        "label 10": "a label is outside 0 ... 9",
        "no data": "Call setTrainingData first.",
        "order": "order names image 2, outside 0 ... 1",
        "order type": "order must be an Int32Array",
        "threads": "threads must be a whole number from 1 to 64, got 0",
    }
    for case, words in expected.items():
        assert said[case] is not None and words in said[case], (case, said[case])


SPEED_CHECK = """
import { SpeedCheck } from "ENGINE/engine.js";
const cases = JSON.parse(process.argv[1]);
const chosen = cases.map((times) => {
  const check = new SpeedCheck(), picks = [];
  for (const epoch of times) {
    const threads = check.allowed(2);
    picks.push(threads);
    check.record(threads, epoch[String(threads)]);
  }
  return picks;
});
console.log(JSON.stringify(chosen));
"""


def test_the_page_chooses_its_threads_as_the_native_engine_does():
    """engine.js's SpeedCheck and engine/cores.py's, fed the same epoch times (quiet, a spike, spikes every
    few epochs, a core slow for a while, one slow for good, random ones), choose the same thread count epoch
    after epoch."""
    need_node()
    from digitlab.engine import cores

    rng = np.random.default_rng(0)
    quiet = [{"1": 0.070, "2": 0.045}] * 30
    cases = [
        quiet,
        quiet[:9] + [{"1": 0.070, "2": 0.120}] + quiet[:20],
        [{"1": 0.070, "2": 0.120} if epoch % 5 == 4 else quiet[0] for epoch in range(40)],
        quiet[:9] + [{"1": 0.070, "2": 0.200}] * 21 + quiet[:30],
        quiet[:5] + [{"1": 0.150, "2": 0.300}] * 200,
        quiet[:9] + [{"1": 0.070, "2": 0.065}] * 80,
        [{"1": float(one), "2": float(two)} for one, two in rng.uniform(0.03, 0.3, (300, 2))],
    ]
    expected = []
    for times in cases:
        check, picks = cores.SpeedCheck(), []
        for epoch in times:
            threads = check.allowed(2)
            picks.append(threads)
            check.record(threads, epoch[str(threads)])
        expected.append(picks)
    script = SPEED_CHECK.replace("ENGINE", ENGINE_DIR.as_uri())
    answer = subprocess.run(
        [NODE, "--input-type=module", "-e", script, json.dumps(cases)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(answer.stdout) == expected
    assert 1 in expected[3] and 2 in expected[5] and 1 in expected[5]


PERMUTATIONS = """
import { NumpyRandomState } from "ENGINE/engine.js";
const draws = [];
for (const [seed, n] of [[0, 60000], [7, 1000], [4294967295, 5], [11, 1], [12, 0]]) {
  const generator = new NumpyRandomState(seed);
  draws.push([seed, n, [0, 1, 2].map(() => Array.from(generator.permutation(n)))]);
}
console.log(JSON.stringify(draws));
"""


def test_the_browser_draws_the_batch_orders_numpy_draws():
    """`digitlab train --seed S` shuffles with np.random.RandomState(S): the browser draws the same orders."""
    need_node()
    script = PERMUTATIONS.replace("ENGINE", ENGINE_DIR.as_uri())
    answer = subprocess.run(
        [NODE, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=120, check=True
    )
    for seed, n, draws in json.loads(answer.stdout):
        generator = np.random.RandomState(seed)
        for draw in draws:
            np.testing.assert_array_equal(np.array(draw, dtype=np.int64).reshape(-1), generator.permutation(n))


ALLOCATOR = """
import { loadEngine } from "ENGINE/engine.js";
const engine = await loadEngine();
const e = engine.exports;
let seed = 12345;
const random = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
const live = new Map();
let misaligned = 0, overwritten = 0;
for (let step = 0; step < 2000; step++) {
  if (live.size < 50 && random() < 0.6) {
    const size = 1 + Math.floor(random() ** 3 * 2.5e5);
    const at = e.digitlab_malloc(size);
    misaligned += at % 16 !== 0;
    new Uint8Array(engine.memory.buffer, at, size).fill(step & 255);
    live.set(at, [size, step & 255]);
  } else if (live.size) {
    const keys = [...live.keys()];
    const at = keys[Math.floor(random() * keys.length)];
    const [size, mark] = live.get(at);
    overwritten += new Uint8Array(engine.memory.buffer, at, size).some((byte) => byte !== mark);
    e.digitlab_free(at);
    live.delete(at);
  }
}
for (const at of live.keys()) e.digitlab_free(at);
const grown = engine.memory.buffer.byteLength;
const whole = e.digitlab_malloc(grown / 2);
engine.setNetwork({ units: [784, 10], activations: ["softmax"], loss: "mean_squared_error", learningRate: 0.1,
                    batchSize: 8 });
const image = new Uint8Array(784).fill(200);
const first = engine.predict(image).join();
let same = true;
for (let k = 0; k < 1000; k++) same = same && engine.predict(image).join() === first;
console.log(JSON.stringify({ misaligned, overwritten, grown, whole, after: engine.memory.buffer.byteLength, same,
                             afterPredictions: engine.memory.buffer.byteLength }));
"""


def test_the_engine_memory_holds_blocks_apart_and_joins_freed_ones():
    """_wasm.c's malloc: 2,000 random allocations and frees (up to 250 KB, 50 live at once) never overlap and
    stay 16-byte aligned; once all are freed, half the memory is one block again; 1,000 predictions (the
    drawing pad's) leave the memory as it was."""
    need_node()
    script = ALLOCATOR.replace("ENGINE", ENGINE_DIR.as_uri())
    answer = subprocess.run(
        [NODE, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=120, check=True
    )
    said = json.loads(answer.stdout)
    assert said["misaligned"] == 0 and said["overwritten"] == 0
    assert said["whole"] != 0 and said["after"] == said["grown"]
    assert said["same"] and said["afterPredictions"] == said["grown"]
