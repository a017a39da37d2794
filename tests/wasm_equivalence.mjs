/* The browser engine's side of tests/test_wasm.py: trains a net on the WebAssembly engine from the initial
 * weights and batch orders the test wrote, and hands back each epoch's weights, logs and time.
 *
 * In node:      node tests/wasm_equivalence.mjs DIR ENGINE_DIR   (reads DIR's files, writes its results there)
 * In a browser: a module Worker of this file, sent { base, engine }: fetches the files from `base`, answers
 *               { build, threads, epochs: [{ logs, seconds, weights: ArrayBuffer }], outputs } (or { error }),
 *               outputs being the trained net's predictions for the first 100 validation images (and
 *               floatOutputs the same from their float inputs).
 *
 * The files: inputs.json ({ net, threads, epochs, seed, simd, sizes }: engine.js's setNetwork settings; sizes,
 * each array's size in initial.bin, for nets with more arrays than kernels and biases), train_pixels.bin and valid_pixels.bin (uint8,
 * 784 a picture), train_labels.bin and valid_labels.bin (uint8) and initial.bin (float32: every layer's kernel
 * then bias, Keras's layout, one after another; the deep net's in Keras's get_weights order). The batch orders are drawn here from the seed, as
 * `digitlab train` draws them (engine.js's NumpyRandomState).
 */

const inNode = typeof process !== "undefined" && !!(process.versions && process.versions.node);

/** Trains `inputs.epochs` epochs; `read(name)` gives a file's bytes (an ArrayBuffer). */
export async function run(engineBase, read) {
  const { loadEngine, NumpyRandomState } = await import(new URL("engine.js", engineBase).href);
  const inputs = JSON.parse(new TextDecoder().decode(await read("inputs.json")));
  const engine = await loadEngine({ threads: inputs.threads, simd: inputs.simd !== false, base: engineBase });
  try {
    engine.setNetwork(inputs.net);
    const units = inputs.net.units;
    const initial = new Float32Array(await read("initial.bin"));
    /* Each array's size: inputs.sizes where the net has more than kernels and biases (the deep net). */
    const sizes = inputs.sizes || units.slice(1).flatMap((width, l) => [units[l] * width, width]);
    const weights = [];
    let at = 0;
    for (const size of sizes) weights.push(initial.slice(at, (at += size)));
    engine.setWeights(weights);
    const bytes = async (name) => new Uint8Array(await read(name));
    engine.setTrainingData(await bytes("train_pixels.bin"), await bytes("train_labels.bin"));
    engine.setValidationData(await bytes("valid_pixels.bin"), await bytes("valid_labels.bin"));
    /* Each epoch's order as `digitlab train --seed` draws it: NumPy's RandomState(seed).permutation(n). */
    const orders = new NumpyRandomState(inputs.seed);
    const n = new Uint8Array(await read("train_labels.bin")).length;
    const epochs = [];
    for (let epoch = 0; epoch < inputs.epochs; epoch++) {
      const order = orders.permutation(n);
      const began = performance.now();
      const logs = engine.trainEpoch(order);
      const seconds = (performance.now() - began) / 1000;
      const trained = engine.getWeights();
      const flat = new Float32Array(trained.reduce((total, array) => total + array.length, 0));
      let offset = 0;
      for (const array of trained) flat.set(array, offset), (offset += array.length);
      epochs.push({ logs, seconds, weights: flat.buffer });
    }
    /* The trained net's outputs for the first validation images (the drawing pad's answer). */
    const shown = new Uint8Array(await read("valid_pixels.bin")).subarray(0, 784 * 100);
    const outputs = Array.from(engine.predict(shown));
    /* The same images as the network's float inputs (the drawing pad gives those). */
    const floatOutputs = Array.from(engine.predict(Float32Array.from(shown, (value) => value / 255)));
    return { build: engine.build, threads: engine.threads, epochs, outputs, floatOutputs };
  } finally {
    engine.dispose();
  }
}

if (inNode && process.argv[1] && import.meta.url.endsWith(process.argv[1].split("/").pop())) {
  const { readFile, writeFile } = await import("node:fs/promises");
  const { pathToFileURL } = await import("node:url");
  const [dir, engineDir] = process.argv.slice(2);
  const read = async (name) => {
    const bytes = await readFile(`${dir}/${name}`);
    return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  };
  const result = await run(pathToFileURL(engineDir + "/"), read);
  for (const [epoch, entry] of result.epochs.entries()) {
    await writeFile(`${dir}/weights_${epoch}.bin`, new Uint8Array(entry.weights));
    delete entry.weights;
  }
  await writeFile(`${dir}/results.json`, JSON.stringify(result));
} else if (!inNode) {
  self.onmessage = async (event) => {
    const { base, engine } = event.data;
    const read = async (name) => {
      const response = await fetch(new URL(name, base));
      if (!response.ok) throw new Error(`${name}: HTTP ${response.status}`);
      return response.arrayBuffer();
    };
    try {
      const result = await run(new URL(engine, base), read);
      self.postMessage(result, result.epochs.map((entry) => entry.weights));
    } catch (error) {
      self.postMessage({ error: String(error && error.stack ? error.stack : error) });
    }
  };
}
