// digitlab training panel: set the chapter's network up, train it on the server (POST /api/train)
// and watch every epoch arrive (Server-Sent Events: the curves gain a point, the 64 weight tiles are
// redrawn); move the slider to any epoch, and the drawing pad asks that epoch's network.
// The page's URL holds the settings (TrainConfig's field names, e.g. ?learning_rate=0.5&epochs=3)
// and `hide=loss,optimizer` hides those fields: a teacher's link opens the page ready to train.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const trainCard = $("train-card");
  const fieldsView = $("fields");
  const startButton = $("start");
  const stopButton = $("stop");
  const resumeButton = $("resume");
  const liveStatus = $("live-status");
  const slider = $("epoch-slider");
  const epochShown = $("epoch-shown");
  const tiles = $("tiles");
  const tilesCaption = $("tiles-caption");
  const shareLink = $("share-link");
  const accuracyChart = Charts.lineChart($("accuracy-chart"), { yMax: 1 });
  const lossChart = Charts.lineChart($("loss-chart"), { yMax: null });
  const overlayChart = Charts.lineChart($("overlay-chart"), { yMax: 1 });
  const KEYS = ["loss", "accuracy", "val_loss", "val_accuracy"];
  const LABELS = {
    model: "Net",
    loss: "Loss",
    activation: "Activation",
    learning_rate: "Learning rate",
    optimizer: "Optimizer",
    batch_size: "Batch size",
    epochs: "Epochs",
    seed: "Seed",
    train_limit: "Training images",
    validation: "Validation",
  };
  const BLANK = { seed: "random", train_limit: "all" };
  const params = new URLSearchParams(location.search);
  const hidden = new Set((params.get("hide") || "").split(",").map((name) => name.trim()).filter(Boolean));

  let options = null; // GET /api/train: fields, model defaults, limits, role.
  let role = "operator";
  // The run on show: its name, history, planned epochs, whether epochs have tiles, and its status.
  let shown = { run: null, history: emptyHistory(), epochs: 0, tiles: {}, status: null };
  let source = null; // The EventSource of the run on show.
  let watching = 0; // Bumped by every watch(), so that late answers about an earlier showing are dropped.
  let follow = true; // The slider follows the newest epoch until it is moved back.
  let redraw = null;
  let tilesWanted = null;
  let tilesLoading = false;
  const overlay = new Map(); // Ticked run -> its history.

  function emptyHistory() {
    return Object.fromEntries(KEYS.map((key) => [key, []]));
  }

  function showStatus(message, isError = false) {
    const status = $("status");
    status.textContent = message;
    status.classList.toggle("error", isError);
  }

  async function getJson(url, init) {
    const response = await fetch(url, init);
    let body = {};
    try {
      body = await response.json();
    } catch (error) {
      body = { detail: `The server answered ${response.status}.` };
    }
    return { response, body };
  }

  // --- The form -------------------------------------------------------------------------------

  function fieldInput(name, spec) {
    if (spec.choices) {
      const select = document.createElement("select");
      if (name !== "model" && name !== "validation") select.appendChild(new Option("the net's own", ""));
      spec.choices.forEach((choice) => select.appendChild(new Option(choice.replaceAll("_", " "), choice)));
      return select;
    }
    const input = document.createElement("input");
    input.type = "text";
    input.inputMode = spec.type === "float" ? "decimal" : "numeric";
    input.autocomplete = "off";
    return input;
  }

  function buildForm() {
    fieldsView.replaceChildren();
    Object.entries(options.fields).forEach(([name, spec]) => {
      const wrapper = document.createElement("div");
      wrapper.className = "field";
      wrapper.dataset.field = name;
      const label = document.createElement("label");
      label.textContent = LABELS[name] || name;
      label.htmlFor = `field-${name}`;
      label.title = spec.help;
      const input = fieldInput(name, spec);
      input.id = `field-${name}`;
      input.name = name;
      input.title = spec.help;
      const error = document.createElement("p");
      error.className = "field-error";
      error.id = `error-${name}`;
      error.setAttribute("role", "alert");
      wrapper.append(label, input, error);
      wrapper.hidden = hidden.has(name);
      fieldsView.appendChild(wrapper);
      const given = params.get(name);
      if (given !== null) input.value = given;
      else if (name === "model") input.value = "shallow";
      else if (name === "validation") input.value = spec.default;
      input.addEventListener("input", () => {
        clearErrors(name);
        if (name === "model") showModelDefaults();
        updateShareLink();
      });
      input.addEventListener("change", updateShareLink);
    });
    showModelDefaults();
    updateShareLink();
  }

  function showModelDefaults() {
    const model = $("field-model").value;
    const defaults = options.model_defaults[model] || {};
    Object.entries(options.fields).forEach(([name, spec]) => {
      const input = $(`field-${name}`);
      const own = name in defaults ? defaults[name] : spec.default;
      if (input.tagName === "SELECT") {
        const first = input.options[0];
        if (first && first.value === "" && own !== null) first.textContent = `${String(own).replaceAll("_", " ")} (net's)`;
      } else {
        input.placeholder = own !== null && own !== undefined ? String(own) : BLANK[name] || "";
      }
    });
  }

  function settings() {
    const values = {};
    Object.entries(options.fields).forEach(([name, spec]) => {
      const text = $(`field-${name}`).value.trim();
      if (text === "") return;
      if (spec.type === "int") values[name] = /^[+-]?\d+$/.test(text) ? parseInt(text, 10) : text;
      else if (spec.type === "float") values[name] = Number.isFinite(Number(text)) ? Number(text) : text;
      else values[name] = text;
    });
    return values;
  }

  function updateShareLink() {
    const query = new URLSearchParams();
    Object.entries(settings()).forEach(([name, value]) => query.set(name, String(value)));
    if (hidden.size) query.set("hide", [...hidden].join(","));
    if (params.get("train") === "server") query.set("train", "server"); // The server trains, for whoever opens it.
    const url = `${location.origin}${location.pathname}${query.toString() ? `?${query}` : ""}`;
    shareLink.value = url;
    history.replaceState(null, "", url); // The address bar shares the setting too (never a token).
  }

  function clearErrors(only = null) {
    document.querySelectorAll(".field-error").forEach((error) => {
      if (only === null || error.id === `error-${only}`) error.textContent = "";
    });
    document.querySelectorAll(".field.bad").forEach((field) => {
      if (only === null || field.dataset.field === only) field.classList.remove("bad");
    });
  }

  function showFieldError(field, message) {
    const error = field && $(`error-${field}`);
    if (!error || error.closest(".field").hidden) {
      liveStatus.textContent = message;
      liveStatus.classList.add("error");
      return;
    }
    error.textContent = message;
    error.closest(".field").classList.add("bad");
  }

  // --- Training -------------------------------------------------------------------------------

  async function start(event) {
    event.preventDefault();
    clearErrors();
    liveStatus.classList.remove("error");
    startButton.disabled = true;
    const { response, body } = await getJson("/api/train", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(settings()),
    });
    if (response.status === 202) {
      watch(body.run, true);
      return;
    }
    startButton.disabled = false;
    if (response.status === 422) showFieldError(body.field, body.detail);
    else {
      liveStatus.textContent = body.detail;
      liveStatus.classList.add("error");
    }
  }

  async function post(url) {
    const { response, body } = await getJson(url, { method: "POST" });
    if (!response.ok) {
      liveStatus.textContent = body.detail;
      liveStatus.classList.add("error");
    }
    return { response, body };
  }

  async function stop() {
    stopButton.disabled = true;
    const { response } = await post(`/api/train/${encodeURIComponent(shown.run)}/stop`);
    if (response.ok) liveStatus.textContent = `Stopping ${shown.run} after the epoch in progress…`;
  }

  async function resume() {
    resumeButton.disabled = true;
    const { response, body } = await post(`/api/train/${encodeURIComponent(shown.run)}/resume`);
    if (response.status === 202) watch(body.run, true);
    else resumeButton.disabled = false;
  }

  function setButtons() {
    const operator = role === "operator";
    const training = shown.status === "running";
    startButton.disabled = !operator || training;
    stopButton.disabled = !operator || !training;
    resumeButton.disabled = !operator || training || !["interrupted", "failed"].includes(shown.status);
  }

  // Shows a run: its events replay what it has (a saved run ends at once), then arrive live.
  function watch(run, live = false) {
    if (source) source.close();
    watching += 1;
    shown = { run, history: emptyHistory(), epochs: 0, tiles: {}, tilesData: null, status: live ? "running" : null };
    slider.dataset.events = "0";
    follow = true;
    $("end-card").hidden = true;
    liveStatus.classList.remove("error");
    liveStatus.textContent = live ? `Starting ${run}…` : `Opening ${run}…`;
    setButtons();
    source = new EventSource(`/api/train/${encodeURIComponent(run)}/events`);
    source.addEventListener("epoch", (message) => onEpoch(JSON.parse(message.data)));
    // The newest epoch's tiles follow its event while the run trains, so the page need not ask for them.
    source.addEventListener("tiles", (message) => {
      const tiles = JSON.parse(message.data);
      shown.tilesData = { epoch: tiles.epoch, data: tiles.png };
      scheduleRedraw();
    });
    source.addEventListener("end", (message) => {
      source.close();
      onEnd(JSON.parse(message.data));
    });
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        liveStatus.textContent = `The event stream of ${run} closed; reload the page to reconnect.`;
        liveStatus.classList.add("error");
      }
    };
    markOpenRun();
    const badge = $("model-badge");
    badge.textContent = `showing ${run}`;
    badge.classList.add("ok");
  }

  function onEpoch(event) {
    if (event.run !== shown.run) return;
    slider.dataset.events = String((parseInt(slider.dataset.events, 10) || 0) + 1); // Epoch events received.
    KEYS.forEach((key) => {
      shown.history[key][event.epoch - 1] = event[key];
    });
    shown.epochs = event.epochs || shown.epochs;
    shown.tiles[event.epoch] = event.tiles;
    if (shown.status === null) shown.status = "replaying";
    if (shown.status === "running") {
      if (!shown.listed) loadRuns(); // Its run folder exists from its first epoch on.
      shown.listed = true;
      const by = shown.startedBy ? ` (started by ${shown.startedBy})` : "";
      liveStatus.textContent = `Training ${event.run}: epoch ${event.epoch} of ${event.epochs}${by}`;
    }
    slider.max = String(event.epoch);
    slider.disabled = false;
    if (follow) slider.value = String(event.epoch);
    scheduleRedraw();
  }

  function onEnd(event) {
    shown.status = event.status;
    const done = shown.history.val_accuracy.length;
    const words = {
      complete: `${event.run} is complete: ${done} epochs${event.wall_time_s ? ` in ${event.wall_time_s.toFixed(1)} s` : ""}, validation accuracy ${formatNumber(event.final_val_accuracy)}.`,
      interrupted: `${event.run} was stopped after epoch ${event.epoch} of ${event.epochs} and saved. Resume it here, or with: ${event.resume}`,
      failed: `${event.run} failed: ${event.message || "see the server's log"}`,
      running: `${event.run} is being trained by another process; reload to see its newest epochs.`,
    };
    liveStatus.textContent = words[event.status] || `${event.run}: ${event.status}`;
    liveStatus.classList.toggle("error", event.status === "failed");
    setButtons();
    scheduleRedraw();
    if (done) showEvaluation(event.run);
    loadRuns();
  }

  function scheduleRedraw() {
    if (redraw === null) redraw = requestAnimationFrame(drawShown);
  }

  function selectedEpoch() {
    return Math.min(parseInt(slider.value, 10) || 1, shown.history.val_accuracy.length);
  }

  function drawShown() {
    redraw = null;
    const history = shown.history;
    const epochs = Math.max(shown.epochs, history.val_accuracy.length);
    const epoch = history.val_accuracy.length ? selectedEpoch() : null;
    accuracyChart.draw(
      [
        { name: "accuracy", values: history.accuracy, className: "train" },
        { name: "val_accuracy", values: history.val_accuracy, className: "valid" },
      ],
      { epochs, marker: epoch }
    );
    lossChart.draw(
      [
        { name: "loss", values: history.loss, className: "train" },
        { name: "val_loss", values: history.val_loss, className: "valid" },
      ],
      { epochs, marker: epoch }
    );
    KEYS.forEach((key) => {
      $(`n-${key}`).textContent = epoch ? formatNumber(history[key][epoch - 1]) : "–";
    });
    $("n-epoch").textContent = epoch ? `${epoch} / ${epochs}` : "–";
    epochShown.textContent = epoch ? `${epoch} of ${epochs}` : "–";
    if (epoch) {
      // The newest epoch's tiles come inside its event; any other epoch's are fetched.
      const inside = shown.tilesData && shown.tilesData.epoch === epoch ? shown.tilesData.data : null;
      showTiles(inside || shown.tiles[epoch], epoch);
      const last = epoch === history.val_accuracy.length && shown.status === "complete";
      Pad.ask({ run: shown.run, epoch: last ? null : epoch, label: `${shown.run} at epoch ${epoch}` });
    }
  }

  function formatNumber(value) {
    return Number.isFinite(value) ? value.toFixed(4) : "–";
  }

  // One picture loads at a time; while it loads, only the newest wanted epoch is remembered.
  function showTiles(url, epoch) {
    if (!url) {
      tiles.hidden = true;
      tilesCaption.textContent = `This run kept no weights for epoch ${epoch} (train with --record-epochs to keep them).`;
      return;
    }
    tilesWanted = { url, epoch, key: `${shown.run}/${epoch}` };
    if (!tilesLoading) loadTiles();
  }

  function loadTiles() {
    const wanted = tilesWanted;
    if (!wanted || tiles.dataset.key === wanted.key) return;
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
    follow = parseInt(slider.value, 10) >= parseInt(slider.max, 10);
    scheduleRedraw();
  });

  // --- At the end: the confusion matrix and the most confident mistakes -------------------------

  async function showEvaluation(run) {
    const mine = watching;
    const { response, body } = await getJson(`/api/runs/${encodeURIComponent(run)}/evaluation`);
    if (!response.ok || mine !== watching) return;
    $("end-card").hidden = false;
    $("end-summary").textContent = `${run} after epoch ${body.epoch}: ${body.errors} of ${body.images.toLocaleString("en")} wrong (accuracy ${body.accuracy.toFixed(4)}) on ${body.data}.`;
    const table = $("confusion");
    table.replaceChildren();
    const head = table.insertRow();
    head.appendChild(document.createElement("th"));
    for (let digit = 0; digit < 10; digit++) {
      const th = document.createElement("th");
      th.textContent = String(digit);
      head.appendChild(th);
    }
    const largest = Math.max(...body.confusion_matrix.flat());
    body.confusion_matrix.forEach((row, truth) => {
      const line = table.insertRow();
      const th = document.createElement("th");
      th.textContent = String(truth);
      line.appendChild(th);
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

  // --- Runs side by side ----------------------------------------------------------------------

  async function loadRuns() {
    const { response, body } = await getJson("/api/runs");
    if (!response.ok) return;
    const table = $("runs-table");
    table.replaceChildren();
    const head = table.createTHead().insertRow();
    ["", "run", "status", "net", "lr", "epochs", "val accuracy", ""].forEach((text) => {
      const th = document.createElement("th");
      th.textContent = text;
      head.appendChild(th);
    });
    const rows = table.createTBody();
    [...body.runs].reverse().forEach((summary) => {
      const row = rows.insertRow();
      row.dataset.run = summary.run;
      const tick = document.createElement("input");
      tick.type = "checkbox";
      tick.className = "overlay-tick";
      tick.checked = overlay.has(summary.run);
      tick.setAttribute("aria-label", `Overlay ${summary.run}`);
      tick.addEventListener("change", () => toggleOverlay(summary.run, tick.checked));
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
      open.addEventListener("click", () => watch(summary.run, summary.training));
      row.insertCell().appendChild(open);
    });
    markOpenRun();
    drawOverlay();
  }

  function markOpenRun() {
    document.querySelectorAll("#runs-table tbody tr").forEach((row) => row.classList.toggle("open", row.dataset.run === shown.run));
  }

  async function toggleOverlay(run, on) {
    if (!on) overlay.delete(run);
    else {
      const { response, body } = await getJson(`/api/runs/${encodeURIComponent(run)}`);
      if (response.ok) overlay.set(run, body.history);
    }
    drawOverlay();
  }

  function drawOverlay() {
    const runs = [...overlay.entries()];
    const epochs = Math.max(1, ...runs.map(([, history]) => history.val_accuracy.length));
    overlayChart.draw(
      runs.map(([run, history], index) => ({ name: run, values: history.val_accuracy, className: `c${index % 6}` })),
      { epochs, empty: "tick two or more runs" }
    );
    const legend = $("overlay-legend");
    legend.replaceChildren("validation accuracy of the ticked runs");
    runs.forEach(([run], index) => {
      const key = document.createElement("span");
      key.className = `key c${index % 6}`;
      key.textContent = run;
      legend.append(" ", key);
    });
  }

  // --- Start-up -------------------------------------------------------------------------------

  $("copy-link").addEventListener("click", async () => {
    shareLink.select();
    try {
      await navigator.clipboard.writeText(shareLink.value);
      showStatus("The link is copied.");
    } catch (error) {
      document.execCommand("copy");
    }
  });
  if (window.DigitlabMode.trainHere !== "browser") {
    // Where the page trains in the browser, browser.js owns the form.
    $("train-form").addEventListener("submit", start);
    stopButton.addEventListener("click", stop);
    resumeButton.addEventListener("click", resume);
  }

  async function init() {
    if (window.DigitlabMode.trainHere === "browser") return; // browser.js trains in this page.
    const health = await healthLoaded;
    if (!health || !health.training) return;
    const { response, body } = await getJson("/api/train");
    if (!response.ok) return;
    options = body;
    role = body.role;
    trainCard.hidden = false;
    $("runs-card").hidden = false;
    $("role-note").hidden = role === "operator";
    document.body.classList.toggle("viewer", role !== "operator");
    buildForm();
    drawShown();
    setButtons();
    await loadRuns();
    const wanted = params.get("run");
    if (body.training) {
      const job = body.training;
      watch(job.run, true);
      shown.startedBy = `${job.started_by} at ${job.started}`;
      liveStatus.textContent = `${job.run} is training (epoch ${job.epoch} of ${job.epochs}), started by ${shown.startedBy}.`;
    }
    else if (wanted) watch(wanted);
    else if (health.run) watch(health.run);
  }

  init();
})();
