// digitlab's training Worker: the heavy work of a run trained in the browser, off the page's thread.
// It loads MNIST (mnist.js: fetched once, checked, kept), the WebAssembly engine (engine/engine.js) and
// trains epoch after epoch from the run's seed: glorot-uniform initial weights from prng.js, and the batch
// orders `digitlab train --seed` draws (engine.js's NumpyRandomState), posting every epoch's logs and
// weights; between epochs it reads a stop. At the end it posts the network's evaluation on the validation
// images: the confusion matrix and the `gallery` most confident mistakes, as GET api/runs/NAME/evaluation
// answers them for the server's runs (evaluation.confusion_matrix and confident_mistakes).
//   const worker = new Worker("static/train-worker.js", { type: "module" });
//   worker.postMessage({ type: "start", config, mnist: "static/mnist/", threads: 2, gallery: 24,
//                        engineSettings });   // page.json's engine_settings (the deep net's BatchNormalization, Adam)
//   worker.onmessage = ({ data }) => ...   // status | ready | epoch | end | evaluation | error
//   worker.postMessage({ type: "stop" });   // after the epoch in progress
import { arrayNames } from "./engine/engine-deep.js";
import { loadEngine, NumpyRandomState } from "./engine/engine.js";
import { loadMnist } from "./mnist.js";
import { dropoutSeed, pageArrays } from "./prng.js";

let stopping = false;
let running = false;
let engine = null;

function post(message, transfer = []) {
  self.postMessage(message, transfer);
}

function layerSizes(config) {
  return [784, ...config.units, 10];
}

// Which layers a BatchNormalization follows: every hidden one where config.batch_norm (digitlab.models).
function normedLayers(config) {
  return [...config.units.map(() => !!config.batch_norm), false];
}

function networkOf(config, engineSettings) {
  // Every net of the book ends in a 10-unit softmax (digitlab.models).
  const network = {
    units: layerSizes(config),
    activations: [...config.units.map(() => config.activation), "softmax"],
    loss: config.loss,
    optimizer: config.optimizer,
    learningRate: config.learning_rate,
    batchSize: config.batch_size,
  };
  if (!config.batch_norm) return network;
  // The deep net (engine-deep.js): Keras's BatchNormalization and Adam settings (page.json's engine_settings,
  // from digitlab.engine.spec), the Dropout (models.py stacks config.dropout before the last Dense layer; the
  // engine takes one rate a layer) and the Dropout seed a native run of this seed takes (prng.py).
  const rates = config.dropout || [];
  if (rates.length > 1) throw new Error("The page trains nets with at most one Dropout; train this one with `digitlab train`.");
  const { batch_norm: norm, adam } = engineSettings;
  return {
    ...network,
    norm: normedLayers(config).map((normed) => (normed ? { momentum: norm.momentum, epsilon: norm.epsilon } : null)),
    dropout: [...config.units.map(() => 0), rates[0] || 0],
    beta1: adam.beta_1,
    beta2: adam.beta_2,
    epsilon: adam.epsilon,
    dropoutSeed: dropoutSeed(config.seed),
  };
}

// The network's answers on the validation images: accuracy, the 10x10 confusion matrix (row: the true
// digit) and the `gallery` mistakes made with the highest probability (ties in image order); null when
// its outputs are not numbers (a diverged run).
function evaluation(pixels, labels, epoch, gallery) {
  const outputs = engine.predict(pixels);
  const matrix = Array.from({ length: 10 }, () => new Array(10).fill(0));
  const wrong = [];
  for (let image = 0; image < labels.length; image++) {
    const row = outputs.subarray(image * 10, image * 10 + 10);
    if (!row.every(Number.isFinite)) return null;
    let said = 0;
    for (let digit = 1; digit < 10; digit++) if (row[digit] > row[said]) said = digit;
    matrix[labels[image]][said] += 1;
    if (said !== labels[image]) wrong.push({ index: image, true: labels[image], predicted: said, probability: row[said] });
  }
  wrong.sort((a, b) => b.probability - a.probability); // Stable: equally sure mistakes stay in image order.
  const mistakes = wrong.slice(0, gallery).map((mistake) => {
    const flat = pixels.subarray(mistake.index * 784, mistake.index * 784 + 784);
    return { ...mistake, pixels: Array.from({ length: 28 }, (_, y) => Array.from(flat.subarray(y * 28, y * 28 + 28))) };
  });
  return {
    epoch,
    data: `${labels.length.toLocaleString("en")} test images it validated on, as in the book`,
    images: labels.length,
    accuracy: (labels.length - wrong.length) / labels.length,
    errors: wrong.length,
    confusion_matrix: matrix,
    mistakes,
  };
}

async function train({ config, mnist, threads, gallery = 24, engineSettings }) {
  running = true;
  stopping = false;
  post({ type: "status", message: "Loading MNIST…" });
  const data = await loadMnist(mnist, (message) => post({ type: "status", message }));
  post({ type: "status", message: "Starting the engine…" });
  if (!engine) engine = await loadEngine({ threads });
  engine.setNetwork(networkOf(config, engineSettings));
  const pixels = 784;
  const count = Math.min(config.train_limit ?? data.arrays.y_train.length, data.arrays.y_train.length);
  engine.setTrainingData(data.arrays.x_train.subarray(0, count * pixels), data.arrays.y_train.subarray(0, count));
  engine.setValidationData(data.arrays.x_test, data.arrays.y_test);
  engine.setWeights(pageArrays(config.seed, layerSizes(config), normedLayers(config)));
  const orders = new NumpyRandomState(config.seed); // np.random.RandomState(seed), as digitlab train shuffles.
  post({
    type: "ready",
    engine: { build: engine.build, threads: engine.threads, simd: engine.simd },
    names: arrayNames(normedLayers(config)),
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
  // A net with BatchNormalization trains with Adam's slots: the run keeps them, so `train --resume` goes on.
  const slots = config.batch_norm && epoch ? engine.getSlots().slots : null;
  post({ type: "end", status: epoch === config.epochs ? "complete" : "interrupted", epoch, wallTime: (performance.now() - started) / 1000, slots });
  running = false;
  if (epoch) {
    const evaluated = evaluation(data.arrays.x_test, data.arrays.y_test, epoch, gallery);
    if (evaluated) post({ type: "evaluation", evaluation: evaluated });
  }
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
