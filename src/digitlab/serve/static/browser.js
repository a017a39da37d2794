// digitlab: the training panel: the page trains in the browser (wherever WebAssembly and Workers run: mode.js).
// The settings are checked with TrainConfig's own rules (rules.js, page.json); Train
// starts train-worker.js, which trains in a Worker with the WebAssembly engine; every epoch's logs and
// weights come back here: the curves gain a point, the 64 weight tiles are drawn from the first layer's
// weights (the server's colour scale, from page.json), the slider can show any epoch (every epoch's weights
// are kept in the page, float32) and the drawing pad is read by that epoch's network, here. A run can be
// kept: downloaded as a page-run JSON document (`digitlab import FILE` makes it a run folder) or sent to
// the server that served the page (POST api/runs). At its end the Worker computes the confusion matrix and
// the most confident mistakes on the validation images ("digitlab:evaluation", which live.js shows). Other
// modules follow a run through the events "digitlab:run-start", "digitlab:epoch", "digitlab:run-end" and
// "digitlab:kept" on document (classroom.js sends it to a class, handwriting.js scores the learner's own
// digits, live.js lists it beside the server's runs), and read drawings with prepare and probabilities.
// It runs past 450 lines as one concern, the training panel's run: its settings, the Worker's messages, the
// curves, tiles and slider they feed, and the pad read by the epoch shown.
// "digitlab:show" says whether this run (source "browser") or a server's run (live.js) is on show, and
// <html data-show> keeps the latest choice for a module that starts after it was made. The
// page's address holds the settings (TrainConfig's names, ?learning_rate=0.5&epochs=3) and `hide=loss,optimizer`
// hides those fields: a teacher's link opens the page ready to train.
import { check, loadRules } from "./rules.js";
import { arrayNames } from "./engine/engine-deep.js";

const $ = (id) => document.getElementById(id);
const BLANK = { seed: "random", train_limit: "all" };
const PAD_BACKGROUND = 20; // The pad's board (#14181f): its red level, the ink's zero.

let rules = null;
let worker = null;
let run = null; // { id, config, history, weights: [per epoch: Float32Array[]], status, engine, sha256, wallTime }
let follow = true;
let redraw = null;
// Whether this run is on show (not a server's run that live.js opened). live.js (a classic script) may open a
// server's run before this module has run at all, so the choice is also kept on <html data-show>, read here.
let onShow = document.documentElement.dataset.show !== "server";
const params = new URLSearchParams(location.search);
const hidden = new Set((params.get("hide") || "").split(",").map((name) => name.trim()).filter(Boolean));

function emptyHistory() {
  return Object.fromEntries(rules.history_keys.map((key) => [key, []]));
}

function say(message, isError = false) {
  const status = $("live-status");
  status.textContent = message;
  status.classList.toggle("error", isError);
}

// --- The form, from page.json ---------------------------------------------------------------------

function buildForm() {
  const fields = $("fields");
  fields.replaceChildren();
  Object.entries(rules.fields).forEach(([name, rule]) => {
    const wrapper = document.createElement("div");
    wrapper.className = "field";
    wrapper.dataset.field = name;
    const label = document.createElement("label");
    label.textContent = rule.label;
    label.htmlFor = `field-${name}`;
    label.title = rule.help;
    let input;
    if (rule.choices) {
      input = document.createElement("select");
      if (name !== "model") input.appendChild(new Option("the net's own", ""));
      const choices = name === "model" ? rule.choices.filter((model) => rules.browser_models.includes(model)) : rule.choices;
      choices.forEach((choice) => input.appendChild(new Option(choice.replaceAll("_", " "), choice)));
    } else {
      input = document.createElement("input");
      input.type = "text";
      input.inputMode = rule.type === "float" ? "decimal" : "numeric";
      input.autocomplete = "off";
    }
    input.id = `field-${name}`;
    input.name = name;
    input.title = rule.help;
    const error = document.createElement("p");
    error.className = "field-error";
    error.id = `error-${name}`;
    error.setAttribute("role", "alert");
    wrapper.append(label, input, error);
    wrapper.hidden = hidden.has(name);
    fields.appendChild(wrapper);
    const given = params.get(name);
    if (given !== null) input.value = given;
    else if (name === "model") input.value = "shallow";
    input.addEventListener("input", () => {
      clearErrors();
      if (name === "model") showDefaults();
      updateShareLink();
    });
    input.addEventListener("change", updateShareLink);
  });
  showDefaults();
  updateShareLink();
}

