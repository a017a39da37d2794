/* The deep net's part of engine.js: nets with BatchNormalization (the book's chapter 9 net: three [Dense 64
 * ReLU, BatchNormalization], Dropout 0.2, Dense 10 softmax, Adam), trained by _deep.c's
 * digitlab_train_epoch_deep and evaluated by its digitlab_infer_deep (the moving statistics), with the same
 * bits as `digitlab train` on the native portable path (deep.py drives the same C natively).
 *
 * engine.js makes one when setNetwork is given a `norm` for some layer:
 *
 *     engine.setNetwork({ units: [784, 64, 64, 64, 10], activations: ["relu", "relu", "relu", "softmax"],
 *                         norm: [{ momentum: 0.99, epsilon: 1e-3 }, ..., null],   // per layer, or null
 *                         dropout: [0, 0, 0, 0.2],                  // each layer's Dropout on its input
 *                         loss: "categorical_crossentropy", optimizer: "adam", learningRate: 0.001,
 *                         beta1: 0.9, beta2: 0.999, epsilon: 1e-7, dropoutSeed: 123, batchSize: 128 });
 *     engine.setWeights([...]);    // Keras's get_weights order: per layer kernel, bias and, where it has a
 *                                  // BatchNormalization, gamma, beta, moving mean, moving variance
 *     engine.getSlots();           // { step, slots: { "momentum/dense_0/kernel": Float32Array, ... } }
 *     engine.setSlots(state);      // the same, to go on from a saved state
 *
 * Dropout's masks are _deep.c's own hash of (dropoutSeed, step, layer, entry), as natively; each step's Adam
 * alpha is deep.py's DeepPlan.step_sizes, in float32: rate * sqrt(1 - beta2^t) / (1 - beta1^t).
 */

export const OPTIMIZERS = { sgd: 0, adam: 1 };
const ARRAYS = ["kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance"];
const TRAINED = 4;
const SLOTS = ["momentum", "velocity"];
const f32 = Math.fround;

/** True when the settings ask for the deep-net path (a BatchNormalization on some layer). */
export function isDeep(settings) {
  return Array.isArray(settings.norm) && settings.norm.some((entry) => entry);
}

/** The deep net's arrays, Adam's slots and its settings in the engine's memory. */
export class DeepNet {
  constructor(engine, net, settings) {
    const { norm, dropout = [], optimizer = "sgd", beta1 = 0.9, beta2 = 0.999, epsilon = 1e-7, dropoutSeed = 0 } =
      settings;
    const layers = net.layers;
    if (norm.length !== layers) throw new Error(`Give one norm entry per layer (${layers}, null for none).`);
    if (norm[layers - 1]) throw new Error("The last layer takes no BatchNormalization.");
    for (const entry of norm)
      if (entry && !(entry.momentum >= 0 && entry.momentum < 1 && entry.epsilon > 0))
        throw new Error(`A BatchNormalization needs a momentum in [0, 1) and an epsilon above 0, got ${JSON.stringify(entry)}.`);
    const rates = Array.from({ length: layers }, (_, l) => dropout[l] || 0);
    if (rates[0]) throw new Error("The engine takes no Dropout on the first layer's input.");
    if (!rates.every((rate) => rate >= 0 && rate < 1)) throw new Error(`Dropout rates must be in [0, 1), got ${rates}.`);
    if (!(optimizer in OPTIMIZERS)) throw new Error(`The deep net trains with sgd or adam, got optimizer ${optimizer}.`);
    if (!Number.isInteger(dropoutSeed) || dropoutSeed < 0 || dropoutSeed > 0xffffffff)
      throw new Error(`dropoutSeed must be a whole number from 0 to 2**32 - 1, got ${dropoutSeed}.`);
    this.engine = engine;
    this.net = net;
    this.normed = norm.map((entry) => !!entry);
    this.optimizer = optimizer;
    this.beta1 = beta1;
    this.beta2 = beta2;
    this.seed = dropoutSeed;
    this.step = 0;
    this.owned = [];
    const pointers = [],
      slots = [];
    for (let l = 0; l < layers; l++) {
      const sizes = this.sizes(l);
      for (let part = 0; part < ARRAYS.length; part++) {
        let at = part === 0 ? net.kernels[l] : part === 1 ? net.biases[l] : 0;
        if (part > 1 && sizes[part]) {
          at = this._own(sizes[part]);
          engine._f32(at, sizes[part]).fill(part === 2 || part === 5 ? 1 : 0); /* gamma and the variance: 1. */
        }
        pointers.push(at);
        if (part < TRAINED)
          for (let k = 0; k < 2; k++) slots.push(optimizer === "adam" && sizes[part] ? this._own(sizes[part], true) : 0);
      }
    }
    this.pointers = pointers;
    this.slotPointers = slots;
    this.arraysAt = this._table(pointers, Int32Array);
    this.slotsAt = this._table(slots, Int32Array);
    this.dropoutAt = this._table(rates, Float32Array);
    const settings3 = norm.flatMap((entry) => (entry ? [entry.momentum, 1 - entry.momentum, entry.epsilon] : [0, 1, 0]));
    this.normAt = this._table(settings3, Float32Array);
    this.hyperAt = this._table([1 - beta1, 1 - beta2, epsilon], Float32Array);
  }

