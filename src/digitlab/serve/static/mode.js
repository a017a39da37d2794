// digitlab: where this page trains, decided once before the other scripts run.
// `DigitlabMode.staticSite`: the page came from `digitlab site` (no server behind it).
// `DigitlabMode.trainHere`: "browser" (the default wherever WebAssembly runs: browser.js trains in a
// Worker) or "server" (no WebAssembly, or ?train=server: live.js asks the server to train).
"use strict";

window.DigitlabMode = (() => {
  const staticSite = !!document.querySelector('meta[name="digitlab-mode"][content="static"]');
  const wasm = typeof WebAssembly === "object" && typeof Worker === "function";
  const asked = new URLSearchParams(location.search).get("train");
  const trainHere = wasm && (staticSite || asked !== "server") ? "browser" : "server";
  document.documentElement.dataset.train = trainHere;
  return { staticSite, wasm, trainHere };
})();