// The link to this setting: the page's address with the fields set (never a token), and `hide` kept.
function updateShareLink() {
  const query = new URLSearchParams();
  Object.entries(texts()).forEach(([name, text]) => text.trim() && query.set(name, text.trim()));
  if (hidden.size) query.set("hide", [...hidden].join(","));
  const url = `${location.origin}${location.pathname}${query.toString() ? `?${query}` : ""}`;
  $("share-link").value = url;
  history.replaceState(null, "", url);
}

function showDefaults() {
  const defaults = rules.model_defaults[$("field-model").value] || {};
  Object.entries(rules.fields).forEach(([name, rule]) => {
    const input = $(`field-${name}`);
    const own = name in defaults ? defaults[name] : rule.default;
    if (input.tagName === "SELECT") {
      const first = input.options[0];
      if (first && first.value === "" && own !== null) first.textContent = `${String(own).replaceAll("_", " ")} (net's)`;
    } else input.placeholder = own !== null && own !== undefined ? String(own) : BLANK[name] || "";
  });
}

function texts() {
  return Object.fromEntries(Object.keys(rules.fields).map((name) => [name, $(`field-${name}`).value]));
}

function clearErrors() {
  document.querySelectorAll(".field-error").forEach((error) => (error.textContent = ""));
  document.querySelectorAll(".field.bad").forEach((field) => field.classList.remove("bad"));
  $("live-status").classList.remove("error");
}

function showFieldError(field, sentence) {
  const error = $(`error-${field}`);
  if (error && !error.closest(".field").hidden) {
    error.textContent = sentence;
    error.closest(".field").classList.add("bad");
  }
  say(sentence, true);
}

// --- Training in the Worker -----------------------------------------------------------------------

function randomHex(bytes) {
  return [...crypto.getRandomValues(new Uint8Array(bytes))].map((byte) => byte.toString(16).padStart(2, "0")).join("");
}

function start(event) {
  event.preventDefault();
  clearErrors();
  const checked = check(rules, texts());
  if (checked.sentence) {
    showFieldError(checked.field, checked.sentence);
    return;
  }
  const config = { ...checked.config, validation: "test", seeds: 1, engine: "auto" };
  if (config.seed === null) config.seed = crypto.getRandomValues(new Uint32Array(1))[0] % 2 ** 31; // As digitlab train.
  run = { id: randomHex(16), config, history: emptyHistory(), weights: [], status: "running", engine: null, sha256: null, wallTime: 0 };
  follow = true;
  $("start").disabled = true;
  $("stop").disabled = false;
  $("download-run").disabled = $("send-run").disabled = true;
  $("keep-status").textContent = "";
  if (worker) worker.terminate();
  worker = new Worker(new URL("./train-worker.js", import.meta.url), { type: "module" });
  worker.onmessage = ({ data }) => onWorker(data);
  worker.onerror = (error) => failed(error.message || "the training Worker stopped");
  const threads = Math.max(1, Math.min(navigator.hardwareConcurrency || 1, 4));
  const gallery = rules.evaluation.gallery_size;
  const engineSettings = rules.engine_settings; // The deep net's BatchNormalization and Adam settings.
  worker.postMessage({ type: "start", config, mnist: new URL("mnist/", import.meta.url).href, threads, gallery, engineSettings });
  say("Starting…");
  document.dispatchEvent(new CustomEvent("digitlab:run-start", { detail: { run } }));
  document.documentElement.dataset.show = "browser";
  document.dispatchEvent(new CustomEvent("digitlab:show", { detail: { source: "browser", started: true } }));
}

