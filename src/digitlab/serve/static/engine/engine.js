/* digitlab's C training engine in WebAssembly: the same C sources as the native engine (_kernels.c, _dense.c,
 * _train.c, and _wasm.c for the browser's edge), built by `make wasm`. It trains the networks the native
 * engine trains in whole epochs (Dense layers, plain SGD) and, from the same initial weights and batch
 * orders, ends every epoch with the same weights, bit for bit, as `digitlab train` on the native portable
 * path (DIGITLAB_KERNEL_SCALAR=1).
 *
 * Use it in a Worker (the threaded build waits with Atomics, which a page's main thread may not do):
 *
 *     import { loadEngine } from "./engine/engine.js";
 *     const engine = await loadEngine({ threads: 2 });   // 1 where the page is not cross-origin isolated
 *     engine.setNetwork({ units: [784, 64, 10], activations: ["sigmoid", "softmax"],
 *                         loss: "mean_squared_error", optimizer: "sgd", learningRate: 0.01, batchSize: 128 });
 *     engine.setWeights([kernel0, bias0, kernel1, bias1]);  // Keras's layout: each kernel inputs x units,
 *                                                          // row-major, then its bias; Float32Arrays
 *     engine.setTrainingData(pixels, labels);      // Uint8Array n x 784 (0-255), Uint8Array n (0-9)
 *     engine.setValidationData(pixels, labels);    // the same, for val_loss and val_accuracy
 *     const logs = engine.trainEpoch(order);       // Int32Array: the epoch's image order, batches in turn
 *     // logs: { loss, accuracy, val_loss, val_accuracy }, as `digitlab train` computes them
 *     const weights = engine.getWeights();         // Float32Arrays, Keras's layout
 *     const outputs = engine.predict(pixels);      // Float32Array rows x classes, for images as Uint8Array
 *                                                  // rows x 784 (0-255) or Float32Array (inputs 0-1)
 *     engine.dispose();                            // ends the engine's Workers
 *
 *     const orders = new NumpyRandomState(seed);   // the batch orders of `digitlab train --seed seed`:
 *     engine.trainEpoch(orders.permutation(n));    // one draw an epoch, as NumPy's RandomState draws them
 *
 * loadEngine({ threads, simd, base }) picks the build: engine-threads.wasm (SIMD128 and shared memory: its
 * Workers run engine-thread.js) when threads > 1 and SharedArrayBuffer is usable (a cross-origin isolated
 * page, or node); else engine.wasm (SIMD128, one thread); engine-scalar.wasm where the browser has no
 * WebAssembly SIMD (or simd: false). All three give the same bits. `engine.build`, `engine.threads` and
 * `engine.simd` say what it runs. With several threads each epoch takes as many as measure faster
 * (SpeedCheck, the rule of the native engine's cores.py: a page cannot see the machine's load, and two
 * threads that wait for each other at every batch lose where a core is busy); `engine.threadCounts` counts
 * the epochs on each number; loadEngine({ followSpeed: false }) keeps every epoch on all of them.
 * Activations: linear, sigmoid, relu, tanh, softmax (the last layer); losses: mean_squared_error,
 * categorical_crossentropy (on a softmax). Bad settings throw an Error
 * saying what was wrong. In node (the tests), loadEngine reads the .wasm files from disk.
 * Nets with BatchNormalization (the book's deep net, with Dropout and Adam) train through engine-deep.js:
 * setNetwork takes `norm`, `dropout`, optimizer "adam" and its settings there (see that file).
 * docs/browser-engine.md describes the API and how the two engines are held to the same bits.
 *
 * It runs past 450 lines as one concern, the module's edge: its memory, its Workers, and each C export's
 * arguments laid out in the C code's order; the deep net's own arrays live in engine-deep.js.
 */

import { DeepNet, isDeep } from "./engine-deep.js";

