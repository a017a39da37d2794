// digitlab drawing page: draw on the canvas with mouse, pen or finger (pointer events);
// the picture is sent to POST /api/predict while you draw (throttled, one request in
// flight), and the answer fills the verdict, the ten-bar chart and the 28x28 preview.
// The network asked is the served one, or the run and epoch of a server's run on show
// (live.js calls Pad.ask({ run, epoch, label })), so the slider's epoch answers. When the page trains in
// the browser (browser.js), Pad.useLocal(ask) makes the drawing be read there: no request at all.
"use strict";

const pad = document.getElementById("pad");
const context = pad.getContext("2d");
const seen = document.getElementById("seen");
const seenContext = seen.getContext("2d");
const chart = document.getElementById("chart");
const digitView = document.getElementById("digit");
const confidenceView = document.getElementById("confidence");
const runnerUpView = document.getElementById("runner-up");
const timingView = document.getElementById("timing");
const statusView = document.getElementById("status");
const hint = document.getElementById("pad-hint");
const askingView = document.getElementById("asking");
const drawArea = document.getElementById("draw-area");

const BOARD = "#14181f";
const BRUSH = pad.width * 0.072; // About MNIST's stroke width once the digit is scaled to 20 pixels.
const THROTTLE_MS = 120;
// The drawing is sent at a quarter of the board's size: plenty for a 20-pixel digit,
// and sixteen times fewer pixels for the server to decode.
const SEND_SIZE = 140;
const sendCanvas = document.createElement("canvas");
sendCanvas.width = sendCanvas.height = SEND_SIZE;
const sendContext = sendCanvas.getContext("2d");
sendContext.imageSmoothingQuality = "high";

let drawing = false;
let hasInk = false;
let last = null;
let timer = null;
let inFlight = false;
let pending = false;
let uploaded = false; // The board shows an uploaded picture; drawing starts afresh.
let sequence = 0; // Bumped by every clear, so answers for an older drawing are dropped.
let target = null; // { run, epoch, label }: the network to ask; null asks the served one.
let lastSent = null; // The last picture sent, so a change of network asks it again.
let local = null; // (canvas) => answer, or null: set by browser.js, which reads the drawing in the page.

// The chart: one bar and one label per digit.
const bars = [];
for (let digit = 0; digit < 10; digit++) {
  const bar = document.createElement("div");
  bar.className = "bar";
  bar.setAttribute("role", "listitem");
  bar.dataset.digit = String(digit);
  bar.innerHTML = '<span class="value"></span><div class="fill"></div>';
  chart.appendChild(bar);
  bars.push(bar);
}
const labels = document.createElement("div");
labels.className = "labels";
labels.innerHTML = Array.from({ length: 10 }, (_, digit) => `<span>${digit}</span>`).join("");
chart.after(labels);

function clearBoard() {
  context.fillStyle = BOARD;
  context.fillRect(0, 0, pad.width, pad.height);
}

function showStatus(message, isError = false) {
  statusView.textContent = message;
  statusView.classList.toggle("error", isError);
}

function resetResult() {
  digitView.textContent = "–";
  confidenceView.textContent = "No digit yet";
  runnerUpView.textContent = "Start drawing on the left.";
  timingView.textContent = "";
  bars.forEach((bar) => {
    bar.classList.remove("top");
    bar.querySelector(".fill").style.height = "0%";
    bar.querySelector(".value").style.bottom = "0.3rem";
    bar.querySelector(".value").textContent = "";
    bar.setAttribute("aria-label", `${bar.dataset.digit}: no prediction`);
  });
  seenContext.fillStyle = "#000";
  seenContext.fillRect(0, 0, 28, 28);
}

function clearAll() {
  sequence += 1;
  uploaded = false;
  hasInk = false;
  lastSent = null;
  clearTimeout(timer);
  timer = null;
  pending = false;
  clearBoard();
  hint.classList.remove("hidden");
  resetResult();
  showStatus("");
}

function pointFrom(event) {
  const box = pad.getBoundingClientRect();
  return {
    x: ((event.clientX - box.left) * pad.width) / box.width,
    y: ((event.clientY - box.top) * pad.height) / box.height,
  };
}