function failed(message) {
  if (run) run.status = "failed";
  say(message, true);
  $("start").disabled = false;
  $("stop").disabled = true;
}

function describeEngine(engine) {
  const simd = engine.simd ? "WebAssembly SIMD128" : "WebAssembly without SIMD (this browser lacks it: the scalar build, slower)";
  const threads =
    engine.threads > 1
      ? `up to ${engine.threads} threads (one wherever that measures faster)`
      : crossOriginIsolated
        ? "one thread"
        : "one thread (this host does not send the COOP/COEP headers that threads need)";
  return `Training in this browser: ${simd}, ${threads}.`;
}

function onWorker(message) {
  if (!run) return;
  if (message.type === "status") onShow && say(message.message);
  else if (message.type === "ready") {
    run.engine = message.engine;
    run.sha256 = message.sha256;
    run.trainImages = message.trainImages;
    $("engine-note").hidden = false;
    $("engine-note").textContent = describeEngine(message.engine);
    const where = message.fetched.length ? `MNIST downloaded (${(message.bytes / 1e6).toFixed(1)} MB, kept for next time)` : "MNIST from this browser's storage";
    say(`Training on ${message.trainImages.toLocaleString("en")} images; ${where}.`);
  } else if (message.type === "epoch") {
    rules.history_keys.forEach((key) => run.history[key].push(message.logs[key]));
    run.weights.push(message.weights);
    run.wallTime = message.wallTime;
    if (onShow) say(`Epoch ${message.epoch} of ${run.config.epochs} took ${message.seconds.toFixed(2)} s.`);
    scheduleRedraw();
    document.dispatchEvent(new CustomEvent("digitlab:epoch", { detail: { run, epoch: message.epoch, seconds: message.seconds } }));
  } else if (message.type === "end") {
    run.status = message.status;
    run.slots = message.slots; // Adam's slots of a net with BatchNormalization (null for the others).
    run.wallTime = message.wallTime;
    $("start").disabled = false;
    $("stop").disabled = true;
    $("download-run").disabled = false;
    $("send-run").disabled = window.DigitlabMode.staticSite;
    if (onShow) say(
      message.status === "complete"
        ? `Done: ${message.epoch} epoch${message.epoch === 1 ? "" : "s"} in ${message.wallTime.toFixed(1)} s, val accuracy ${run.history.val_accuracy.at(-1).toFixed(4)}.`
        : `Stopped after epoch ${message.epoch} of ${run.config.epochs}; keep it below, or train again.`
    );
    scheduleRedraw();
    document.dispatchEvent(new CustomEvent("digitlab:run-end", { detail: { run } }));
  } else if (message.type === "evaluation") {
    const detail = { ...message.evaluation, run: "this browser's run", data: `the ${message.evaluation.data}` };
    document.dispatchEvent(new CustomEvent("digitlab:evaluation", { detail }));
  } else if (message.type === "error") failed(`The training stopped: ${message.message}`);
}

function stop() {
  if (worker) worker.postMessage({ type: "stop" });
  $("stop").disabled = true;
  say("Stopping after the epoch in progress…");
}

// --- Showing an epoch: curves, numbers, tiles, the pad ---------------------------------------------

function scheduleRedraw() {
  if (redraw === null) redraw = requestAnimationFrame(drawShown);
}