const ACTIVATIONS = { linear: 0, sigmoid: 1, relu: 2, tanh: 3, softmax: 4 };
const LOSSES = { mean_squared_error: 0, categorical_crossentropy: 1 };
const CROSSENTROPY_CLIP = 1e-7; /* spec.CROSSENTROPY_CLIP: Keras's epsilon. */
const PAGE = 65536;
const INITIAL_PAGES = 32; /* The module's --initial-memory (Makefile), 2 MiB. */
const MAXIMUM_PAGES = 32768; /* Its --max-memory, 2 GiB. */
const THREAD_STACK = 256 * 1024; /* Each Worker's stack, in the shared memory. */
/* A module with one SIMD128 instruction (from wasm-feature-detect): valid where the browser has SIMD. */
const SIMD_PROBE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8, 0, 65, 0, 253, 15, 253, 98, 11,
]);

const inNode = typeof process !== "undefined" && !!(process.versions && process.versions.node);

/** True where this JavaScript can share memory between Workers (SharedArrayBuffer and cross-origin isolation). */
export function threadsAvailable() {
  if (typeof SharedArrayBuffer === "undefined") return false;
  return inNode || globalThis.crossOriginIsolated === true;
}

/** True where WebAssembly SIMD128 runs. */
export function simdAvailable() {
  return WebAssembly.validate(SIMD_PROBE);
}

async function compile(url) {
  if (inNode) {
    const { readFile } = await import("node:fs/promises");
    return WebAssembly.compile(await readFile(url));
  }
  const response = await fetch(url);
  if (!response.ok) throw new Error(`The engine ${url} could not be fetched (HTTP ${response.status}).`);
  return WebAssembly.compileStreaming(response);
}

/** Loads the engine: { threads = 1, simd = true, base = this module's folder, followSpeed = true } ->
 * Promise<Engine>. */
export async function loadEngine({
  threads = 1,
  simd = true,
  base = new URL(".", import.meta.url),
  followSpeed = true,
} = {}) {
  if (!Number.isInteger(threads) || threads < 1 || threads > 64)
    throw new Error(`threads must be a whole number from 1 to 64, got ${threads}.`);
  const shared = threads > 1 && threadsAvailable();
  const withSimd = simd && simdAvailable();
  const build = shared ? "engine-threads.wasm" : withSimd ? "engine.wasm" : "engine-scalar.wasm";
  if (shared && !withSimd) throw new Error("The threaded engine needs WebAssembly SIMD, which this browser lacks.");
  const module = await compile(new URL(build, base));
  const memory = new WebAssembly.Memory({ initial: INITIAL_PAGES, maximum: MAXIMUM_PAGES, shared });
  const imports = { env: { memory, now_ms: () => performance.now() } };
  const instance = await WebAssembly.instantiate(module, imports);
  const engine = new Engine(instance, memory, build, withSimd);
  if (!followSpeed) engine.speed = null;
  if (shared) await engine._startWorkers(module, threads - 1, base);
  return engine;
}

/** NumPy's legacy generator, np.random.RandomState(seed) (MT19937), for the batch orders `digitlab train`
 * draws: run seed s, network k trains epoch after epoch on RandomState(s + k).permutation(n), one draw an
 * epoch from one generator, as Keras's fit shuffles. new NumpyRandomState(seed).permutation(n) gives the
 * same Int32Array as NumPy, draw after draw. */