function strokeTo(point) {
  context.strokeStyle = "#fff";
  context.fillStyle = "#fff";
  context.lineWidth = BRUSH;
  context.lineCap = "round";
  context.lineJoin = "round";
  if (last === null) {
    context.beginPath();
    context.arc(point.x, point.y, BRUSH / 2, 0, Math.PI * 2);
    context.fill();
  } else {
    context.beginPath();
    context.moveTo(last.x, last.y);
    context.lineTo(point.x, point.y);
    context.stroke();
  }
  last = point;
  if (!hasInk) {
    hasInk = true;
    hint.classList.add("hidden");
  }
  schedule();
}

pad.addEventListener("pointerdown", (event) => {
  if (event.button !== undefined && event.button > 0) return;
  event.preventDefault();
  if (uploaded) clearAll();
  pad.setPointerCapture(event.pointerId);
  drawing = true;
  last = null;
  strokeTo(pointFrom(event));
});

pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  event.preventDefault();
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  (events.length ? events : [event]).forEach((each) => strokeTo(pointFrom(each)));
});

function endStroke() {
  if (!drawing) return;
  drawing = false;
  last = null;
  flush(); // The stroke is finished: ask at once rather than waiting for the throttle.
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);
pad.addEventListener("lostpointercapture", endStroke);

// Throttle: the first change starts a short timer; when it fires, the current
// picture is sent. Only one request is in flight; changes meanwhile send once more after it.
function schedule() {
  if (timer === null) timer = setTimeout(flush, THROTTLE_MS);
}

function flush() {
  clearTimeout(timer);
  timer = null;
  if (!hasInk) return;
  if (local) {
    askLocally();
    return;
  }
  if (inFlight) {
    pending = true;
    return;
  }
  sendContext.drawImage(pad, 0, 0, SEND_SIZE, SEND_SIZE);
  sendCanvas.toBlob((blob) => blob && send(blob, "drawing.png"), "image/png");
}

function askLocally() {
  const started = performance.now();
  const answer = local(pad);
  if (!answer) return;
  showResult(answer, performance.now() - started, NaN);
  timingView.textContent = `read in this browser in ${(performance.now() - started).toFixed(1)} ms`;
}

function predictUrl() {
  if (!target) return "/api/predict";
  const query = new URLSearchParams({ run: target.run });
  if (target.epoch) query.set("epoch", String(target.epoch));
  return `/api/predict?${query}`;
}

async function send(blob, name) {
  const mine = sequence;
  inFlight = true;
  pending = false;
  lastSent = { blob, name };
  const started = performance.now();
  try {
    const form = new FormData();
    form.append("file", blob, name);
    const response = await fetch(predictUrl(), { method: "POST", body: form });
    const answer = await response.json();
    if (mine !== sequence) return;
    if (!response.ok) {
      showStatus(answer.detail || `The server answered ${response.status}.`, true);
      return;
    }
    const serverMs = parseFloat(response.headers.get("X-Process-Time-Ms"));
    showResult(answer, performance.now() - started, serverMs);
    showStatus("");
  } catch (error) {
    if (mine === sequence) showStatus(`Could not reach the server (${error.message}).`, true);
  } finally {
    inFlight = false;
    if (pending && mine === sequence) {
      if (uploaded && lastSent) send(lastSent.blob, lastSent.name);
      else flush();
    }
  }
}

function percent(probability) {
  return `${(probability * 100).toFixed(probability >= 0.995 || probability < 0.001 ? 0 : 1)}%`;
}

