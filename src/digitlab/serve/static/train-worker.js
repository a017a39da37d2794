// digitlab's training Worker: the heavy work of a run trained in the browser, off the page's thread.
// It loads MNIST (mnist.js: fetched once, checked, kept), the WebAssembly engine (engine/engine.js) and
// trains epoch after epoch from the run's seed: glorot-uniform initial weights from prng.js, and the batch
// orders `digitlab train --seed` draws (engine.js's NumpyRandomState), posting every epoch's logs and
// weights; between epochs it reads a stop.
//   const worker = new Worker("static/train-worker.js", { type: "module" });
//   worker.postMessage({ type: "start", config, mnist: "static/mnist/", threads: 2 });
//   worker.onmessage = ({ data }) => ...   // status | ready | epoch | end | error
//   worker.postMessage({ type: "stop" });   // after the epoch in progress
import { loadEngine, NumpyRandomState } from "./engine/engine.js";
import { loadMnist } from "./mnist.js";
import { initialWeights } from "./prng.js";

let stopping = false;
let running = false;
let engine = null;

function post(message, transfer = []) {
  self.postMessage(message, transfer);
}

function layerSizes(config) {
  return [784, ...config.units, 10];
}

function networkOf(config) {
  // Every net of the book ends in a 10-unit softmax (digitlab.models).
  return {
    units: layerSizes(config),
    activations: [...config.units.map(() => config.activation), "softmax"],
    loss: config.loss,
    optimizer: config.optimizer,
    learningRate: config.learning_rate,
    batchSize: config.batch_size,
  };
}

async function train({ config, mnist, threads }) {
  running = true;
  stopping = false;
  post({ type: "status", message: "Loading MNIST…" });
  const data = await loadMnist(mnist, (message) => post({ type: "status", message }));
  post({ type: "status", message: "Starting the engine…" });
  if (!engine) engine = await loadEngine({ threads });
  engine.setNetwork(networkOf(config));
  const pixels = 784;
  const count = Math.min(config.train_limit ?? data.arrays.y_train.length, data.arrays.y_train.length);
  engine.setTrainingData(data.arrays.x_train.subarray(0, count * pixels), data.arrays.y_train.subarray(0, count));
  engine.setValidationData(data.arrays.x_test, data.arrays.y_test);
  engine.setWeights(initialWeights(config.seed, layerSizes(config)));
  const orders = new NumpyRandomState(config.seed); // np.random.RandomState(seed), as digitlab train shuffles.
  post({
    type: "ready",
    engine: { build: engine.build, threads: engine.threads, simd: engine.simd },
    trainImages: count,
    fetched: data.fetched,
    bytes: data.bytes,
    sha256: data.sha256,
  });
  const started = performance.now();
  let epoch = 0;
  while (epoch < config.epochs && !stopping) {
    const began = performance.now();
    const logs = engine.trainEpoch(orders.permutation(count));
    epoch += 1;
    const weights = engine.getWeights();
    post(
      { type: "epoch", epoch, logs, weights, seconds: (performance.now() - began) / 1000, wallTime: (performance.now() - started) / 1000 },
      weights.map((array) => array.buffer)
    );
    await new Promise((resolve) => setTimeout(resolve, 0)); // A stop sent meanwhile is read here.
  }
  post({ type: "end", status: epoch === config.epochs ? "complete" : "interrupted", epoch, wallTime: (performance.now() - started) / 1000 });
  running = false;
}

self.onmessage = async ({ data }) => {
  if (data.type === "stop") {
    stopping = true;
    return;
  }
  if (data.type !== "start" || running) return;
  try {
    await train(data);
  } catch (error) {
    running = false;
    post({ type: "error", message: error.message || String(error) });
  }
};
