/* Where the browser engine's epochs go, phase by phase (issue 23's speed target), in node.
 *
 *   node scripts/wasm_profile.mjs DIR [--epochs 3] [--threads 1] [--build simd|scalar] [--engine ENGINE_DIR]
 *
 * --dump FILE writes the trained weights (float32, Keras's order) to FILE, to compare two builds' bits.
 * DIR holds MNIST as raw uint8 files: x_train.bin, y_train.bin, x_test.bin, y_test.bin (scripts/
 * profile_phases.py writes them and runs this). Trains the book's net (784-64 sigmoid-10 softmax, MSE, SGD
 * 0.01, batch 128) from fixed weights with the engine's per-phase timing (digitlab_train_epoch's profile
 * argument, as `digitlab bench --profile` reads it natively) and times, apart, what the page's Worker does
 * around each epoch: the batch order, the validation, getWeights. Prints one JSON line per epoch.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath, pathToFileURL } from "node:url";

const PHASES = ["first_forward", "above", "loss", "backward", "wait_rows", "first_update", "other_updates", "wait_updates", "setup"];
const args = process.argv.slice(2);
const dir = args[0];
const option = (name, fallback) => (args.includes(name) ? args[args.indexOf(name) + 1] : fallback);
const epochs = Number(option("--epochs", 3));
const threads = Number(option("--threads", 1));
const simd = option("--build", "simd") !== "scalar";
const here = new URL("../src/digitlab/serve/static/engine/", import.meta.url);
const base = option("--engine", null) ? pathToFileURL(option("--engine") + "/") : here;
const { loadEngine, NumpyRandomState } = await import(new URL("engine.js", base).href);
const bytes = (name) => new Uint8Array(readFileSync(`${dir}/${name}.bin`));
const engine = await loadEngine({ threads, simd, base: base.href });
engine.setNetwork({ units: [784, 64, 10], activations: ["sigmoid", "softmax"], loss: "mean_squared_error",
  optimizer: "sgd", learningRate: 0.01, batchSize: 128 });
/* Fixed, deterministic initial weights (glorot-uniform's range from a small LCG): timing only. */
let state = 12345;
const uniform = (limit) => ((state = (state * 1103515245 + 12345) % 2147483648) / 2147483648 * 2 - 1) * limit;
const layer = (a, b) => [Float32Array.from({ length: a * b }, () => uniform(Math.sqrt(6 / (a + b)))), new Float32Array(b)];
engine.setWeights([...layer(784, 64), ...layer(64, 10)]);
const trainLabels = bytes("y_train");
engine.setTrainingData(bytes("x_train"), trainLabels);
engine.setValidationData(bytes("x_test"), bytes("y_test"));
/* The engine's profile: threads x PHASES doubles in its memory, given as digitlab_train_epoch's last argument. */
const profileAt = engine._alloc(8 * PHASES.length * threads);
const train = engine.exports.digitlab_train_epoch;
engine.exports = { ...engine.exports, digitlab_train_epoch: (...a) => train(...a.slice(0, -1), profileAt) };
const orders = new NumpyRandomState(0);
console.log(JSON.stringify({ build: engine.build, threads: engine.threads }));
for (let epoch = 1; epoch <= epochs; epoch++) {
  const t0 = performance.now();
  const order = orders.permutation(trainLabels.length);
  const t1 = performance.now();
  engine._f64(profileAt, PHASES.length * threads).fill(0);
  const valid = engine.valid;
  engine.valid = null; /* trainEpoch without its validation: timed apart below. */
  engine.trainEpoch(order);
  engine.valid = valid;
  const t2 = performance.now();
  engine.evaluate();
  const t3 = performance.now();
  engine.getWeights();
  const t4 = performance.now();
  const profile = engine._f64(profileAt, PHASES.length * threads);
  const phases = {};
  PHASES.forEach((name, p) => (phases[name] = Array.from({ length: threads }, (_, t) => +profile[t * PHASES.length + p].toFixed(4))));
  console.log(JSON.stringify({ epoch, permutation: (t1 - t0) / 1000, train_epoch: (t2 - t1) / 1000,
    validation: (t3 - t2) / 1000, get_weights: (t4 - t3) / 1000, phases }));
}
const dump = option("--dump", null); /* The trained weights, float32 one after another: to compare builds' bits. */
if (dump) writeFileSync(dump, Buffer.concat(engine.getWeights().map((array) => Buffer.from(array.buffer))));
engine.dispose();