function drawShown() {
  redraw = null;
  if (!onShow) return;
  const history = run ? run.history : emptyHistory();
  const done = history.val_accuracy.length;
  const planned = run ? run.config.epochs : 1;
  const slider = $("epoch-slider");
  slider.max = String(Math.max(done, 1));
  slider.disabled = done < 2;
  if (follow) slider.value = String(done); // The newest epoch, until the slider is moved back.
  const epoch = done ? Math.min(parseInt(slider.value, 10) || done, done) : null;
  accuracyChart.draw(
    [
      { name: "accuracy", values: history.accuracy, className: "train" },
      { name: "val_accuracy", values: history.val_accuracy, className: "valid" },
    ],
    { epochs: planned, marker: epoch }
  );
  lossChart.draw(
    [
      { name: "loss", values: history.loss, className: "train" },
      { name: "val_loss", values: history.val_loss, className: "valid" },
    ],
    { epochs: planned, marker: epoch }
  );
  rules.history_keys.forEach((key) => ($(`n-${key}`).textContent = epoch ? format(history[key][epoch - 1]) : "–"));
  $("n-epoch").textContent = epoch ? `${epoch} / ${planned}` : "–";
  $("epoch-shown").textContent = epoch ? `${epoch} of ${planned}` : "–";
  if (!epoch) return;
  drawTiles(run.weights[epoch - 1][0], epoch);
  const weights = run.weights[epoch - 1];
  Pad.useLocal((canvas) => answer(canvas, weights, epoch), `Asking the network trained here, at epoch ${epoch}`);
}

function format(value) {
  return Number.isFinite(value) ? value.toFixed(4) : "–";
}

// The first layer's kernel (784 x units, row-major) as 28x28 tiles on one colour scale symmetric around 0,
// white between them: plots.inside.weight_tiles_png's picture, drawn here (palette and grid from page.json).
function drawTiles(kernel, epoch) {
  const units = kernel.length / 784;
  const [rows, columns] = rules.tiles.grid[run.config.model] || [Math.ceil(units / 8), 8];
  const gap = rules.tiles.gap;
  const step = 28 + gap;
  const canvas = $("tiles-canvas");
  canvas.width = columns * step - gap;
  canvas.height = rows * step - gap;
  const context = canvas.getContext("2d");
  const image = context.createImageData(canvas.width, canvas.height);
  image.data.fill(255);
  let limit = 0;
  for (const value of kernel) if (Number.isFinite(value)) limit = Math.max(limit, Math.abs(value));
  if (!(limit > 0)) limit = 1;
  const palette = rules.tiles.palette;
  for (let unit = 0; unit < units; unit++) {
    const top = Math.floor(unit / columns) * step;
    const left = (unit % columns) * step;
    for (let pixel = 0; pixel < 784; pixel++) {
      const value = Number.isFinite(kernel[pixel * units + unit]) ? kernel[pixel * units + unit] : 0;
      const level = Math.round((Math.min(Math.max(value / limit, -1), 1) + 1) * 127);
      const offset = ((top + Math.floor(pixel / 28)) * canvas.width + left + (pixel % 28)) * 4;
      [image.data[offset], image.data[offset + 1], image.data[offset + 2]] = palette[level];
    }
  }
  context.putImageData(image, 0, 0);
  canvas.hidden = false;
  canvas.dataset.epoch = String(epoch);
  $("tiles").hidden = true;
  $("tiles-caption").textContent = `The first layer's weights after epoch ${epoch}: one 28×28 tile per neuron, one colour scale (red excites, blue inhibits).`;
}

// --- Reading the drawing here -----------------------------------------------------------------------

