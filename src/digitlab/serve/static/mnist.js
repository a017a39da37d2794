// MNIST in the browser: fetched once (gzip'ed raw uint8 arrays, digitlab.browser.mnist_asset), checked
// (byte count and SHA-256 of every array, against mnist/index.json) and only then kept in IndexedDB, so a
// second visit reads it from there. A truncated or corrupt download is reported and nothing is kept.
// IndexedDB, not the Cache API: it works on pages that are not a secure context too (http://laptop:8000).
//   import { loadMnist } from "./mnist.js";
//   const { arrays, fetched } = await loadMnist("static/mnist/", (message) => console.log(message));
//   arrays.x_train  // Uint8Array of 60000*784; shapes in arrays.shapes

const KEYS = ["x_train", "y_train", "x_test", "y_test"];
const DB_NAME = "digitlab-mnist";
const STORE = "arrays";

export class MnistError extends Error {}

function openStore() {
  return new Promise((resolve, reject) => {
    if (typeof indexedDB === "undefined") return resolve(null);
    const request = indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => resolve(null); // A private window may refuse storage: the page still trains.
    request.onblocked = () => reject(new MnistError("MNIST's storage is blocked by another tab of this page."));
  });
}

function stored(db, key) {
  if (!db) return Promise.resolve(undefined);
  return new Promise((resolve) => {
    const request = db.transaction(STORE).objectStore(STORE).get(key);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => resolve(undefined);
  });
}

function keep(db, key, value) {
  if (!db) return Promise.resolve(false);
  return new Promise((resolve) => {
    const transaction = db.transaction(STORE, "readwrite");
    transaction.objectStore(STORE).put(value, key);
    transaction.oncomplete = () => resolve(true);
    transaction.onerror = transaction.onabort = () => resolve(false);
  });
}

export async function sha256Hex(bytes) {
  if (globalThis.crypto && crypto.subtle) {
    const digest = await crypto.subtle.digest("SHA-256", bytes);
    return [...new Uint8Array(digest)].map((byte) => byte.toString(16).padStart(2, "0")).join("");
  }
  return sha256Fallback(bytes); // Pages that are not a secure context have no crypto.subtle.
}

// SHA-256 (FIPS 180-4) in plain JavaScript, for pages without crypto.subtle.
function sha256Fallback(bytes) {
  const K = new Uint32Array([
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
    0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
    0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
  ]);
  const hash = new Uint32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
  const length = bytes.length;
  const padded = new Uint8Array(Math.ceil((length + 9) / 64) * 64);
  padded.set(bytes);
  padded[length] = 0x80;
  const view = new DataView(padded.buffer);
  view.setUint32(padded.length - 8, Math.floor(length / 2 ** 29));
  view.setUint32(padded.length - 4, (length * 8) >>> 0);
  const w = new Uint32Array(64);
  const rotr = (x, n) => (x >>> n) | (x << (32 - n));
  for (let offset = 0; offset < padded.length; offset += 64) {
    for (let t = 0; t < 16; t++) w[t] = view.getUint32(offset + t * 4);
    for (let t = 16; t < 64; t++) {
      const s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >>> 3);
      const s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >>> 10);
      w[t] = (w[t - 16] + s0 + w[t - 7] + s1) >>> 0;
    }
    let [a, b, c, d, e, f, g, h] = hash;
    for (let t = 0; t < 64; t++) {
      const t1 = (h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[t] + w[t]) >>> 0;
      const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) >>> 0;
      [h, g, f, e, d, c, b, a] = [g, f, e, (d + t1) >>> 0, c, b, a, (t1 + t2) >>> 0];
    }
    [a, b, c, d, e, f, g, h].forEach((value, index) => (hash[index] = (hash[index] + value) >>> 0));
  }
  return [...hash].map((value) => value.toString(16).padStart(8, "0")).join("");
}

async function gunzip(response, expected) {
  if (typeof DecompressionStream === "undefined") throw new MnistError("This browser cannot decompress gzip (no DecompressionStream); use a current Chrome, Firefox or Safari.");
  const stream = response.body.pipeThrough(new DecompressionStream("gzip"));
  const out = new Uint8Array(expected);
  let filled = 0;
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (filled + value.length > expected) throw new MnistError("too many bytes");
    out.set(value, filled);
    filled += value.length;
  }
  if (filled !== expected) throw new MnistError(`${filled} bytes instead of ${expected}`);
  return out;
}

async function download(base, key, entry) {
  const url = `${base}${entry.file}`;
  let response;
  try {
    response = await fetch(url);
  } catch (error) {
    throw new MnistError(`MNIST's ${key} could not be downloaded (${error.message}); check the connection and reload.`);
  }
  if (!response.ok) throw new MnistError(`MNIST's ${key} could not be downloaded: ${url} answered ${response.status}.`);
  let bytes;
  try {
    bytes = await gunzip(response, entry.bytes);
  } catch (error) {
    throw new MnistError(`MNIST's ${key} arrived damaged or cut short (${error.message}); nothing was kept. Reload the page to fetch it again.`);
  }
  const digest = await sha256Hex(bytes);
  if (digest !== entry.sha256) {
    throw new MnistError(`MNIST's ${key} arrived with the wrong contents (SHA-256 ${digest.slice(0, 12)}…, expected ${entry.sha256.slice(0, 12)}…); nothing was kept. Reload the page to fetch it again.`);
  }
  return bytes;
}

// The four arrays, from IndexedDB when kept there (by their SHA-256), else downloaded, checked and kept.
// `fetched` lists the arrays that were downloaded this time; `bytes` their compressed size.
export async function loadMnist(base, onProgress = () => {}) {
  const db = await openStore();
  let index;
  try {
    const response = await fetch(`${base}index.json`, { cache: "no-cache" });
    if (!response.ok) throw new Error(`${response.status}`);
    index = await response.json();
    await keep(db, "index", index);
  } catch (error) {
    index = await stored(db, "index"); // Offline: the index kept on the last visit.
    if (!index) throw new MnistError(`MNIST's index (${base}index.json) could not be read (${error.message}); the page needs it once, online.`);
  }
  const arrays = { shapes: {} };
  const fetched = [];
  let bytes = 0;
  for (const key of KEYS) {
    const entry = index.arrays[key];
    arrays.shapes[key] = entry.shape;
    const kept = await stored(db, entry.sha256);
    if (kept instanceof Uint8Array && kept.length === entry.bytes) {
      arrays[key] = kept;
      continue;
    }
    onProgress(`Downloading MNIST's ${key} (${(entry.gzip_bytes / 1e6).toFixed(1)} MB, once)…`);
    arrays[key] = await download(base, key, entry);
    fetched.push(key);
    bytes += entry.gzip_bytes;
    await keep(db, entry.sha256, arrays[key]);
  }
  return { arrays, fetched, bytes, sha256: Object.fromEntries(KEYS.map((key) => [key, index.arrays[key].sha256])) };
}
