// digitlab: your own handwriting as a test set. Draw a digit on this panel's pad, say which digit it is,
// Add: the drawing is kept in this browser (localStorage), as a PNG of the pad and the 28x28 field the
// page's preprocessing makes of it (browser.js's prepare, imaging.py's steps). While a network trains here,
// every epoch's network reads every kept digit: the accuracy shows beside MNIST's val accuracy, and the
// digits it gets wrong are marked. The set downloads as one small JSON file (Load reads it again) or as
// PNG pictures named digit-LABEL-N.png that `digitlab predict RUN FILE` reads. Nothing leaves the browser
// unless the learner sends it: classroom.js sends only the accuracy, with a run.
//   import { scoreEpoch } from "./handwriting.js";   // { accuracy, wrong, count, milliseconds } for a run's epoch
import { classifier, prepare } from "./browser.js";

const $ = (id) => document.getElementById(id);
const STORE = "digitlab-handwriting";
const FORMAT = "digitlab-handwriting";
const BOARD = "#14181f";
const PAD_SIZE = 280;
const BRUSH = PAD_SIZE * 0.072; // The main pad's brush, to scale.

let digits = []; // { label, png (data URL of the pad), pixels (Uint8Array of 784) }
const scores = new Map(); // "runId/epoch" -> { accuracy, wrong, count }
let shownScore = null;

function fromBase64(text) {
  return Uint8Array.from(atob(text), (character) => character.charCodeAt(0));
}

function toBase64(bytes) {
  return btoa(String.fromCharCode(...bytes));
}

function save() {
  try {
    localStorage.setItem(STORE, JSON.stringify(documentOf()));
  } catch (error) {
    say(`Could not keep the set in this browser (${error.message}); download it instead.`, true);
  }
}

function documentOf() {
  return { format: FORMAT, version: 1, digits: digits.map((digit) => ({ label: digit.label, png: digit.png, pixels: toBase64(digit.pixels) })) };
}

// A set read back (from localStorage or a downloaded file), checked; throws a sentence if it is not one.
function readSet(value) {
  if (!value || value.format !== FORMAT || !Array.isArray(value.digits)) throw new Error("This is not a handwriting set saved by digitlab's page.");
  return value.digits.map((digit, index) => {
    const pixels = typeof digit.pixels === "string" ? fromBase64(digit.pixels) : null;
    if (!Number.isInteger(digit.label) || digit.label < 0 || digit.label > 9 || !pixels || pixels.length !== 784 || typeof digit.png !== "string" || !digit.png.startsWith("data:image/png;base64,")) {
      throw new Error(`Digit ${index + 1} of the set is damaged (a label 0-9, a PNG and 784 pixels are expected).`);
    }
    return { label: digit.label, png: digit.png, pixels };
  });
}

function say(message, isError = false) {
  const status = $("hw-status");
  status.textContent = message;
  status.classList.toggle("error", isError);
}

// --- The pad --------------------------------------------------------------------------------------

const pad = $("hw-pad");
const context = pad.getContext("2d");
let last = null;
let drawing = false;
let inked = false;

function clearPad() {
  context.fillStyle = BOARD;
  context.fillRect(0, 0, pad.width, pad.height);
  inked = false;
}

function pointFrom(event) {
  const box = pad.getBoundingClientRect();
  return { x: ((event.clientX - box.left) * pad.width) / box.width, y: ((event.clientY - box.top) * pad.height) / box.height };
}

function strokeTo(point) {
  context.strokeStyle = context.fillStyle = "#fff";
  context.lineWidth = BRUSH;
  context.lineCap = context.lineJoin = "round";
  context.beginPath();
  if (last === null) {
    context.arc(point.x, point.y, BRUSH / 2, 0, Math.PI * 2);
    context.fill();
  } else {
    context.moveTo(last.x, last.y);
    context.lineTo(point.x, point.y);
    context.stroke();
  }
  last = point;
  inked = true;
}

pad.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  drawing = true;
  last = null;
  strokeTo(pointFrom(event));
});
pad.addEventListener("pointermove", (event) => drawing && strokeTo(pointFrom(event)));
["pointerup", "pointercancel"].forEach((name) => pad.addEventListener(name, () => (drawing = false)));

function add() {
  const label = parseInt($("hw-label").value, 10);
  const pixels = inked ? prepare(pad) : null;
  if (!pixels) {
    say("Draw a digit on the pad first.", true);
    return;
  }
  digits.push({ label, png: pad.toDataURL("image/png"), pixels });
  save();
  clearPad();
  $("hw-label").value = String((label + 1) % 10); // The next digit, for a set of ten of each.
  say(`Added a ${label}; the set holds ${digits.length} digits.`);
  render();
}

// --- Scoring --------------------------------------------------------------------------------------

