// digitlab: the server's runs on the page. The runs side by side (GET /api/runs; ticked runs' validation
// accuracy overlaid, the run training in this browser among them); a saved run opened at any epoch (its
// curves, tiles and slider; the drawing pad asks that epoch's network through /api/predict); a run that
// `digitlab train` is training into the server's runs folder followed live (Server-Sent Events,
// GET /api/runs/NAME/events: a point an epoch, the newest tiles pushed with it); and, at a run's end, the
// confusion matrix and the most confident mistakes (GET /api/runs/NAME/evaluation for the server's runs;
// for the run trained here, browser.js's Worker computes them and sends them as "digitlab:evaluation").
// The run trained in this browser is drawn by browser.js: "digitlab:show" (detail.source "server" or
// "browser") on document says which of the two the charts, the tiles and the pad show.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const liveStatus = $("live-status");
  const slider = $("epoch-slider");
  const tiles = $("tiles");
  const tilesCaption = $("tiles-caption");
  const accuracyChart = Charts.lineChart($("accuracy-chart"), { yMax: 1 });
  const lossChart = Charts.lineChart($("loss-chart"), { yMax: null });
  const overlayChart = Charts.lineChart($("overlay-chart"), { yMax: 1 });
  const KEYS = ["loss", "accuracy", "val_loss", "val_accuracy"];
  const HERE = "\u0000browser"; // The overlay's key for the run trained in this browser (no run folder has it).
  // ?run=NAME opens that run; read now, before browser.js writes the settings into the address bar.
  const wanted = new URLSearchParams(location.search).get("run");

  // The server's run on show (null while the browser's run is): its name, history, planned epochs, tiles, status.
  let shown = null;
  let source = null; // The EventSource of the run on show.
  let follow = true; // The slider follows the newest epoch until it is moved back.
  let redraw = null;
  let tilesWanted = null;
  let tilesLoading = false;
  let browserRun = null; // browser.js's run, as its events describe it.
  let browserEvaluation = null;
  const overlay = new Map(); // Ticked run -> its history.

  async function getJson(url) {
    const response = await fetch(url);
    const body = await response.json().catch(() => ({ detail: `The server answered ${response.status}.` }));
    return { response, body };
  }

  function emptyHistory() {
    return Object.fromEntries(KEYS.map((key) => [key, []]));
  }

  function formatNumber(value) {
    return Number.isFinite(value) ? value.toFixed(4) : "–";
  }

  // --- A server's run on show ---------------------------------------------------------------------

  // Shows a run: its events replay what it has (a finished run ends at once), then arrive live while a
  // process trains it.
  function watch(run) {
    if (source) source.close();
    shown = { run, history: emptyHistory(), epochs: 0, tiles: {}, tilesData: null, status: null };
    slider.dataset.events = "0";
    follow = true;
    $("train-card").hidden = false;
    $("end-card").hidden = true;
    liveStatus.classList.remove("error");
    liveStatus.textContent = `Opening ${run}…`;
    document.documentElement.dataset.show = "server"; // For browser.js, should it start after this.
    document.dispatchEvent(new CustomEvent("digitlab:show", { detail: { source: "server", run } }));
    const mine = shown;
    source = new EventSource(`api/runs/${encodeURIComponent(run)}/events`);
    source.addEventListener("epoch", (message) => mine === shown && onEpoch(JSON.parse(message.data)));
    // The newest epoch's tiles follow its event while the run trains, so the page need not ask for them.
    source.addEventListener("tiles", (message) => {
      if (mine !== shown) return;
      const pushed = JSON.parse(message.data);
      shown.tilesData = { epoch: pushed.epoch, data: pushed.png };
      scheduleRedraw();
    });
    source.addEventListener("end", (message) => {
      source.close();
      if (mine === shown) onEnd(JSON.parse(message.data));
    });
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED && mine === shown) {
        liveStatus.textContent = `The event stream of ${run} closed; reload the page to reconnect.`;
        liveStatus.classList.add("error");
      }
    };
    markOpenRun();
  }

  function onEpoch(event) {
    slider.dataset.events = String((parseInt(slider.dataset.events, 10) || 0) + 1); // Epoch events received.
    KEYS.forEach((key) => (shown.history[key][event.epoch - 1] = event[key]));
    shown.epochs = event.epochs || shown.epochs;
    shown.tiles[event.epoch] = event.tiles;
    shown.status = "running";
    liveStatus.textContent = `${event.run}: epoch ${event.epoch} of ${event.epochs}`;
    slider.max = String(event.epoch);
    slider.disabled = false;
    if (follow) slider.value = String(event.epoch);
    scheduleRedraw();
  }

  function onEnd(event) {
    shown.status = event.status;
    const done = shown.history.val_accuracy.length;
    const seconds = event.wall_time_s ? ` in ${event.wall_time_s.toFixed(1)} s` : "";
    const words = {
      complete: `${event.run} is complete: ${done} epochs${seconds}, validation accuracy ${formatNumber(event.final_val_accuracy)}.`,
      interrupted: `${event.run} was stopped after epoch ${event.epoch} of ${event.epochs}. Finish it with: ${event.resume}`,
      failed: `${event.run} failed: ${event.message || "see its training's output"}`,
    };
    liveStatus.textContent = words[event.status] || `${event.run}: ${event.status}`;
    liveStatus.classList.toggle("error", event.status === "failed");
    scheduleRedraw();
    if (done) showServerEvaluation(event.run);
    loadRuns();
  }

  function scheduleRedraw() {
    if (redraw === null) redraw = requestAnimationFrame(drawShown);
  }

  function drawShown() {
    redraw = null;
    if (!shown) return;
    const history = shown.history;
    const done = history.val_accuracy.length;
    const epochs = Math.max(shown.epochs, done);
    const epoch = done ? Math.min(parseInt(slider.value, 10) || 1, done) : null;
    const series = (train, valid) => [
      { name: train, values: history[train], className: "train" },
      { name: valid, values: history[valid], className: "valid" },
    ];
    accuracyChart.draw(series("accuracy", "val_accuracy"), { epochs, marker: epoch });
    lossChart.draw(series("loss", "val_loss"), { epochs, marker: epoch });
    KEYS.forEach((key) => ($(`n-${key}`).textContent = epoch ? formatNumber(history[key][epoch - 1]) : "–"));
    $("n-epoch").textContent = epoch ? `${epoch} / ${epochs}` : "–";
    $("epoch-shown").textContent = epoch ? `${epoch} of ${epochs}` : "–";
    if (!epoch) return;
    // The newest epoch's tiles come inside its event; any other epoch's are fetched.
    const inside = shown.tilesData && shown.tilesData.epoch === epoch ? shown.tilesData.data : null;
    showTiles(inside || shown.tiles[epoch], epoch);
    const last = epoch === done && shown.status === "complete";
    Pad.ask({ run: shown.run, epoch: last ? null : epoch, label: `${shown.run} at epoch ${epoch}` });
  }

  // One picture loads at a time; while it loads, only the newest wanted epoch is remembered.
  function showTiles(url, epoch) {
    $("tiles-canvas").hidden = true; // browser.js's drawing of the run trained here.
    if (!url) {
      tiles.hidden = true;
      tilesCaption.textContent = `This run kept no weights for epoch ${epoch} (train with --record-epochs to keep them).`;
      return;
    }
    tilesWanted = { url, epoch, key: `${shown.run}/${epoch}` };
    if (!tilesLoading) loadTiles();
    else tiles.hidden = false;
  }

  function loadTiles() {
    const wanted = tilesWanted;
    if (!wanted || tiles.dataset.key === wanted.key) {
      tiles.hidden = false;
      return;
    }
    tilesLoading = true;
    tiles.onload = tiles.onerror = () => {
      tilesLoading = false;
      tiles.hidden = false;
      tiles.dataset.epoch = String(wanted.epoch);
      tilesCaption.textContent = `The first layer's weights after epoch ${wanted.epoch}: one 28×28 tile per neuron, one colour scale (red excites, blue inhibits).`;
      if (tilesWanted !== wanted) loadTiles();
    };
    tiles.dataset.key = wanted.key;
    tiles.src = wanted.url;
  }

  slider.addEventListener("input", () => {
    if (!shown) return; // browser.js moves its own run.
    follow = parseInt(slider.value, 10) >= parseInt(slider.max, 10);
    scheduleRedraw();
  });

  // --- At the end: the confusion matrix and the most confident mistakes ---------------------------

  async function showServerEvaluation(run) {
    const mine = shown;
    const { response, body } = await getJson(`api/runs/${encodeURIComponent(run)}/evaluation`);
    if (response.ok && mine === shown) showEvaluation(body);
  }

  // `body`: the server's evaluation answer (run, epoch, data, images, errors, accuracy, confusion_matrix,
  // mistakes), or the same computed in the browser for the run trained here.
  function showEvaluation(body) {
    $("end-card").hidden = false;
    $("end-card").dataset.run = body.run;
    $("end-summary").textContent = `${body.run} after epoch ${body.epoch}: ${body.errors} of ${body.images.toLocaleString("en")} wrong (accuracy ${body.accuracy.toFixed(4)}) on ${body.data}.`;
    const table = $("confusion");
    table.replaceChildren();
    const head = table.insertRow();
    head.appendChild(document.createElement("th"));
    for (let digit = 0; digit < 10; digit++) head.appendChild(document.createElement("th")).textContent = String(digit);
    const largest = Math.max(...body.confusion_matrix.flat());
    body.confusion_matrix.forEach((row, truth) => {
      const line = table.insertRow();
      line.appendChild(document.createElement("th")).textContent = String(truth);
      row.forEach((count, said) => {
        const cell = line.insertCell();
        cell.textContent = String(count);
        const share = largest ? count / largest : 0;
        cell.className = truth === said ? `hit${share > 0.45 ? " strong" : ""}` : count ? "miss" : "";
        cell.style.setProperty("--share", share.toFixed(3));
      });
    });
    const gallery = $("mistakes");
    gallery.replaceChildren();
    body.mistakes.forEach((mistake) => {
      const item = document.createElement("figure");
      const canvas = document.createElement("canvas");
      canvas.width = canvas.height = 28;
      const context = canvas.getContext("2d");
      const image = context.createImageData(28, 28);
      mistake.pixels.flat().forEach((value, index) => {
        image.data[index * 4] = image.data[index * 4 + 1] = image.data[index * 4 + 2] = 255 - value;
        image.data[index * 4 + 3] = 255;
      });
      context.putImageData(image, 0, 0);
      const caption = document.createElement("figcaption");
      caption.textContent = `${mistake.true} → ${mistake.predicted} (${Math.round(mistake.probability * 100)}%)`;
      item.append(canvas, caption);
      gallery.appendChild(item);
    });
  }

  // --- Runs side by side ----------------------------------------------------------------------------

  function runRow(rows, summary, onOpen) {
    const row = rows.insertRow();
    row.dataset.run = summary.run;
    const tick = document.createElement("input");
    tick.type = "checkbox";
    tick.className = "overlay-tick";
    tick.checked = overlay.has(summary.key);
    tick.setAttribute("aria-label", `Overlay ${summary.run}`);
    tick.addEventListener("change", () => toggleOverlay(summary.key, tick.checked));
    row.insertCell().appendChild(tick);
    row.insertCell().textContent = summary.run;
    const status = row.insertCell();
    status.textContent = summary.training ? "training" : summary.problem ? "can't open" : summary.status;
    if (summary.problem) status.title = summary.problem; // Why: a damaged config.json, a name that is not UTF-8.
    row.insertCell().textContent = summary.model || "?";
    row.insertCell().textContent = summary.learning_rate ?? "";
    row.insertCell().textContent = `${summary.epochs}/${summary.epochs_planned ?? "?"}`;
    row.insertCell().textContent = formatNumber(summary.final_val_accuracy);
    const open = document.createElement("button");
    open.type = "button";
    open.className = "button secondary small open-run";
    open.textContent = "Open";
    open.disabled = tick.disabled = Boolean(summary.problem);
    open.addEventListener("click", onOpen);
    row.insertCell().appendChild(open);
    return row;
  }

  function browserSummary() {
    const history = browserRun.history;
    return {
      key: HERE,
      run: "this browser's run",
      status: browserRun.status,
      training: browserRun.status === "running",
      model: browserRun.config.model,
      learning_rate: browserRun.config.learning_rate,
      epochs: history.val_accuracy.length,
      epochs_planned: browserRun.config.epochs,
      final_val_accuracy: history.val_accuracy.at(-1),
    };
  }

  let listed = [];

  async function loadRuns() {
    const { response, body } = await getJson("api/runs");
    if (!response.ok) return;
    listed = body.runs;
    showRuns();
  }

  function showRuns() {
    const table = $("runs-table");
    table.replaceChildren();
    const head = table.createTHead().insertRow();
    ["", "run", "status", "net", "lr", "epochs", "val accuracy", ""].forEach((text) => {
      head.appendChild(document.createElement("th")).textContent = text;
    });
    const rows = table.createTBody();
    if (browserRun) {
      const row = runRow(rows, browserSummary(), () => {
        document.documentElement.dataset.show = "browser";
        document.dispatchEvent(new CustomEvent("digitlab:show", { detail: { source: "browser" } }));
      });
      row.classList.add("here");
    }
    [...listed].reverse().forEach((summary) => runRow(rows, { ...summary, key: summary.run }, () => watch(summary.run)));
    markOpenRun();
    drawOverlay();
  }

  function markOpenRun() {
    document.querySelectorAll("#runs-table tbody tr").forEach((row) => {
      row.classList.toggle("open", shown ? row.dataset.run === shown.run : row.classList.contains("here"));
    });
  }

  async function toggleOverlay(key, on) {
    if (!on) overlay.delete(key);
    else if (key === HERE) overlay.set(key, browserRun.history); // Grows as the run trains.
    else {
      const { response, body } = await getJson(`api/runs/${encodeURIComponent(key)}`);
      if (response.ok) overlay.set(key, body.history);
    }
    drawOverlay();
  }

  function drawOverlay() {
    const runs = [...overlay.entries()];
    const epochs = Math.max(1, ...runs.map(([, history]) => history.val_accuracy.length));
    const name = (key) => (key === HERE ? "this browser's run" : key);
    overlayChart.draw(
      runs.map(([key, history], index) => ({ name: name(key), values: history.val_accuracy, className: `c${index % 6}` })),
      { epochs, empty: "tick two or more runs" }
    );
    const legend = $("overlay-legend");
    legend.replaceChildren("validation accuracy of the ticked runs");
    runs.forEach(([key], index) => {
      const item = document.createElement("span");
      item.className = `key c${index % 6}`;
      item.textContent = name(key);
      legend.append(" ", item);
    });
  }

  // --- The run trained in this browser (browser.js) -------------------------------------------------

  document.addEventListener("digitlab:show", ({ detail }) => {
    if (detail.source !== "browser") return;
    if (source) source.close();
    shown = null;
    $("end-card").hidden = true;
    if (browserEvaluation) showEvaluation(browserEvaluation);
    markOpenRun();
  });
  document.addEventListener("digitlab:run-start", ({ detail }) => {
    browserRun = detail.run;
    browserEvaluation = null;
    overlay.delete(HERE);
    showRuns();
  });
  document.addEventListener("digitlab:epoch", () => showRuns());
  document.addEventListener("digitlab:run-end", () => showRuns());
  document.addEventListener("digitlab:evaluation", ({ detail }) => {
    browserEvaluation = detail;
    if (!shown) showEvaluation(detail);
  });
  // A run sent to the server is one of its runs now.
  document.addEventListener("digitlab:kept", () => loadRuns());

  // --- Start-up -------------------------------------------------------------------------------------

  async function init() {
    if (window.DigitlabMode.staticSite) return; // No server behind the page: its run is the only one.
    const health = await healthLoaded;
    if (!health || !health.runs) return;
    document.body.classList.toggle("viewer", health.role !== "operator");
    $("role-note").hidden = health.role === "operator";
    $("runs-card").hidden = false;
    if (!window.DigitlabMode.trainHere) {
      $("train-card").hidden = false;
      $("train-form").hidden = true;
      liveStatus.textContent = "This browser cannot train the network (it lacks WebAssembly or Workers); open a saved run below.";
    }
    await loadRuns();
    // The newest run that a process trains (`digitlab train`); in a class, students' runs wait on the board.
    const training = health.class ? null : listed.filter((summary) => summary.training).at(-1);
    if (wanted) watch(wanted);
    else if (training) watch(training.run);
    else if (health.run) watch(health.run);
  }

  init();
})();
