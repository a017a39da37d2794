// digitlab: what this page can do here, decided once before the other scripts run.
// `DigitlabMode.staticSite`: the page came from `digitlab site` (no server behind it).
// `DigitlabMode.trainHere`: "browser" wherever WebAssembly and Workers run (browser.js trains in a Worker),
// else null: the page then says it cannot train in this browser, and still shows the server's runs.
"use strict";

window.DigitlabMode = (() => {
  const staticSite = !!document.querySelector('meta[name="digitlab-mode"][content="static"]');
  const wasm = typeof WebAssembly === "object" && typeof Worker === "function";
  const trainHere = wasm ? "browser" : null;
  document.documentElement.dataset.train = trainHere || "none";
  return { staticSite, wasm, trainHere };
})();