function showResult(answer, roundTripMs, serverMs) {
  const [best, second] = answer.top3;
  if (digitView.textContent !== String(answer.digit)) {
    digitView.classList.add("pulse");
    setTimeout(() => digitView.classList.remove("pulse"), 150);
  }
  digitView.textContent = String(answer.digit);
  confidenceView.textContent = `${percent(best.probability)} sure it is a ${best.digit}`;
  runnerUpView.textContent = `Next best: ${second.digit} (${percent(second.probability)})`;
  answer.probabilities.forEach((probability, digit) => {
    const bar = bars[digit];
    bar.classList.toggle("top", digit === answer.digit);
    const height = `${(probability * 100).toFixed(2)}%`;
    bar.querySelector(".fill").style.height = height;
    bar.querySelector(".value").style.bottom = `calc(${height} + 0.3rem)`;
    bar.querySelector(".value").textContent = probability >= 0.005 ? percent(probability) : "";
    bar.setAttribute("aria-label", `${digit}: ${percent(probability)}`);
  });
  const image = seenContext.createImageData(28, 28);
  answer.pixels.forEach((row, y) =>
    row.forEach((value, x) => {
      const offset = (y * 28 + x) * 4;
      image.data[offset] = image.data[offset + 1] = image.data[offset + 2] = value;
      image.data[offset + 3] = 255;
    })
  );
  seenContext.putImageData(image, 0, 0);
  const server = Number.isFinite(serverMs) ? `server ${serverMs.toFixed(1)} ms, ` : "";
  timingView.textContent = `${server}round trip ${roundTripMs.toFixed(0)} ms`;
  digitView.dataset.epoch = answer.epoch ? String(answer.epoch) : "";
  chart.dataset.probabilities = JSON.stringify(answer.probabilities);
}

// The training panel's choice of network: the drawing on the board is asked again at once.
const Pad = {
  // The network to ask lives in the page: `ask(canvas)` gives the answer the server would (digit, top3,
  // probabilities, pixels, epoch), or null while there is none.
  useLocal(ask, label) {
    local = ask;
    askingView.textContent = label || "";
    drawArea.hidden = false;
    if (hasInk) askLocally();
  },
  ask(next) {
    local = null; // The server's run is asked now, not the one trained in this page.
    next = next && next.run ? next : null;
    const same = JSON.stringify(next) === JSON.stringify(target);
    target = next;
    askingView.textContent = target ? `Asking ${target.label || target.run}` : "";
    if (target) drawArea.hidden = false; // A network to ask: the pad appears.
    if (same || !lastSent) return;
    if (inFlight) pending = true;
    else send(lastSent.blob, lastSent.name);
  },
};

document.getElementById("clear").addEventListener("click", clearAll);
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" || (event.key === "Delete" && event.target === document.body)) clearAll();
});

document.getElementById("upload").addEventListener("change", (event) => {
  const file = event.target.files[0];
  event.target.value = "";
  if (!file) return;
  clearAll();
  uploaded = true;
  const url = URL.createObjectURL(file);
  const picture = new Image();
  picture.onload = () => {
    // Shows the picture on the board (fitted, on white) and sends the original file.
    context.fillStyle = "#fff";
    context.fillRect(0, 0, pad.width, pad.height);
    const scale = Math.min(pad.width / picture.width, pad.height / picture.height);
    const width = picture.width * scale;
    const height = picture.height * scale;
    context.drawImage(picture, (pad.width - width) / 2, (pad.height - height) / 2, width, height);
    URL.revokeObjectURL(url);
    hint.classList.add("hidden");
  };
  picture.onerror = () => URL.revokeObjectURL(url);
  picture.src = url;
  if (local) {
    picture.addEventListener("load", () => {
      hasInk = true;
      askLocally();
    });
    return;
  }
  send(file, file.name);
});

async function loadHealth() {
  const badge = document.getElementById("model-badge");
  if (window.DigitlabMode.staticSite) {
    badge.textContent = "static site · trains in your browser";
    badge.classList.add("ok");
    drawArea.hidden = true; // The pad appears with the first epoch trained here.
    return null;
  }
  try {
    const response = await fetch("api/health");
    const health = await response.json();
    if (!response.ok) throw new Error(health.detail || `the server answered ${response.status}`);
    badge.textContent = health.parameters
      ? `${health.run || health.model} · ${health.parameters.toLocaleString("en")} parameters`
      : "no network yet · train one";
    badge.classList.add("ok");
    drawArea.hidden = !health.parameters; // Without a served network, the pad waits for a run to ask.
    return health;
  } catch (error) {
    badge.textContent = "server unreachable";
    badge.classList.add("down");
    showStatus(error.message, true);
    return null;
  }
}

clearBoard();
resetResult();
const healthLoaded = loadHealth();