// The drawing as MNIST's 28x28 field: ink cropped, its longer side scaled to 20 pixels, centred on its centre
// of mass (imaging.center_like_mnist's steps, without its stroke-width correction). Null without ink.
export function prepare(canvas) {
  const { width, height } = canvas;
  const source = canvas.getContext("2d").getImageData(0, 0, width, height).data;
  const corners = [0, width - 1, (height - 1) * width, height * width - 1].map((index) => source[index * 4]);
  const light = corners.reduce((sum, value) => sum + value, 0) / 4 > 127.5; // An uploaded picture: dark ink.
  const background = light ? 255 : PAD_BACKGROUND;
  const ink = new Float32Array(width * height);
  let top = height, bottom = -1, left = width, right = -1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const index = y * width + x;
      const grey = (source[index * 4] + source[index * 4 + 1] + source[index * 4 + 2]) / 3;
      const value = Math.max(0, light ? background - grey : grey - background) / (light ? 255 : 255 - PAD_BACKGROUND);
      ink[index] = value > 0.12 ? value : 0;
      if (ink[index] > 0) [top, bottom, left, right] = [Math.min(top, y), Math.max(bottom, y), Math.min(left, x), Math.max(right, x)];
    }
  }
  if (bottom < 0) return null;
  const [cropWidth, cropHeight] = [right - left + 1, bottom - top + 1];
  const scale = 20 / Math.max(cropWidth, cropHeight);
  const [smallWidth, smallHeight] = [Math.max(1, Math.round(cropWidth * scale)), Math.max(1, Math.round(cropHeight * scale))];
  const crop = new OffscreenCanvas(cropWidth, cropHeight);
  const cropImage = new ImageData(cropWidth, cropHeight);
  for (let y = 0; y < cropHeight; y++) {
    for (let x = 0; x < cropWidth; x++) {
      const level = Math.round(ink[(top + y) * width + left + x] * 255);
      const offset = (y * cropWidth + x) * 4;
      cropImage.data[offset] = cropImage.data[offset + 1] = cropImage.data[offset + 2] = level;
      cropImage.data[offset + 3] = 255;
    }
  }
  crop.getContext("2d").putImageData(cropImage, 0, 0);
  const small = new OffscreenCanvas(smallWidth, smallHeight);
  const smallContext = small.getContext("2d");
  smallContext.imageSmoothingQuality = "high";
  smallContext.drawImage(crop, 0, 0, smallWidth, smallHeight);
  const levels = smallContext.getImageData(0, 0, smallWidth, smallHeight).data;
  let strongest = 0, total = 0, rowMass = 0, columnMass = 0;
  for (let y = 0; y < smallHeight; y++) {
    for (let x = 0; x < smallWidth; x++) {
      const value = levels[(y * smallWidth + x) * 4];
      strongest = Math.max(strongest, value);
      total += value;
      rowMass += value * y;
      columnMass += value * x;
    }
  }
  if (!strongest) return null;
  const placeTop = Math.min(Math.max(Math.round(13.5 - rowMass / total), 0), 28 - smallHeight);
  const placeLeft = Math.min(Math.max(Math.round(13.5 - columnMass / total), 0), 28 - smallWidth);
  const field = new Uint8Array(784);
  for (let y = 0; y < smallHeight; y++) {
    for (let x = 0; x < smallWidth; x++) {
      field[(placeTop + y) * 28 + placeLeft + x] = Math.round((levels[(y * smallWidth + x) * 4] / strongest) * 255);
    }
  }
  return field;
}

const ACTIVATE = {
  sigmoid: (value) => 1 / (1 + Math.exp(-value)),
  relu: (value) => Math.max(0, value),
  tanh: Math.tanh,
  linear: (value) => value,
  elu: (value) => (value > 0 ? value : Math.expm1(value)),
  selu: (value) => 1.0507009873554805 * (value > 0 ? value : 1.6732632423543772 * Math.expm1(value)),
};

// The network's ten probabilities for 784 pixels (0-255): Dense layers, the config's activation, softmax;
// in the deep net each hidden layer's BatchNormalization with its moving statistics, as Keras predicts.
export function probabilities(weights, pixels, activation = run.config.activation, config = run.config) {
  return classifier(weights, activation, config)(pixels);
}