export class NumpyRandomState {
  constructor(seed) {
    if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff)
      throw new Error(`A seed must be a whole number from 0 to 2**32 - 1, got ${seed}.`);
    this.key = new Uint32Array(624);
    this.key[0] = seed >>> 0;
    for (let i = 1; i < 624; i++) {
      const previous = this.key[i - 1] ^ (this.key[i - 1] >>> 30);
      /* 1812433253 * previous + i, modulo 2**32, without losing bits to floating point. */
      this.key[i] = (Math.imul(1812433253, previous) + i) >>> 0;
    }
    this.position = 624;
  }

  /** The next 32 random bits (MT19937's genrand_int32). */
  nextUint32() {
    const key = this.key;
    if (this.position >= 624) {
      for (let i = 0; i < 624; i++) {
        const y = (key[i] & 0x80000000) | (key[(i + 1) % 624] & 0x7fffffff);
        key[i] = key[(i + 397) % 624] ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
      }
      this.position = 0;
    }
    let y = key[this.position++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  /** A whole number in 0 ... most (NumPy's random_interval: masked draws, the ones above most refused). */
  interval(most) {
    if (most === 0) return 0;
    let mask = most;
    for (const shift of [1, 2, 4, 8, 16]) mask |= mask >>> shift;
    for (;;) {
      const value = (this.nextUint32() & mask) >>> 0;
      if (value <= most) return value;
    }
  }

  /** np.random.RandomState.permutation(n): 0 ... n - 1 shuffled (Fisher-Yates from the end, as NumPy). */
  permutation(n) {
    const order = new Int32Array(n);
    for (let i = 0; i < n; i++) order[i] = i;
    for (let i = n - 1; i >= 1; i--) {
      const j = this.interval(i);
      const kept = order[i];
      (order[i] = order[j]), (order[j] = kept);
    }
    return order;
  }
}

/** numpy's sum of a float64 array (pairwise, in blocks of 128 with eight partial sums), so val_loss matches. */
function numpySum(values, start, count) {
  if (count < 8) {
    let sum = -0.0;
    for (let i = 0; i < count; i++) sum += values[start + i];
    return sum;
  }
  if (count <= 128) {
    const r = [0, 0, 0, 0, 0, 0, 0, 0];
    for (let j = 0; j < 8; j++) r[j] = values[start + j];
    let i = 8;
    for (; i < count - (count % 8); i += 8) for (let j = 0; j < 8; j++) r[j] += values[start + i + j];
    let sum = r[0] + r[1] + (r[2] + r[3]) + (r[4] + r[5] + (r[6] + r[7]));
    for (; i < count; i++) sum += values[start + i];
    return sum;
  }
  let half = Math.floor(count / 2);
  half -= half % 8;
  return numpySum(values, start, half) + numpySum(values, start + half, count - half);
}

/* The native engine's cores.SpeedCheck (SLOWER, PROBE_EVERY, PROBE_MOST, RECENT there), rule for rule: which
 * thread count an epoch should use by the epochs' own times, all of them or one. The third epoch runs on one
 * thread, to compare with; two epochs in a row on several threads, each 1.4x slower than their best, are
 * followed by one on one thread (unless one thread took longer than them within the last 64 epochs); one that
 * beats the median of the last 3 several-thread epochs keeps the engine on one thread for 8 epochs, then
 * several are tried again, and each try that loses doubles the stretch (up to 64).
 * tests/test_wasm.py feeds both the same times and compares their choices. */
export class SpeedCheck {
  constructor() {
    this.bestMany = null;
    this.slowBefore = false;
    this.recentMany = [];
    this.lastOne = null;
    this.lastOneEpoch = 0;
    this.oneThread = false;
    this.probing = false;
    this.trying = false;
    this.left = 0;
    this.wait = 8;
    this.epochs = 0;
  }

  allowed(wanted) {
    return this.oneThread ? 1 : wanted;
  }

  record(threads, seconds) {
    this.epochs += 1;
    if (this.epochs === 1) return; /* The first epoch fills the caches and pages. */
    if (threads > 1) {
      this.recentMany.push(seconds);
      if (this.recentMany.length > 3) this.recentMany.shift();
      if (this.trying) {
        this.trying = false;
        if (this.lastOne !== null && seconds >= this.lastOne) {
          this._stayOnOne();
          return;
        }
        this.wait = 8;
      }
      let slow = this.bestMany !== null && seconds > this.bestMany * 1.4;
      /* One thread took longer lately: a probe would not win now. */
      if (slow && this.lastOne !== null && this.epochs - this.lastOneEpoch <= 64) slow = seconds > this.lastOne;
      /* One slow epoch among fast ones is a hiccup: a probe follows the second in a row. */
      const again = slow && this.slowBefore;
      this.slowBefore = slow;
      if (again || this.epochs === 2) {
        this.oneThread = this.probing = true;
        this.slowBefore = false;
      }
      this.bestMany = this.bestMany === null ? seconds : Math.min(this.bestMany, seconds);
      return;
    }
    if (!this.oneThread) return;
    this.lastOne = seconds;
    this.lastOneEpoch = this.epochs;
    if (this.probing) {
      this.probing = false;
      if (this.recentMany.length && seconds < median(this.recentMany)) this._stayOnOne();
      else this.oneThread = false;
      return;
    }
    this.left -= 1;
    if (this.left <= 0) {
      this.oneThread = false;
      this.trying = true;
    }
  }

  _stayOnOne() {
    this.oneThread = true;
    this.left = this.wait;
    this.wait = Math.min(this.wait * 2, 64);
  }
}

/* Python's statistics.median. */
function median(values) {
  const sorted = [...values].sort((a, b) => a - b),
    middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

class Engine {
  constructor(instance, memory, build, simd) {
    this.exports = instance.exports;
    this.memory = memory;
    this.build = build;
    this.simd = simd;
    this.threads = 1;
    this.speed = new SpeedCheck(); /* null: every epoch on all the threads (loadEngine's followSpeed). */
    this.threadCounts = {}; /* Epochs trained on each number of threads. */
    this.workers = [];
    this.net = null;
    this.train = null;
    this.valid = null;
    this.scratch = this._alloc(16); /* A double and an int64 for the epoch's sums. */
  }

  /* Views of the memory, made anew on each use: growing the memory replaces its buffer. */
  _bytes() {
    return new Uint8Array(this.memory.buffer);
  }
  _alloc(bytes) {
    const at = this.exports.digitlab_malloc(Math.max(bytes, 1));
    if (!at) throw new Error(`The engine could not allocate ${bytes} bytes (the page's memory is full).`);
    return at;
  }
  _free(...pointers) {
    for (const at of pointers) if (at) this.exports.digitlab_free(at);
  }
  _f32(at, count) {
    return new Float32Array(this.memory.buffer, at, count);
  }
  _i32(at, count) {
    return new Int32Array(this.memory.buffer, at, count);
  }
  _f64(at, count) {
    return new Float64Array(this.memory.buffer, at, count);
  }
  /* Writes whole numbers as int64 (little-endian: low word, then 0; all here are below 2^31). */
  _int64s(values) {
    const at = this._alloc(8 * values.length);
    const words = this._i32(at, 2 * values.length);
    for (let i = 0; i < values.length; i++) (words[2 * i] = values[i]), (words[2 * i + 1] = 0);
    return at;
  }

  async _startWorkers(module, count, base) {
    const url = new URL("engine-thread.js", base);
    let WorkerClass = globalThis.Worker;
    if (inNode) WorkerClass = (await import("node:worker_threads")).Worker;
    const ready = [];
    for (let k = 0; k < count; k++) {
      const stackTop = this._alloc(THREAD_STACK) + THREAD_STACK;
      const worker = inNode ? new WorkerClass(url) : new WorkerClass(url, { type: "module" });
      if (inNode) worker.unref(); /* Waiting Workers do not keep node running. */
      this.workers.push(worker);
      ready.push(
        new Promise((resolve, reject) => {
          const done = (message) => {
            const data = inNode ? message : message.data;
            if (data && data.error) reject(new Error(`An engine thread could not start: ${data.error}`));
            else resolve();
          };
          if (inNode) worker.once("message", done), worker.once("error", reject);
          else (worker.onmessage = done), (worker.onerror = (event) => reject(new Error(event.message)));
        }),
      );
      worker.postMessage({ module, memory: this.memory, slot: k, stackTop });
    }
    await Promise.all(ready);
    this.threads = 1 + this.exports.digitlab_thread_workers(count);
  }

  /** Sets the network: { units, activations, loss, optimizer = "sgd", learningRate, batchSize } (and, for a net
   * with BatchNormalization, engine-deep.js's settings). Weights: 0 (gamma and the moving variance: 1). */
  setNetwork(settings) {
    const { units, activations, loss, optimizer = "sgd", learningRate, batchSize } = settings;
    if (!Array.isArray(units) || units.length < 2 || !units.every((u) => Number.isInteger(u) && u >= 1))
      throw new Error(`units must list the input size and each layer's units (whole numbers >= 1), got ${units}.`);
    if (units[0] > 65535) throw new Error(`The engine takes at most 65535 inputs, got ${units[0]}.`);
    const layers = units.length - 1;
    if (layers > 16) throw new Error(`The engine takes at most 16 layers, got ${layers}.`);
    if (!Array.isArray(activations) || activations.length !== layers)
      throw new Error(`Give one activation per layer (${layers}), got ${activations}.`);
    for (const [l, name] of activations.entries()) {
      if (!(name in ACTIVATIONS))
        throw new Error(`Unknown activation ${name}: use one of ${Object.keys(ACTIVATIONS)}.`);
      if (name === "softmax" && l !== layers - 1) throw new Error("softmax is for the last layer only.");
    }
    if (!(loss in LOSSES)) throw new Error(`Unknown loss ${loss}: use one of ${Object.keys(LOSSES)}.`);
    if (loss === "categorical_crossentropy" && activations[layers - 1] !== "softmax")
      throw new Error("categorical_crossentropy needs a softmax last layer.");
    if (optimizer !== "sgd" && !isDeep(settings)) throw new Error(`The engine trains with plain SGD only, got optimizer ${optimizer}.`);
    if (!(learningRate > 0) || !Number.isFinite(learningRate))
      throw new Error(`learningRate must be a number above 0, got ${learningRate}.`);
    if (!Number.isInteger(batchSize) || batchSize < 1)
      throw new Error(`batchSize must be a whole number >= 1, got ${batchSize}.`);
    this._freeNet();
    const kernels = [],
      biases = [];
    for (let l = 0; l < layers; l++) {
      kernels.push(this._alloc(4 * units[l] * units[l + 1]));
      biases.push(this._alloc(4 * units[l + 1]));
      this._f32(kernels[l], units[l] * units[l + 1]).fill(0);
      this._f32(biases[l], units[l + 1]).fill(0);
    }
    const kernelPointers = this._alloc(4 * layers),
      biasPointers = this._alloc(4 * layers),
      codes = this._alloc(4 * layers);
    this._i32(kernelPointers, layers).set(kernels);
    this._i32(biasPointers, layers).set(biases);
    this._i32(codes, layers).set(activations.map((name) => ACTIVATIONS[name]));
    this.net = {
      units: [...units],
      layers,
      activations: [...activations],
      loss,
      learningRate,
      batchSize,
      kernels,
      biases,
      kernelPointers,
      biasPointers,
      codes,
      unitsAt: this._int64s(units),
      deep: null,
    };
    if (isDeep(settings)) {
      try {
        this.net.deep = new DeepNet(this, this.net, settings);
      } catch (error) {
        this._freeNet();
        throw error;
      }
    }
    for (const data of [this.train, this.valid]) if (data) this._checkData(data, "");
  }

  _freeNet() {
    if (!this.net) return;
    const n = this.net;
    if (n.deep) n.deep.free();
    this._free(...n.kernels, ...n.biases, n.kernelPointers, n.biasPointers, n.codes, n.unitsAt);
    this.net = null;
  }

  _needNet() {
    if (!this.net) throw new Error("Call setNetwork first.");
    return this.net;
  }

  /** Sets the weights: Float32Arrays in Keras's order and layout (kernel inputs x units, then bias, per layer). */
  setWeights(weights) {
    const net = this._needNet();
    if (net.deep) return net.deep.setWeights(weights);
    if (!Array.isArray(weights) || weights.length !== 2 * net.layers)
      throw new Error(
        `Give ${2 * net.layers} arrays (each layer's kernel, then bias), got ${weights && weights.length}.`,
      );
    for (let l = 0; l < net.layers; l++) {
      const sizes = [net.units[l] * net.units[l + 1], net.units[l + 1]];
      for (const [i, at] of [net.kernels[l], net.biases[l]].entries()) {
        const given = weights[2 * l + i];
        if (!(given instanceof Float32Array) || given.length !== sizes[i])
          throw new Error(`Layer ${l}'s ${i ? "bias" : "kernel"} must be a Float32Array of ${sizes[i]} values.`);
        this._f32(at, sizes[i]).set(given);
      }
    }
  }

  /** The weights: Float32Arrays in Keras's order and layout (copies). */
  getWeights() {
    const net = this._needNet();
    if (net.deep) return net.deep.getWeights();
    const weights = [];
    for (let l = 0; l < net.layers; l++) {
      weights.push(this._f32(net.kernels[l], net.units[l] * net.units[l + 1]).slice());
      weights.push(this._f32(net.biases[l], net.units[l + 1]).slice());
    }
    return weights;
  }

  /* Images into the engine's rows (CSR: starts, cols, vals), in the memory: uint8 pixels (0-255, divided by
   * 255 there) a chunk of images at a time, or float32 inputs (used as they are: the drawing pad's). */
  _rows(pixels, columns) {
    const floats = pixels instanceof Float32Array;
    if (!(pixels instanceof Uint8Array || floats) || pixels.length % columns !== 0)
      throw new Error(`pixels must be a Uint8Array (or Float32Array) of whole images of ${columns} pixels.`);
    const count = pixels.length / columns;
    const e = this.exports;
    const starts = this._alloc(8 * (count + 1));
    let cols, vals;
    if (floats) {
      const source = this._alloc(4 * pixels.length);
      this._f32(source, pixels.length).set(pixels);
      const nonzero = Number(e.digitlab_csr_count(source, BigInt(count), BigInt(columns), starts));
      (cols = this._alloc(2 * nonzero)), (vals = this._alloc(4 * nonzero));
      e.digitlab_csr_fill(source, BigInt(count), BigInt(columns), starts, cols, vals, 0); // 0: no levels
      this._free(source);
    } else {
      const chunk = Math.min(count, 4096);
      const source = this._alloc(chunk * columns);
      this._i32(starts, 2).fill(0);
      const sweep = (cols, vals) => {
        for (let first = 0; first < count; first += chunk) {
          const rows = Math.min(chunk, count - first);
          this._bytes().set(pixels.subarray(first * columns, (first + rows) * columns), source);
          e.digitlab_bytes_rows(source, BigInt(rows), BigInt(columns), starts + 8 * first, cols, vals);
        }
      };
      sweep(0, 0); /* Each image's count, then the columns and values in the room for them. */
      const nonzero = this._i32(starts + 8 * count, 1)[0];
      (cols = this._alloc(2 * nonzero)), (vals = this._alloc(4 * nonzero));
      sweep(cols, vals);
      this._free(source);
    }
    const words = this._i32(starts, 2 * (count + 1));
    let most = 0;
    for (let r = 0; r < count; r++) most = Math.max(most, words[2 * r + 2] - words[2 * r]);
    return { count, starts, cols, vals, most };
  }

  _data(pixels, labels, what) {
    const net = this._needNet();
    const columns = net.units[0],
      classes = net.units[net.layers];
    if (!(labels instanceof Uint8Array)) throw new Error(`${what} labels must be a Uint8Array.`);
    const data = this._rows(pixels, columns);
    if (labels.length !== data.count) {
      this._freeData(data);
      throw new Error(`${what}: ${data.count} images but ${labels.length} labels.`);
    }
    data.labelBytes = this._alloc(labels.length);
    this._bytes().set(labels, data.labelBytes);
    data.labels = this._alloc(8 * data.count);
    this._targets(data, classes);
    try {
      this._checkData(data, what);
    } catch (error) {
      this._freeData(data);
      throw error;
    }
    return data;
  }

  /* The data's one-hot targets for `classes` classes, and its labels as int64. */
  _targets(data, classes) {
    data.classes = classes;
    data.targets = this._alloc(4 * data.count * classes);
    const count = BigInt(data.count);
    this.exports.digitlab_bytes_targets(data.labelBytes, count, BigInt(classes), data.targets, data.labels);
  }

  _checkData(data, what) {
    const classes = this.net.units[this.net.layers];
    const labels = new Uint8Array(this.memory.buffer, data.labelBytes, data.count);
    if (labels.some((label) => label >= classes))
      throw new Error(`${what || "The data"}: a label is outside 0 ... ${classes - 1} (the last layer's units).`);
    if (data.classes !== classes) {
      /* A new network with another number of classes: the targets follow it. */
      this._free(data.targets);
      this._targets(data, classes);
    }
  }

  _freeData(data) {
    if (data) this._free(data.starts, data.cols, data.vals, data.labelBytes, data.targets, data.labels, data.index);
  }

  /** The training images (Uint8Array n x inputs, 0-255) and their labels (Uint8Array n). */
  setTrainingData(pixels, labels) {
    const data = this._data(pixels, labels, "The training data");
    this._freeData(this.train);
    this.train = data;
  }

  /** The validation images and labels, as setTrainingData: trainEpoch reports val_loss and val_accuracy on them. */
  setValidationData(pixels, labels) {
    const data = this._data(pixels, labels, "The validation data");
    const index = [];
    for (let i = 0; i < data.count; i++) index.push(i);
    data.index = this._int64s(index);
    this._freeData(this.valid);
    this.valid = data;
  }

  /** One epoch of SGD over the training images in `order` (Int32Array of image numbers), in batches in turn:
   * returns { loss, accuracy } and, with validation data, { val_loss, val_accuracy }. */
  trainEpoch(order) {
    const net = this._needNet(),
      train = this.train;
    if (!train) throw new Error("Call setTrainingData first.");
    if (!(order instanceof Int32Array) || order.length < 1)
      throw new Error("order must be an Int32Array of the epoch's image numbers.");
    for (const image of order)
      if (!(image >= 0 && image < train.count))
        throw new Error(`order names image ${image}, outside 0 ... ${train.count - 1}.`);
    const at = this._int64s(order);
    const threads = this.threadsNow(),
      started = performance.now();
    if (net.deep) {
      let done;
      try {
        done = net.deep.trainEpoch(train, at, order.length, threads);
      } finally {
        this._free(at);
      }
      this._timed(threads, started);
      const logs = { loss: done.lossSum / order.length, accuracy: done.correct / order.length };
      if (this.valid) Object.assign(logs, this.evaluate());
      return logs;
    }
    const sums = this.scratch;
    this._f64(sums, 1)[0] = 0;
    this._i32(sums + 8, 2).fill(0);
    const status = this.exports.digitlab_train_epoch(
      train.starts,
      train.cols,
      train.vals,
      BigInt(train.most),
      train.targets,
      train.labels,
      at,
      BigInt(order.length),
      BigInt(net.batchSize),
      BigInt(net.layers),
      net.unitsAt,
      net.codes,
      net.kernelPointers,
      net.biasPointers,
      LOSSES[net.loss],
      net.learningRate,
      CROSSENTROPY_CLIP,
      BigInt(threads),
      sums,
      sums + 8,
      0,
    );
    this._timed(threads, started);
    this._free(at);
    if (status !== 0) throw new Error("The engine could not allocate its batch buffers (the page's memory is full).");
    const logs = {
      loss: this._f64(sums, 1)[0] / order.length,
      accuracy: this._i32(sums + 8, 1)[0] / order.length,
    };
    if (this.valid) Object.assign(logs, this.evaluate());
    return logs;
  }

  /** How many of the engine's threads the next epoch (and validation) uses: SpeedCheck's choice. */
  threadsNow() {
    return this.speed && this.threads > 1 ? this.speed.allowed(this.threads) : this.threads;
  }

  /* Counts an epoch on `threads` threads begun at `started` (performance.now()), and tells SpeedCheck. */
  _timed(threads, started) {
    this.threadCounts[threads] = (this.threadCounts[threads] || 0) + 1;
    if (this.speed && this.threads > 1) this.speed.record(threads, (performance.now() - started) / 1000);
  }

  /** { val_loss, val_accuracy } of the network on the validation data. */
  evaluate() {
    const net = this._needNet(),
      valid = this.valid;
    if (!valid) throw new Error("Call setValidationData first.");
    const losses = this._alloc(8 * valid.count);
    const correct = this.scratch + 8;
    this._i32(correct, 2).fill(0);
    const status = net.deep
      ? net.deep.infer(valid, 0, valid, losses, correct)
      : this.exports.digitlab_evaluate(
      valid.starts,
      valid.cols,
      valid.vals,
      valid.targets,
      valid.labels,
      valid.index,
      BigInt(valid.count),
      BigInt(net.layers),
      net.unitsAt,
      net.codes,
      net.kernelPointers,
      net.biasPointers,
      LOSSES[net.loss],
      CROSSENTROPY_CLIP,
      BigInt(this.threadsNow()),
      losses,
      correct,
    );
    const sum = numpySum(this._f64(losses, valid.count), 0, valid.count);
    this._free(losses);
    if (status !== 0) throw new Error("The engine could not allocate its validation buffers.");
    return { val_loss: sum / valid.count, val_accuracy: this._i32(correct, 1)[0] / valid.count };
  }

  /** The network's outputs for images (Uint8Array rows x inputs, 0-255, or Float32Array of inputs as the
   * network takes them, 0-1): a Float32Array rows x classes. */
  predict(pixels) {
    const net = this._needNet();
    const rows = this._rows(pixels, net.units[0]);
    const classes = net.units[net.layers];
    const out = this._alloc(4 * rows.count * classes);
    const status = net.deep
      ? net.deep.infer(rows, out, null, 0, 0)
      : this.exports.digitlab_predict(
      rows.starts,
      rows.cols,
      rows.vals,
      BigInt(rows.count),
      BigInt(net.layers),
      net.unitsAt,
      net.codes,
      net.kernelPointers,
      net.biasPointers,
      out,
    );
    const outputs = this._f32(out, rows.count * classes).slice();
    this._free(out, rows.starts, rows.cols, rows.vals);
    if (status !== 0) throw new Error("The engine could not allocate its prediction buffers.");
    return outputs;
  }

  /** A net with BatchNormalization's Adam slots and step count: { step, slots: { name: Float32Array } }. */
  getSlots() {
    const net = this._needNet();
    if (!net.deep) throw new Error("Only a net with BatchNormalization has optimizer slots here.");
    return net.deep.getSlots();
  }

  /** Sets them (as getSlots gives them), to go on from a saved state. */
  setSlots(state) {
    const net = this._needNet();
    if (!net.deep) throw new Error("Only a net with BatchNormalization has optimizer slots here.");
    net.deep.setSlots(state);
  }

  /* The loss's code and the cross-entropy clip, as the C code takes them (engine-deep.js uses them). */
  lossCode() {
    return LOSSES[this._needNet().loss];
  }
  clip() {
    return CROSSENTROPY_CLIP;
  }

  /** Ends the engine's Workers; the engine is not to be used after. */
  dispose() {
    for (const worker of this.workers) worker.terminate();
    this.workers = [];
    this.exports.digitlab_thread_workers(0);
  }
}