  /* Layer l's array sizes, in ARRAYS's order (0 where it has none). */
  sizes(l) {
    const [inputs, units] = [this.net.units[l], this.net.units[l + 1]];
    const normed = this.normed[l] ? units : 0;
    return [inputs * units, units, normed, normed, normed, normed];
  }

  _own(count, zero = false) {
    const at = this.engine._alloc(4 * count);
    if (zero) this.engine._f32(at, count).fill(0);
    this.owned.push(at);
    return at;
  }

  _table(values, Type) {
    const at = this.engine._alloc(4 * values.length);
    new Type(this.engine.memory.buffer, at, values.length).set(values);
    this.owned.push(at);
    return at;
  }

  /* Each array (pointer, size, Keras name) in Keras's get_weights order. */
  _arrays() {
    const out = [];
    for (let l = 0; l < this.net.layers; l++)
      for (const [part, size] of this.sizes(l).entries())
        if (size) out.push({ at: this.pointers[ARRAYS.length * l + part], size, name: `dense_${l}/${ARRAYS[part]}` });
    return out;
  }

  setWeights(weights) {
    const arrays = this._arrays();
    if (!Array.isArray(weights) || weights.length !== arrays.length)
      throw new Error(`Give ${arrays.length} arrays (${arrays.map((a) => a.name).join(", ")}), got ${weights && weights.length}.`);
    for (const [k, { at, size, name }] of arrays.entries()) {
      if (!(weights[k] instanceof Float32Array) || weights[k].length !== size)
        throw new Error(`${name} must be a Float32Array of ${size} values.`);
      this.engine._f32(at, size).set(weights[k]);
    }
  }

  getWeights() {
    return this._arrays().map(({ at, size }) => this.engine._f32(at, size).slice());
  }

  /* Adam's slots by their native names (fast.py's state: "momentum/dense_0/kernel", ...) and the step count. */
  _slotArrays() {
    const out = [];
    for (let l = 0; l < this.net.layers; l++)
      for (const [part, size] of this.sizes(l).slice(0, TRAINED).entries())
        for (const [k, slot] of SLOTS.entries()) {
          const at = this.slotPointers[2 * (TRAINED * l + part) + k];
          if (at) out.push({ at, size, name: `${slot}/dense_${l}/${ARRAYS[part]}` });
        }
    return out;
  }

  getSlots() {
    const slots = {};
    for (const { at, size, name } of this._slotArrays()) slots[name] = this.engine._f32(at, size).slice();
    return { step: this.step, slots };
  }

