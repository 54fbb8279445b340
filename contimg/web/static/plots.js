// Shared by the live page and the source page: uPlot line/bar plots in the page's colours,
// colour maps, number and time formatting. uPlot (vendored, /static/vendor/) draws axes, ticks,
// grid, legend and the values under the cursor.
"use strict";
const $ = (id) => document.getElementById(id);
const THEME = { axis: "#8a96a8", grid: "#2a3344", series: ["#5ec8ff", "#ffb15e", "#9cff5e", "#ff7bd5"] };

// ---- colour maps (viridis and grey, as 256-entry lookup tables) --------------------------------
const VIRIDIS = [[68,1,84],[71,44,122],[59,81,139],[44,113,142],[33,144,141],[39,173,129],[92,200,99],[170,220,50],[253,231,37]];
function anchorsLut(anchors) {
  const lut = new Uint8ClampedArray(256 * 3);
  for (let k = 0; k < 256; k++) {
    const x = (k / 255) * (anchors.length - 1), i = Math.min(anchors.length - 2, Math.floor(x)), f = x - i;
    for (let c = 0; c < 3; c++) lut[3 * k + c] = anchors[i][c] + f * (anchors[i + 1][c] - anchors[i][c]);
  }
  return lut;
}
const LUTS = { viridis: anchorsLut(VIRIDIS), grey: anchorsLut([[0, 0, 0], [255, 255, 255]]),
  inferno: anchorsLut([[0,0,4],[40,11,84],[101,21,110],[159,42,99],[212,72,66],[245,125,21],[250,193,39],[252,255,164]]) };
const FLAG_RGB = [255, 48, 48];  // flagged data: red, a colour none of the maps uses

// ---- formatting ------------------------------------------------------------------------------
const fmt = (x, d) => (x === null || x === undefined || !isFinite(x) ? "–" : Number(x).toFixed(d));
const esc = (s) => String(s ?? "").replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
const mjdToUnix = (mjd) => (mjd - 40587) * 86400;
const utcDate = (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC");
function utcTicks(u, splits) { return splits.map((v) => utcHms(v)); }  // time axes: HH:MM:SS UTC
function utcHms(unix) { return new Date(unix * 1e3).toISOString().slice(11, 19); }
function sexa(deg, hours) {  // RA in h:m:s (hours=true) or Dec in ±d:m:s
  let v = hours ? (((deg % 360) + 360) % 360) / 15 : Math.abs(deg);
  const a = Math.floor(v), b = Math.floor((v - a) * 60), c = ((v - a) * 60 - b) * 60;
  const s = `${String(a).padStart(2, "0")}:${String(b).padStart(2, "0")}:${c.toFixed(hours ? 2 : 1).padStart(hours ? 5 : 4, "0")}`;
  return hours ? s : (deg < 0 ? "−" : "+") + s;
}

// ---- plots -----------------------------------------------------------------------------------
function axis(label, extra) {
  return { label, stroke: THEME.axis, grid: { stroke: THEME.grid, width: 1 }, ticks: { stroke: THEME.grid, width: 1 },
    labelSize: 18, font: "11px system-ui, sans-serif", labelFont: "12px system-ui, sans-serif", ...extra };
}
// A line (or bar) plot in `el`: xs and one array per series (null = no value).
// opts: {xLabel, yLabel, series: [{label, unit, color, bars, dash, points}], xTime, height, yRange, xValue}
function linePlot(el, xs, ys, opts) {
  const width = Math.max(240, el.clientWidth || 400), height = opts.height || 180;
  const series = [{ label: opts.xLabel, value: opts.xValue || ((u, v) => (v === null ? "–" : opts.xTime ? utcHms(v) : v.toPrecision(5))) }];
  opts.series.forEach((s, k) => series.push({
    label: s.label, stroke: s.color || THEME.series[k % THEME.series.length], width: 1.5, dash: s.dash,
    fill: s.bars ? (s.color || THEME.series[k]) + "88" : undefined, spanGaps: false,
    paths: s.bars ? uPlot.paths.bars({ size: [0.9, 40] }) : s.points ? () => null : undefined,
    points: { show: s.points || undefined, size: s.points ? 6 : 4, fill: s.color || THEME.series[k] },
    value: (u, v) => (v === null || v === undefined ? "–" : (Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-3 && v !== 0) ? v.toExponential(3) : v.toPrecision(4)) + (s.unit ? " " + s.unit : "")),
  }));
  const o = {
    width, height, series, legend: { live: true }, cursor: { drag: { x: true, y: false } },
    scales: { x: { time: !!opts.xTime }, y: opts.yRange ? { range: opts.yRange } : {} },
    axes: [axis(opts.xLabel, opts.xTime ? { values: utcTicks } : {}), axis(opts.yLabel, { size: 60, space: 18 })],
    hooks: opts.hooks || {},
  };
  if (opts.xTime) { o.tzDate = utcDate; o.scales.x.range = (u, lo, hi) => { const pad = Math.max(60, 0.05 * (hi - lo)); return [lo - pad, hi + pad]; }; }
  if (el._plot) el._plot.destroy();
  el.innerHTML = "";
  el._plot = new uPlot(o, [xs, ...ys], el);
  el.dataset.points = String(xs.length);
  if (!el._resize) {
    el._resize = new ResizeObserver(() => { if (el._plot && el.clientWidth) el._plot.setSize({ width: Math.max(240, el.clientWidth), height }); });
    el._resize.observe(el);
  }
  return el._plot;
}
// Show `msg` in the panel's empty-state element (and hide its plots), or hide it (msg = "").
function emptyState(id, msg) {
  const e = $(id);
  if (!e) return;
  e.hidden = !msg; e.textContent = msg || "";
  const holder = e.closest("section");
  if (holder) holder.dataset.empty = msg ? "1" : "0";
}
async function api(path) {
  const r = await fetch(path);
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}
// For tests: the axes of the plot in element `id` (or the waterfall's): label and the tick labels drawn.
window.plotAxes = (id) => {
  const u = id === "waterfall" ? WF.plot : ($(id) || {})._plot;
  return u ? u.axes.map((a) => ({ label: a.label, ticks: (a._values || []).map(String) })) : null;
};
