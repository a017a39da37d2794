// digitlab: the page in a class (`digitlab serve --class`, serve/classroom.py).
// A student types their name; every run they train here is sent to the server epoch by epoch as it
// trains: its settings at the first epoch (POST api/class/runs, which answers the run's secret), then
// each epoch's history row and the accuracy on the student's own handwriting (handwriting.js), with the
// epoch's weights when the class's weights_every_s (GET api/class) have passed since the run began or
// last sent them (the slider and tiles of the run on the board have those epochs), then the finish with
// the final weights at float32. A closed laptop loses at most the epoch in progress. Submissions go one
// at a time in order, and one refused for the rate (429) or lost on the way is sent again.
// The board (the teacher's, and the students' too with --class-board): every run of the class, its
// val-accuracy curves overlaid and side by side, a table sorted by any column, each run openable in the
// page's own view (slider, tiles, pad), and the board as CSV or as one HTML file.
import { encodeWeights, runHead } from "./browser.js";
import { scoreEpoch } from "./handwriting.js";

const $ = (id) => document.getElementById(id);
const NAME_KEY = "digitlab-student";
const COLUMNS = [
  ["student", "Student"],
  ["status", "Status"],
  ["epochs", "Epochs"],
  ["model", "Net"],
  ["learning_rate", "Learning rate"],
  ["loss", "Loss"],
  ["optimizer", "Optimizer"],
  ["batch_size", "Batch"],
  ["activation", "Activation"],
  ["final_val_accuracy", "Val accuracy"],
  ["final_val_loss", "Val loss"],
  ["handwriting_accuracy", "Own digits"],
];

let state = null; // GET api/class
let sending = null; // { run, name, secret, queue: Promise, sent }
let sortKey = "final_val_accuracy";
let sortDown = true;

function note(message, isError = false) {
  const status = $("class-status");
  status.textContent = message;
  status.classList.toggle("error", isError);
}

async function post(url, body, secret) {
  const headers = { "Content-Type": "application/json" };
  if (secret) headers["X-Run-Secret"] = secret;
  for (let attempt = 0; ; attempt++) {
    let response;
    try {
      response = await fetch(url, { method: "POST", headers, body: JSON.stringify(body) });
    } catch (error) {
      if (attempt < 5) {
        await new Promise((resolve) => setTimeout(resolve, 500 * 2 ** attempt));
        continue;
      }
      throw new Error(`the server could not be reached (${error.message})`);
    }
    const answer = await response.json().catch(() => ({ detail: `the server answered ${response.status}` }));
    if (response.status === 429 && attempt < 8) {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      continue;
    }
    if (!response.ok) throw new Error(answer.detail);
    return answer;
  }
}

// --- Sending a run --------------------------------------------------------------------------------

function studentName() {
  return $("class-student").value.trim();
}

function onStart({ detail }) {
  const name = studentName();
  const fresh = { secret: null, runName: null, queue: Promise.resolve(), failed: false, weightsSent: jittered() };
  sending = name ? { run: detail.run, name, ...fresh } : null;
  if (!name) note("Type your name above to send this run to the class.", true);
}

// When the run "last sent" weights: up to one period back, so that a class that pressed Train together
// does not send its weights together (a hundred at once kept the server from answering the others in time).
function jittered() {
  return performance.now() - Math.random() * 1000 * state.weights_every_s;
}

function enqueue(job) {
  const current = sending;
  current.queue = current.queue.then(async () => {
    if (current.failed) return;
    try {
      await job(current);
    } catch (error) {
      current.failed = true;
      note(`Not sent to the class: ${error.message}`, true);
    }
  });
}

function onEpoch({ detail }) {
  if (!sending || detail.run !== sending.run) return;
  const { run, epoch } = detail;
  const score = scoreEpoch(run, epoch);
  const history = Object.fromEntries(Object.entries(run.history).map(([key, values]) => [key, [values[epoch - 1]]]));
  // Now and then, not every epoch: a class of a hundred sending every epoch's 50,890 weights kept the
  // server from answering in time (docs/teaching.md#measured).
  const withWeights = performance.now() - sending.weightsSent >= 1000 * state.weights_every_s;
  if (withWeights) sending.weightsSent = performance.now();
  const weights = withWeights ? encodeWeights(run.config, run.weights[epoch - 1]) : undefined;
  enqueue(async (current) => {
    if (!current.secret) {
      const created = await post("api/class/runs", { ...runHead(run), student: current.name });
      [current.runName, current.secret] = [created.run, created.secret];
    }
    const body = { epoch, history, handwriting_accuracy: score ? score.accuracy : null };
    if (weights) body.weights = weights;
    await post(`api/class/runs/${current.runName}/epochs`, body, current.secret);
    note(`Sent to the class as ${current.runName}: epoch ${epoch}.`);
    $("class-status").dataset.run = current.runName;
    $("class-status").dataset.epochs = String(epoch);
  });
}

