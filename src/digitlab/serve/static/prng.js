// digitlab's seeded initial weights for a run trained in the browser: xoshiro128** seeded by splitmix32,
// bit for bit as src/digitlab/browser/prng.py (a test compares the two), so that the native engine can
// repeat a browser run: glorot-uniform kernels, zero biases (docs/browser.md). The batch orders are
// digitlab train's own (engine.js's NumpyRandomState).
//   import { initialWeights } from "./prng.js";
//   const weights = initialWeights(seed, [784, 64, 10]);   // [Float32Array kernel, bias, kernel, bias]
export const WEIGHTS_STREAM = 0;
const STREAM_STEP = 0x6a09e667;

function rotl(value, shift) {
  return ((value << shift) | (value >>> (32 - shift))) >>> 0;
}

export class Xoshiro128 {
  constructor(seed, stream = 0) {
    if (!Number.isInteger(seed) || seed < 0 || seed >= 2 ** 32) throw new RangeError(`seed must be a whole number from 0 to 4294967295, got ${seed}.`);
    let mixer = (seed + Math.imul(stream, STREAM_STEP)) >>> 0;
    this.state = new Uint32Array(4);
    for (let index = 0; index < 4; index++) {
      mixer = (mixer + 0x9e3779b9) >>> 0;
      let z = mixer;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      this.state[index] = (z ^ (z >>> 16)) >>> 0;
    }
  }

  nextU32() {
    const s = this.state;
    const result = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }
}

// Glorot-uniform kernels (fan_in x fan_out, row after row) and zero biases, in Keras's get_weights order.
export function initialWeights(seed, layerSizes) {
  const generator = new Xoshiro128(seed, WEIGHTS_STREAM);
  const weights = [];
  for (let layer = 0; layer + 1 < layerSizes.length; layer++) {
    const [fanIn, fanOut] = [layerSizes[layer], layerSizes[layer + 1]];
    const limit = Math.sqrt(6 / (fanIn + fanOut));
    const kernel = new Float32Array(fanIn * fanOut);
    for (let index = 0; index < kernel.length; index++) {
      kernel[index] = ((generator.nextU32() >>> 8) / 16777216 * 2 - 1) * limit;
    }
    weights.push(kernel, new Float32Array(fanOut));
  }
  return weights;
}

// The Dropout seed of a run with seed `seed` (prng.py's dropout_seed): the first draw of stream 1.
export const DROPOUT_STREAM = 1;
export function dropoutSeed(seed) {
  return new Xoshiro128(seed, DROPOUT_STREAM).nextU32();
}

// The initial arrays in Keras's get_weights order: initialWeights, and after each Dense layer with a
// BatchNormalization (normed[layer]) gamma 1, beta 0, moving mean 0, moving variance 1 (prng.py's page_arrays).
export function pageArrays(seed, layerSizes, normed) {
  const dense = initialWeights(seed, layerSizes);
  const arrays = [];
  for (let layer = 0; layer + 1 < layerSizes.length; layer++) {
    arrays.push(dense[2 * layer], dense[2 * layer + 1]);
    if (normed[layer]) for (const value of [1, 0, 0, 1]) arrays.push(new Float32Array(layerSizes[layer + 1]).fill(value));
  }
  return arrays;
}