// probabilities' network, read once from an epoch's weights: a function of 784 pixels (0-255) to the ten
// probabilities. The handwriting set scores its digits with one per epoch (the layers' names, the
// BatchNormalization's scale and shift and the activation are looked up once, not once a digit).
export function classifier(weights, activation = run.config.activation, config = run.config) {
  const names = arrayNames(normedLayers(config));
  const epsilon = config.batch_norm ? rules.engine_settings.batch_norm.epsilon : 0;
  const activate = ACTIVATE[activation];
  const layers = [];
  for (let layer = 0; layer < config.units.length + 1; layer++) {
    const at = names.indexOf(`dense_${layer}/kernel`);
    const [kernel, bias] = [weights[at], weights[at + 1]];
    let norm = null;
    if (names[at + 2] === `dense_${layer}/gamma`) {
      const [gamma, beta, mean, variance] = weights.slice(at + 2, at + 6);
      const scale = Float64Array.from(gamma, (value, unit) => value / Math.sqrt(variance[unit] + epsilon));
      norm = { scale, shift: Float64Array.from(beta, (value, unit) => value - mean[unit] * scale[unit]) };
    }
    layers.push({ kernel, bias, units: bias.length, norm, hidden: layer < config.units.length });
  }
  return (pixels) => {
    let values = new Float64Array(pixels.length);
    for (let input = 0; input < pixels.length; input++) values[input] = pixels[input] / 255;
    for (const { kernel, bias, units, norm, hidden } of layers) {
      const out = Float64Array.from(bias);
      for (let input = 0; input < values.length; input++) {
        const value = values[input];
        if (value === 0) continue;
        const row = input * units;
        for (let unit = 0; unit < units; unit++) out[unit] += value * kernel[row + unit];
      }
      if (hidden) for (let unit = 0; unit < units; unit++) out[unit] = activate(out[unit]);
      if (norm) for (let unit = 0; unit < units; unit++) out[unit] = out[unit] * norm.scale[unit] + norm.shift[unit];
      values = out;
    }
    let largest = -Infinity;
    for (const value of values) largest = Math.max(largest, value);
    const exps = values.map((value) => Math.exp(value - largest));
    const sum = exps.reduce((total, value) => total + value, 0);
    return [...exps].map((value) => value / sum);
  };
}

function answer(canvas, weights, epoch) {
  const pixels = prepare(canvas);
  if (!pixels) return null;
  const probs = probabilities(weights, pixels);
  const ranked = probs.map((probability, digit) => ({ digit, probability })).sort((a, b) => b.probability - a.probability);
  const rows = [];
  for (let y = 0; y < 28; y++) rows.push([...pixels.subarray(y * 28, y * 28 + 28)]);
  return { digit: ranked[0].digit, top3: ranked.slice(0, 3), probabilities: probs, pixels: rows, epoch, source: "browser" };
}

// --- Keeping the run ------------------------------------------------------------------------------

export function base64(array) {
  const bytes = new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
  let text = "";
  for (let start = 0; start < bytes.length; start += 0x8000) text += String.fromCharCode(...bytes.subarray(start, start + 0x8000));
  return btoa(text);
}

// Which layers a BatchNormalization follows (the train Worker's normedLayers): the hidden ones of a
// config with batch_norm.
function normedLayers(config) {
  return [...config.units.map(() => !!config.batch_norm), false];
}

// One epoch's weights as the page run's document holds them: Keras's order and names, base64 float32.
export function encodeWeights(config, weights) {
  const sizes = [784, ...config.units, 10];
  const names = arrayNames(normedLayers(config));
  return weights.map((array, index) => {
    const layer = Number(names[index].split("/")[0].slice("dense_".length));
    const kernel = names[index].endsWith("/kernel");
    return { name: names[index], shape: kernel ? [sizes[layer], sizes[layer + 1]] : [sizes[layer + 1]], base64: base64(array) };
  });
}

// Adam's slots (the deep net's) as the document holds them: their native names, base64 float32; or none.
function encodeSlots(slots) {
  if (!slots || !Object.keys(slots).length) return undefined;
  return Object.entries(slots).map(([name, array]) => ({ name, shape: [array.length], base64: base64(array) }));
}