function onEnd({ detail }) {
  if (!sending || detail.run !== sending.run) return;
  const { run } = detail;
  const status = run.status === "complete" ? "complete" : "interrupted";
  enqueue(async (current) => {
    if (!current.secret) return; // Stopped before its first epoch: nothing to keep.
    // The final weights at float32: the run folder's model is the page's network, bit for bit.
    const weights = encodeWeights(run.config, run.weights.at(-1));
    await post(`api/class/runs/${current.runName}/finish`, { status, weights, wall_time_s: run.wallTime }, current.secret);
    note(`Kept by the class as ${current.runName} (${status}, ${run.history.val_accuracy.length} epochs).`);
    $("class-status").dataset.finished = current.runName;
  });
}

// --- The board ------------------------------------------------------------------------------------

function cell(value) {
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toPrecision(4);
  return value === null || value === undefined ? "–" : String(value);
}

function drawBoard(rows) {
  const sorted = [...rows].sort((a, b) => {
    const [x, y] = [a[sortKey], b[sortKey]];
    const order = x === y ? 0 : x === null || x === undefined ? 1 : y === null || y === undefined ? -1 : x < y ? -1 : 1;
    return sortDown ? -order : order;
  });
  const table = $("board-table");
  table.replaceChildren();
  const head = table.createTHead().insertRow();
  COLUMNS.forEach(([key, label]) => {
    const th = document.createElement("th");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "sort";
    button.dataset.key = key;
    button.textContent = label + (key === sortKey ? (sortDown ? " ▼" : " ▲") : "");
    button.addEventListener("click", () => {
      sortDown = key === sortKey ? !sortDown : true;
      sortKey = key;
      drawBoard(rows);
    });
    th.appendChild(button);
    head.appendChild(th);
  });
  head.appendChild(document.createElement("th"));
  const body = table.createTBody();
  sorted.forEach((row, index) => {
    const line = body.insertRow();
    line.dataset.run = row.run;
    COLUMNS.forEach(([key]) => {
      const value = line.insertCell();
      if (key !== "student") value.textContent = cell(row[key]);
      else {
        const name = document.createElement("span");
        name.className = `key c${index % 4}`; // The overlaid chart's colour for this run.
        name.textContent = row.student;
        value.appendChild(name);
      }
    });
    const open = document.createElement("a");
    open.href = `./?run=${encodeURIComponent(row.run)}`;
    open.target = "_blank";
    open.textContent = "open";
    line.insertCell().appendChild(open);
    line.classList.add(`c${index % 4}`);
  });
  // Overlaid: every run's val accuracy in one chart; side by side: one small chart a run.
  const epochs = Math.max(1, ...rows.map((row) => row.epochs_planned || 1));
  overlay.draw(
    sorted.map((row, index) => ({ name: row.student, values: row.history.val_accuracy, className: `c${index % 4}` })),
    { epochs, empty: "no epochs sent yet" }
  );
  const small = $("board-multiples");
  small.replaceChildren();
  sorted.forEach((row, index) => {
    const figure = document.createElement("figure");
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", "0 0 360 210");
    svg.setAttribute("class", "plot");
    figure.appendChild(svg);
    const caption = document.createElement("figcaption");
    caption.textContent = `${row.student} · lr ${row.learning_rate} · ${row.loss}`;
    figure.appendChild(caption);
    small.appendChild(figure);
    const series = [{ name: "val_accuracy", values: row.history.val_accuracy, className: "valid" }];
    if (row.handwriting.length && row.handwriting.every((value) => value !== null)) {
      series.push({ name: "handwriting", values: row.handwriting, className: "train" }); // Their own digits.
    }
    Charts.lineChart(svg, { yMax: 1 }).draw(series, { epochs: row.epochs_planned || 1 });
  });
  $("board-count").textContent = `${rows.length} run${rows.length === 1 ? "" : "s"} · ${rows.filter((row) => row.status === "complete").length} complete`;
}

let overlay = null;

async function refreshBoard() {
  try {
    const response = await fetch("api/class/board");
    if (response.ok) drawBoard((await response.json()).runs);
  } catch {
    // The next refresh tries again.
  }
}

// --- Start-up -------------------------------------------------------------------------------------

async function init() {
  if (window.DigitlabMode.staticSite || window.DigitlabMode.trainHere !== "browser") return;
  const health = await healthLoaded; // app.js's: a server started with --class says so.
  if (!health || !health.class) return;
  try {
    const response = await fetch("api/class");
    state = response.ok ? await response.json() : null;
  } catch {
    state = null;
  }
  if (!state || !state.class) return;
  const canSend = state.role === "operator" || state.role === "student";
  if (canSend) {
    $("class-name-row").hidden = false;
    $("class-student").value = localStorage.getItem(NAME_KEY) || "";
    $("class-student").addEventListener("input", () => localStorage.setItem(NAME_KEY, studentName()));
    document.addEventListener("digitlab:run-start", onStart);
    document.addEventListener("digitlab:epoch", onEpoch);
    document.addEventListener("digitlab:run-end", onEnd);
    note(studentName() ? "Your runs go to the class as they train." : "Type your name: your runs then go to the class as they train.");
  }
  if (state.role === "operator" || state.board_for_students) {
    $("board-card").hidden = false;
    overlay = Charts.lineChart($("board-overlay"), { yMax: 1 });
    await refreshBoard();
    setInterval(refreshBoard, 3000);
  }
}

init();