  setSlots({ step, slots }) {
    if (!Number.isInteger(step) || step < 0) throw new Error(`step must be a whole number >= 0, got ${step}.`);
    for (const { at, size, name } of this._slotArrays()) {
      const given = slots && slots[name];
      if (!(given instanceof Float32Array) || given.length !== size)
        throw new Error(`${name} must be a Float32Array of ${size} values.`);
      this.engine._f32(at, size).set(given);
    }
    this.step = step;
  }

  /** Each batch's step size from step `step` on: deep.py's DeepPlan.step_sizes in float32 (SGD: the rate). */
  stepSizes(step, batches) {
    const rate = f32(this.net.learningRate);
    const sizes = new Float32Array(batches);
    if (this.optimizer === "sgd") return sizes.fill(rate);
    const beta1 = f32(this.beta1),
      beta2 = f32(this.beta2);
    for (let number = 0; number < batches; number++) {
      const count = f32(step + number + 1);
      const power1 = f32(Math.pow(beta1, count)),
        power2 = f32(Math.pow(beta2, count));
      sizes[number] = f32(f32(rate * f32(Math.sqrt(f32(1 - power2)))) / f32(1 - power1));
    }
    return sizes;
  }

  /** One epoch over the images at `orderAt` (int64, n of them) in the training data, in place: { lossSum, correct }. */
  trainEpoch(train, orderAt, n, threads = this.engine.threads) {
    const engine = this.engine,
      net = this.net;
    const batches = Math.ceil(n / net.batchSize);
    const sizesAt = engine._alloc(4 * batches);
    engine._f32(sizesAt, batches).set(this.stepSizes(this.step, batches));
    const sums = engine.scratch;
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
      BigInt(net.batchSize),
      BigInt(net.layers),
      net.unitsAt,
      net.codes,
      this.dropoutAt,
      this.normAt,
      this.arraysAt,
      this.slotsAt,
      OPTIMIZERS[this.optimizer],
      sizesAt,
      this.hyperAt,
      BigInt(this.step),
      this.seed | 0,
      engine.lossCode(),
      engine.clip(),
      sums,
      sums + 8,
      threads, // Sharing each batch on the threads build: the same bits for any number.
    );
    engine._free(sizesAt);
    if (status !== 0) throw new Error("The engine could not allocate its batch buffers (the page's memory is full).");
    this.step += batches;
    return { lossSum: engine._f64(sums, 1)[0], correct: engine._i32(sums + 8, 1)[0] };
  }

  /** The forward pass with the moving statistics (digitlab_infer_deep) over `rows`: outputs into `outputsAt`
   * (or 0), and with `data` (validation data: targets, labels, index) each row's loss and the right answers. */
  infer(rows, outputsAt, data, lossesAt, correctAt) {
    const engine = this.engine,
      net = this.net;
    return engine.exports.digitlab_infer_deep(
      rows.starts,
      rows.cols,
      rows.vals,
      data ? data.targets : 0,
      data ? data.labels : 0,
      data ? data.index : 0,
      BigInt(rows.count),
      BigInt(net.layers),
      net.unitsAt,
      net.codes,
      this.normAt,
      this.arraysAt,
      engine.lossCode(),
      engine.clip(),
      outputsAt,
      lossesAt,
      correctAt,
    );
  }

  free() {
    this.engine._free(...this.owned);
    this.owned = [];
  }
}

/** The arrays' names in Keras's get_weights order (digitlab.engine.spec.weight_names), for a net whose layer l
 * has a BatchNormalization where normed[l]: dense_0/kernel, dense_0/bias, dense_0/gamma, ... */
export function arrayNames(normed) {
  return normed.flatMap((hasNorm, layer) => (hasNorm ? ARRAYS : ARRAYS.slice(0, 2)).map((part) => `dense_${layer}/${part}`));
}
