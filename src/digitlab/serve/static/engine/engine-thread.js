/* One of the engine's threads (engine.js starts threads - 1 of them, in a browser's Workers or node's
 * worker_threads): an instance of engine-threads.wasm on the engine's shared memory, with a stack of its own,
 * that waits on its slot for _wasm.c's pthread_create to hand it a function, runs it, and waits again. It
 * never returns to its event loop: the engine ends it with terminate(). */

const inNode = typeof process !== "undefined" && !!(process.versions && process.versions.node);

async function start({ module, memory, slot, stackTop }, reply) {
  let instance;
  try {
    instance = await WebAssembly.instantiate(module, { env: { memory, now_ms: () => performance.now() } });
    instance.exports.__stack_pointer.value = stackTop;
  } catch (error) {
    reply({ error: String(error) });
    return;
  }
  reply({ ready: slot });
  const exports = instance.exports;
  /* The slots are in the module's static data, below the heap: this view stays valid as the memory grows. */
  const states = new Int32Array(memory.buffer);
  const at = exports.digitlab_thread_slot(slot) >> 2;
  const TAKEN = 1;
  for (;;) {
    const state = Atomics.load(states, at);
    if (state === TAKEN) exports.digitlab_thread_run(slot);
    else Atomics.wait(states, at, state);
  }
}

if (inNode) {
  const { parentPort } = await import("node:worker_threads");
  parentPort.once("message", (message) => start(message, (reply) => parentPort.postMessage(reply)));
} else {
  self.onmessage = (event) => start(event.data, (reply) => self.postMessage(reply));
}
