// digitlab's seeded random numbers for a run trained in the browser: xoshiro128** seeded by splitmix32,
// bit for bit as src/digitlab/browser/prng.py (a test compares the two), so that the native engine can
// repeat a browser run. Stream 0 of a seed gives the glorot-uniform initial kernels (biases start at 0),
// stream 1 one Fisher-Yates order of the training images per epoch (docs/browser.md).
//   import { initialWeights, BatchOrders } from "./prng.js";
//   const weights = initialWeights(seed, [784, 64, 10]);   // [Float32Array kernel, bias, kernel, bias]
//   const orders = new BatchOrders(seed, 60000); orders.next()  // an Int32Array, each epoch in turn
export const WEIGHTS_STREAM = 0;
export const ORDERS_STREAM = 1;
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

  // A whole number in [0, bound): the high 32 bits of u32 * bound (exact in a double for bound < 2**21).
  below(bound) {
    return Math.floor((this.nextU32() * bound) / 4294967296);
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

// Each epoch's order of the `count` training images: Fisher-Yates from the last index down, one stream.
export class BatchOrders {
  constructor(seed, count) {
    this.generator = new Xoshiro128(seed, ORDERS_STREAM);
    this.count = count;
  }

  next() {
    const order = new Int32Array(this.count);
    for (let index = 0; index < this.count; index++) order[index] = index;
    for (let index = this.count - 1; index > 0; index--) {
      const other = this.generator.below(index + 1);
      const kept = order[index];
      order[index] = order[other];
      order[other] = kept;
    }
    return order;
  }
}
