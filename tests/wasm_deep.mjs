/* The browser engine's side of tests/test_wasm.py's deep-net test: runs _deep.c's epoch (BatchNormalization,
 * Dropout, Adam) in the WebAssembly engine through its raw export, digitlab_train_epoch_deep, from the arrays,
 * batch orders and step sizes the test wrote, and writes back every array after every epoch.
 *
 *   node tests/wasm_deep.mjs DIR ENGINE_DIR
 *
 * DIR holds deep.json ({ units, activations, loss, dropout, norm, normed, hyper, optimizer, lossCode, clip,
 * batchSize, seed, step, epochs, simd, threads }), train_pixels.bin and train_labels.bin (uint8), arrays.bin (float32: per layer its
 * kernel, bias and, where it has a BatchNormalization, gamma, beta, moving mean and variance), orders.bin (int32,
 * epochs x n) and step_sizes.bin (float32, epochs x batches). It writes arrays_E.bin after epoch E and
 * results.json ({ build, threads, losses, correct }).
 */
import { readFile, writeFile } from "node:fs/promises";
import { pathToFileURL } from "node:url";

const [dir, engineDir] = process.argv.slice(2);
const bytes = async (name) => new Uint8Array(await readFile(`${dir}/${name}`));
const floats = async (name) => {
  const raw = await bytes(name);
  return new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
};
const { loadEngine } = await import(pathToFileURL(engineDir + "/engine.js").href);
const inputs = JSON.parse(await readFile(`${dir}/deep.json`, "utf8"));
const engine = await loadEngine({ threads: inputs.threads || 1, simd: inputs.simd, base: pathToFileURL(engineDir + "/") });
const { units, epochs } = inputs;
const layers = units.length - 1;
/* setNetwork and setTrainingData build the rows, targets and labels; the arrays are this driver's own. */
engine.setNetwork({
  units,
  activations: inputs.activations,
  loss: inputs.loss,
  learningRate: 0.001,
  batchSize: inputs.batchSize,
});
engine.setTrainingData(await bytes("train_pixels.bin"), await bytes("train_labels.bin"));
const train = engine.train;
const sizes = [];
for (let l = 0; l < layers; l++) {
  const normed = inputs.normed[l];
  sizes.push([units[l] * units[l + 1], units[l + 1], ...(normed ? Array(4).fill(units[l + 1]) : [0, 0, 0, 0])]);
}
const initial = await floats("arrays.bin");
const pointers = [],
  slots = [];
let at = 0;
for (let l = 0; l < layers; l++)
  for (const [part, size] of sizes[l].entries()) {
    if (!size) {
      pointers.push(0);
      if (part < 4) slots.push(0, 0);
      continue;
    }
    const array = engine._alloc(4 * size);
    engine._f32(array, size).set(initial.subarray(at, (at += size)));
    pointers.push(array);
    if (part < 4)
      for (let k = 0; k < 2; k++) {
        const moment = inputs.optimizer === 1 ? engine._alloc(4 * size) : 0;
        if (moment) engine._f32(moment, size).fill(0);
        slots.push(moment);
      }
  }
const table = (values) => {
  const where = engine._alloc(4 * values.length);
  engine._i32(where, values.length).set(values);
  return where;
};
const floatTable = (values) => {
  const where = engine._alloc(4 * values.length);
  engine._f32(where, values.length).set(values);
  return where;
};
const arraysAt = table(pointers),
  slotsAt = table(slots);
const dropoutAt = floatTable(inputs.dropout),
  normAt = floatTable(inputs.norm),
  hyperAt = floatTable(inputs.hyper);
const n = train.count,
  batches = Math.ceil(n / inputs.batchSize);
const orders = new Int32Array((await bytes("orders.bin")).buffer);
const stepSizes = await floats("step_sizes.bin");
const sums = engine._alloc(16);
const losses = [],
  correct = [];
let step = inputs.step;
for (let epoch = 0; epoch < epochs; epoch++) {
  const orderAt = engine._int64s(Array.from(orders.subarray(epoch * n, (epoch + 1) * n)));
  const sizesAt = floatTable(stepSizes.subarray(epoch * batches, (epoch + 1) * batches));
  engine._f64(sums, 1)[0] = 0;
  engine._i32(sums + 8, 2).fill(0);
  const status = engine.exports.digitlab_train_epoch_deep(
    train.starts,
    train.cols,
    train.vals,
    BigInt(train.most),
    train.targets,
    train.labels,
    orderAt,
    BigInt(n),
    BigInt(inputs.batchSize),
    BigInt(layers),
    engine.net.unitsAt,
    engine.net.codes,
    dropoutAt,
    normAt,
    arraysAt,
    slotsAt,
    inputs.optimizer,
    sizesAt,
    hyperAt,
    BigInt(step),
    inputs.seed | 0,
    inputs.lossCode,
    inputs.clip,
    sums,
    sums + 8,
    engine.threads, // Sharing each batch: the same bits for any number.
  );
  if (status !== 0) throw new Error(`digitlab_train_epoch_deep returned ${status}`);
  step += batches;
  losses.push(engine._f64(sums, 1)[0]);
  correct.push(engine._i32(sums + 8, 1)[0]);
  const out = [];
  for (let l = 0, k = 0; l < layers; l++)
    for (const size of sizes[l]) {
      const where = pointers[k++];
      if (size) out.push(engine._f32(where, size).slice());
    }
  const flat = new Float32Array(out.reduce((total, array) => total + array.length, 0));
  let offset = 0;
  for (const array of out) flat.set(array, offset), (offset += array.length);
  await writeFile(`${dir}/arrays_${epoch}.bin`, new Uint8Array(flat.buffer));
  engine._free(orderAt, sizesAt);
}
await writeFile(`${dir}/results.json`, JSON.stringify({ build: engine.build, threads: engine.threads, losses, correct }));
engine.dispose();