export function scoreEpoch(run, epoch) {
  if (!digits.length || !run.weights[epoch - 1]) return null;
  const key = `${run.id}/${epoch}/${digits.length}`;
  if (!scores.has(key)) {
    const started = performance.now();
    const network = classifier(run.weights[epoch - 1], run.config.activation, run.config);
    const wrong = [];
    digits.forEach((digit, index) => {
      const probs = network(digit.pixels);
      const said = probs.indexOf(Math.max(...probs));
      if (said !== digit.label) wrong.push({ index, said });
    });
    const milliseconds = performance.now() - started; // The scoring's own time (scripts/browser_bench.py reads it).
    scores.set(key, { accuracy: (digits.length - wrong.length) / digits.length, wrong, count: digits.length, epoch, milliseconds });
  }
  return scores.get(key);
}

function showScore(score) {
  shownScore = score;
  const number = $("n-handwriting");
  if (number) number.textContent = score ? score.accuracy.toFixed(4) : "–";
  if (score) {
    $("hw-score").textContent = `After epoch ${score.epoch}: ${Math.round(score.accuracy * score.count)} of ${score.count} of your digits read right (${(100 * score.accuracy).toFixed(0)}%); the wrong ones are marked.`;
  }
  render();
}

// --- The set's grid, files ------------------------------------------------------------------------

function render() {
  const grid = $("hw-grid");
  grid.replaceChildren();
  const wrong = new Map((shownScore && shownScore.count === digits.length ? shownScore.wrong : []).map((item) => [item.index, item.said]));
  digits.forEach((digit, index) => {
    const cell = document.createElement("figure");
    cell.className = "hw-digit";
    cell.dataset.index = String(index);
    const image = document.createElement("img");
    image.src = digit.png;
    image.alt = `your ${digit.label}`;
    image.width = image.height = 42;
    const caption = document.createElement("figcaption");
    caption.textContent = wrong.has(index) ? `${digit.label} → ${wrong.get(index)}` : String(digit.label);
    cell.classList.toggle("wrong", wrong.has(index));
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "hw-remove";
    remove.textContent = "×";
    remove.title = "Remove this digit";
    remove.addEventListener("click", () => {
      digits.splice(index, 1);
      save();
      render();
    });
    cell.append(image, caption, remove);
    grid.appendChild(cell);
  });
  const counts = Array.from({ length: 10 }, (_, label) => digits.filter((digit) => digit.label === label).length);
  $("hw-count").textContent = `${digits.length} digits (${counts.map((count, label) => `${label}: ${count}`).join(", ")})`;
  $("hw-download").disabled = $("hw-pngs").disabled = !digits.length;
}

function saveFile(blob, name) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

function download() {
  saveFile(new Blob([JSON.stringify(documentOf())], { type: "application/json" }), "my-handwriting.json");
  say(`Downloaded my-handwriting.json (${digits.length} digits); Load set reads it again.`);
}

function downloadPngs() {
  const seen = new Map();
  for (const digit of digits) {
    const count = (seen.get(digit.label) || 0) + 1;
    seen.set(digit.label, count);
    // Decoded here: the page's Content-Security-Policy lets it fetch from its own server only, not data: URLs.
    const bytes = fromBase64(digit.png.slice("data:image/png;base64,".length));
    saveFile(new Blob([bytes], { type: "image/png" }), `digit-${digit.label}-${count}.png`);
  }
  say(`Downloaded ${digits.length} PNGs (digit-LABEL-N.png): digitlab predict RUN digit-3-1.png reads one.`);
}

async function load(event) {
  const file = event.target.files[0];
  event.target.value = "";
  if (!file) return;
  try {
    digits = readSet(JSON.parse(await file.text()));
  } catch (error) {
    say(`${file.name}: ${error.message}`, true);
    return;
  }
  save();
  scores.clear();
  shownScore = null;
  say(`Loaded ${digits.length} digits from ${file.name}.`);
  render();
}

function init() {
  clearPad();
  try {
    const kept = localStorage.getItem(STORE);
    if (kept) digits = readSet(JSON.parse(kept));
  } catch (error) {
    say(`The set kept in this browser could not be read (${error.message}); it starts empty.`, true);
  }
  $("hw-add").addEventListener("click", add);
  $("hw-clear").addEventListener("click", clearPad);
  $("hw-download").addEventListener("click", download);
  $("hw-pngs").addEventListener("click", downloadPngs);
  $("hw-load").addEventListener("change", load);
  document.addEventListener("digitlab:epoch", ({ detail }) => {
    const started = performance.now();
    const score = scoreEpoch(detail.run, detail.epoch);
    showScore(score);
    // A benchmark's hook, there only when scripts/browser_bench.py puts the list in the page: each epoch's
    // scoring time, and the time with the set's grid rebuilt (its marks) too.
    if (score && Array.isArray(window.__digitlabHandwritingTimes)) {
      window.__digitlabHandwritingTimes.push({ epoch: detail.epoch, count: score.count, scoring: score.milliseconds, shown: performance.now() - started });
    }
  });
  document.addEventListener("digitlab:run-start", () => showScore(null));
  render();
  if (window.DigitlabMode.trainHere === "browser") $("hw-card").hidden = false;
}

init();