// The page run's head: what a class's server gets first (POST api/class/runs), before any epoch.
export function runHead(run) {
  return {
    format: "digitlab-page-run",
    version: 1,
    run_id: run.id,
    config: run.config,
    data_sha256: run.sha256,
    engine: `${run.engine.build} (${run.engine.threads} thread${run.engine.threads > 1 ? "s" : ""})`,
    browser: navigator.userAgent,
  };
}

function pageRun() {
  return {
    ...runHead(run),
    history: run.history,
    weights: encodeWeights(run.config, run.weights.at(-1)),
    slots: encodeSlots(run.slots),
    status: run.status,
    wall_time_s: run.wallTime,
  };
}

function download() {
  const blob = new Blob([JSON.stringify(pageRun())], { type: "application/json" });
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = `page-run-${run.config.model}-seed${run.config.seed}-${run.id.slice(0, 12)}.json`;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  $("keep-status").textContent = `Downloaded ${link.download}; \`digitlab import ${link.download}\` makes it a run folder.`;
}

async function send() {
  $("send-run").disabled = true;
  const status = $("keep-status");
  status.textContent = "Sending…";
  try {
    const response = await fetch("api/runs", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(pageRun()) });
    const body = await response.json().catch(() => ({ detail: `The server answered ${response.status}.` }));
    status.textContent = response.ok ? `Kept on the server as ${body.run}: \`digitlab evaluate RUNS/${body.run}\` opens it.` : body.detail;
    status.classList.toggle("error", !response.ok);
    status.dataset.run = response.ok ? body.run : "";
    if (response.ok) document.dispatchEvent(new CustomEvent("digitlab:kept", { detail: { run: body.run } }));
  } catch (error) {
    status.textContent = `Could not reach the server (${error.message}); download the run instead.`;
  } finally {
    $("send-run").disabled = false;
  }
}

// --- Start-up -------------------------------------------------------------------------------------

const accuracyChart = Charts.lineChart($("accuracy-chart"), { yMax: 1 });
const lossChart = Charts.lineChart($("loss-chart"), { yMax: null });

async function init() {
  if (window.DigitlabMode.trainHere !== "browser") return;
  if (!window.DigitlabMode.staticSite) {
    // A server that keeps no runs (digitlab serve's API alone, one network) offers the drawing page only.
    const health = await healthLoaded;
    if (!health || !health.runs) return;
  }
  try {
    rules = await loadRules(new URL("page.json", import.meta.url).href);
  } catch (error) {
    say(error.message, true);
    return;
  }
  $("train-card").hidden = false;
  $("keep").hidden = false;
  $("send-run").hidden = window.DigitlabMode.staticSite;
  $("train-title").textContent = "Train it, in this browser";
  buildForm();
  if (onShow) say("Choose the settings and press Start: the network trains in this browser.");
  drawShown();
  $("train-form").addEventListener("submit", start);
  $("stop").addEventListener("click", stop);
  $("download-run").addEventListener("click", download);
  $("send-run").addEventListener("click", send);
  $("copy-link").addEventListener("click", () => navigator.clipboard.writeText($("share-link").value).catch(() => {}));
  $("epoch-slider").addEventListener("input", () => {
    if (!onShow) return; // live.js moves a server's run.
    follow = parseInt($("epoch-slider").value, 10) >= parseInt($("epoch-slider").max, 10);
    scheduleRedraw();
  });
  if (window.DigitlabMode.staticSite && "serviceWorker" in navigator) {
    navigator.serviceWorker.register("sw.js").catch(() => {}); // Offline after the first visit, where allowed.
  }
}

// live.js opens a server's run (source "server"), or shows this run again (source "browser").
document.addEventListener("digitlab:show", ({ detail }) => {
  onShow = detail.source === "browser";
  if (!onShow || !run) return;
  if (!detail.started) say(run.status === "running" ? `Training in this browser: epoch ${run.history.val_accuracy.length} of ${run.config.epochs}.` : `This browser's run: ${run.status}.`);
  scheduleRedraw();
});

init();
