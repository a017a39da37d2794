// digitlab charts: small SVG line charts of values per epoch, drawn by hand (no library, nothing
// from the network; the page's Content-Security-Policy allows only its own scripts and no inline styles).
//   const chart = Charts.lineChart(svgElement, { yMax: 1 });   // 0 to 1; or yMax: null to fit the values
//   chart.draw([{ name: "val_accuracy", values: [...], className: "valid" }], { epochs: 200, marker: 12 });
// Every value is a point (an SVG circle of class "point", its series' class beside it) joined by a line.
"use strict";

const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg"; // SVG's namespace name (an identifier; nothing is fetched from it).
  const MARGIN = { left: 40, right: 10, top: 10, bottom: 26 };

  function element(name, attributes, parent) {
    const node = document.createElementNS(NS, name);
    Object.entries(attributes).forEach(([key, value]) => node.setAttribute(key, String(value)));
    if (parent) parent.appendChild(node);
    return node;
  }

  function niceStep(range, count) {
    const raw = range / Math.max(count, 1);
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    const scaled = raw / power;
    return (scaled <= 1 ? 1 : scaled <= 2 ? 2 : scaled <= 5 ? 5 : 10) * power;
  }

  function format(value, step) {
    const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
    return Math.abs(value) < step / 1e6 ? "0" : value.toFixed(decimals);
  }

  function lineChart(svg, options = {}) {
    const box = svg.viewBox.baseVal;
    const width = box.width;
    const height = box.height;
    const plotWidth = width - MARGIN.left - MARGIN.right;
    const plotHeight = height - MARGIN.top - MARGIN.bottom;

    function draw(series, { epochs = 1, marker = null, empty = "no epochs yet" } = {}) {
      svg.replaceChildren();
      const finite = series.flatMap((each) => each.values).filter((value) => Number.isFinite(value));
      // A fixed range (accuracy: 0 to 1), or the values' own range with a margin (loss).
      let [yMin, yMax] = [0, options.yMax ?? 1];
      if (options.yMax == null && finite.length) {
        const low = Math.min(...finite);
        const high = Math.max(...finite);
        const margin = high > low ? (high - low) * 0.08 : Math.abs(high) * 0.05 || 0.5;
        [yMin, yMax] = [Math.max(0, low - margin), high + margin];
      }
      const xMax = Math.max(epochs, 1, ...series.map((each) => each.values.length));
      const x = (epoch) => MARGIN.left + (xMax === 1 ? plotWidth / 2 : ((epoch - 1) / (xMax - 1)) * plotWidth);
      const y = (value) =>
        MARGIN.top + plotHeight - ((Math.min(Math.max(value, yMin), yMax) - yMin) / (yMax - yMin)) * plotHeight;

      const grid = element("g", { class: "grid" }, svg);
      const yStep = niceStep(yMax - yMin, 4);
      for (let value = Math.ceil(yMin / yStep - 1e-9) * yStep; value <= yMax + 1e-9; value += yStep) {
        element("line", { x1: MARGIN.left, x2: width - MARGIN.right, y1: y(value), y2: y(value) }, grid);
        element("text", { x: MARGIN.left - 6, y: y(value) + 3.5, "text-anchor": "end" }, grid).textContent = format(value, yStep);
      }
      const xStep = Math.max(1, niceStep(Math.max(xMax - 1, 1), 5));
      const xTicks = new Set([1, xMax]);
      for (let epoch = xStep; epoch < xMax - xStep / 2; epoch += xStep) xTicks.add(Math.round(epoch));
      [...xTicks].forEach((epoch) => {
        element("text", { x: x(epoch), y: height - 8, "text-anchor": "middle" }, grid).textContent = String(epoch);
      });
      element("line", { class: "axis", x1: MARGIN.left, x2: width - MARGIN.right, y1: y(yMin), y2: y(yMin) }, svg);

      if (marker !== null && marker >= 1) {
        element("line", { class: "marker", x1: x(marker), x2: x(marker), y1: MARGIN.top, y2: y(yMin) }, svg);
      }
      if (!finite.length) {
        element("text", { class: "empty", x: MARGIN.left + plotWidth / 2, y: MARGIN.top + plotHeight / 2, "text-anchor": "middle" }, svg).textContent = empty;
      }
      series.forEach((each) => {
        const group = element("g", { class: `series ${each.className || ""}`, "data-series": each.name }, svg);
        const points = each.values
          .map((value, index) => [index + 1, value])
          .filter(([, value]) => Number.isFinite(value));
        if (points.length > 1) {
          element("polyline", { points: points.map(([epoch, value]) => `${x(epoch).toFixed(1)},${y(value).toFixed(1)}`).join(" ") }, group);
        }
        const radius = points.length > 60 ? 1.2 : 2.6;
        points.forEach(([epoch, value]) => {
          const point = element("circle", { class: "point", cx: x(epoch).toFixed(1), cy: y(value).toFixed(1), r: radius }, group);
          point.dataset.epoch = String(epoch);
        });
      });
    }

    return { draw };
  }

  return { lineChart };
})();
