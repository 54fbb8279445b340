// The waterfall: time (UTC, x) × frequency (MHz, y) of mean |V| over the selected cross-correlations,
// the last `window_s` of data (web.waterfall_history_s), one block per group as it is read.
// uPlot draws the axes, grid and cursor; each group's block is its own small canvas (one pixel per
// integration and channel bin), coloured once and stretched into the plot, so a new group costs one
// block and one redraw. Flags: each cell is mixed with red by its flagged fraction (all-flagged
// cells are pure red): the flagger's (all cross-correlations, from the group's flags.zarr, once its
// flag stage is done) or the flags as read (the selection's own). Amplitudes are raw correlator
// units, before calibration.
"use strict";
const WF = { blocks: [], windowS: 3600, scale: null, plot: null, key: null, rows: 0 };

function wfCellRgb(amp, flagged, lo, hi, showFlags) {
  let rgb;
  if (amp === null) rgb = showFlags ? FLAG_RGB : [40, 40, 40];
  else {
    const k = Math.max(0, Math.min(255, Math.round(((amp - lo) / (hi - lo || 1)) * 255)));
    rgb = [LUTS.viridis[3 * k], LUTS.viridis[3 * k + 1], LUTS.viridis[3 * k + 2]];
    if (showFlags && flagged > 0) rgb = rgb.map((c, i) => c + flagged * (FLAG_RGB[i] - c));
  }
  return rgb;
}
function wfFlagged(b, t, f) {  // the flagged fraction drawn for a cell, by the "flags" choice
  const mode = $("wf-flags").value;
  if (mode === "off") return 0;
  return mode === "flagger" && b.flagger ? b.flagger[t][f] : b.ev.flagged[t][f];
}
async function wfFetchFlagger(groupId) {  // the flagger's flags of a group's block, once its flag stage is done
  for (const b of WF.blocks.filter((b) => b.ev.group_id === groupId && !b.flagger)) {
    try {
      const r = await api(`/api/groups/${groupId}/flag_waterfall?bins=${b.ev.freq_mhz.length}`);
      if (r.flagged.length === b.ev.amp.length && r.flagged[0].length === b.ev.freq_mhz.length) {
        b.flagger = r.flagged; wfRepaint();
      }
    } catch (e) { /* not flagged yet */ }
  }
}
function wfPaintBlock(b) {  // the group's cells into its own canvas: x = integration, y = bin (top = highest frequency)
  const [lo, hi] = WF.scale, showFlags = $("wf-flags").value !== "off";
  const nt = b.ev.amp.length, nb = b.ev.freq_mhz.length;
  b.canvas.width = nt; b.canvas.height = nb;
  const ctx = b.canvas.getContext("2d"), img = ctx.createImageData(nt, nb);
  for (let t = 0; t < nt; t++) for (let f = 0; f < nb; f++) {
    const rgb = wfCellRgb(b.ev.amp[t][f], wfFlagged(b, t, f), lo, hi, showFlags), i = ((nb - 1 - f) * nt + t) * 4;
    img.data[i] = rgb[0]; img.data[i + 1] = rgb[1]; img.data[i + 2] = rgb[2]; img.data[i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}
function wfScaleOf() {  // 2nd–98th percentile of the cells in the window drawn less than half flagged
  const vals = [];
  for (const b of WF.blocks) b.ev.amp.forEach((row, t) => row.forEach((v, f) => { if (v !== null && wfFlagged(b, t, f) < 0.5) vals.push(v); }));
  if (!vals.length) return null;
  vals.sort((a, b) => a - b);
  return [vals[Math.floor(0.02 * (vals.length - 1))], vals[Math.floor(0.98 * (vals.length - 1))]];
}
function wfTimes(ev) { return ev.time_mjd.map(mjdToUnix); }
function wfDt(ts) { return ts.length > 1 ? (ts[ts.length - 1] - ts[0]) / (ts.length - 1) : 12.88; }

function wfClear() {
  WF.blocks = []; WF.scale = null; WF.rows = 0;
  $("waterfall").dataset.rows = "0";
  wfRedraw();
}
function wfAdd(ev) {
  const times = wfTimes(ev);
  WF.blocks = WF.blocks.filter((b) => b.ev.group_id !== ev.group_id);  // a group read again replaces its block
  WF.blocks.push({ ev, times, dt: wfDt(times), canvas: document.createElement("canvas"), flagger: null });
  WF.blocks.sort((a, b) => a.times[0] - b.times[0]);
  const newest = WF.blocks[WF.blocks.length - 1].times.at(-1);
  WF.blocks = WF.blocks.filter((b) => newest - b.times.at(-1) <= WF.windowS);
  const scale = wfScaleOf();
  const rescale = !WF.scale || !scale || Math.abs(scale[0] - WF.scale[0]) > 1e-9 || Math.abs(scale[1] - WF.scale[1]) > 1e-9;
  WF.scale = scale;
  if (WF.scale) for (const b of WF.blocks) if (rescale || !b.painted) { wfPaintBlock(b); b.painted = true; }
  WF.rows = WF.blocks.reduce((n, b) => n + b.ev.amp.length, 0);
  $("waterfall").dataset.rows = String(WF.rows);
  $("waterfall").dataset.groups = String(WF.blocks.length);
  wfRedraw();
  // the flagger's flags exist once the group is past its flag stage (a live group is only being read:
  // its "flag finished" event fetches them); a group from the history usually is
  const g = typeof state !== "undefined" ? state.groups.get(ev.group_id) : null;
  if (!g || g.state === "completed" || (g.state === "in_progress" && !["", "read", "flag"].includes(g.stage || ""))) wfFetchFlagger(ev.group_id);
}
function wfRepaint() {  // flags changed: a new scale, every block again
  WF.scale = wfScaleOf();
  if (WF.scale) for (const b of WF.blocks) { wfPaintBlock(b); b.painted = true; }
  wfRedraw();
}

function wfRange() {
  if (!WF.blocks.length) return null;
  const first = WF.blocks[0], last = WF.blocks[WF.blocks.length - 1];
  const f = last.ev.freq_mhz, df = f.length > 1 ? (f[f.length - 1] - f[0]) / (f.length - 1) : 1;
  return { t0: first.times[0] - first.dt / 2, t1: last.times.at(-1) + last.dt / 2, f0: f[0] - df / 2, f1: f.at(-1) + df / 2 };
}
function wfDrawBlocks(u) {
  const ctx = u.ctx, { left, top, width, height } = u.bbox;
  ctx.save(); ctx.beginPath(); ctx.rect(left, top, width, height); ctx.clip();
  ctx.imageSmoothingEnabled = false;
  for (const b of WF.blocks) {
    const f = b.ev.freq_mhz, df = f.length > 1 ? (f[f.length - 1] - f[0]) / (f.length - 1) : 1;
    const x0 = u.valToPos(b.times[0] - b.dt / 2, "x", true), x1 = u.valToPos(b.times.at(-1) + b.dt / 2, "x", true);
    const y0 = u.valToPos(f.at(-1) + df / 2, "y", true), y1 = u.valToPos(f[0] - df / 2, "y", true);
    ctx.drawImage(b.canvas, x0, y0, Math.max(1, x1 - x0), Math.max(1, y1 - y0));
  }
  ctx.restore();
}
function wfCellAt(tUnix, fMhz) {  // the data under a time and frequency, or null
  for (const b of WF.blocks) {
    if (tUnix < b.times[0] - b.dt / 2 || tUnix > b.times.at(-1) + b.dt / 2) continue;
    const t = Math.max(0, Math.min(b.times.length - 1, Math.round((tUnix - b.times[0]) / b.dt)));
    const f = b.ev.freq_mhz, df = f.length > 1 ? (f[f.length - 1] - f[0]) / (f.length - 1) : 1;
    const k = Math.round((fMhz - f[0]) / df);
    if (k < 0 || k >= f.length) return null;
    return { group_id: b.ev.group_id, t: b.times[t], f: f[k], amp: b.ev.amp[t][k], read: b.ev.flagged[t][k],
      flagger: b.flagger ? b.flagger[t][k] : null };
  }
  return null;
}
function wfRedraw() {
  const el = $("waterfall"), r = wfRange();
  emptyState("wf-empty", r ? "" : "Waiting for data: a group's rows appear here as soon as its 16 subband files have been read " +
    "(one group every ~5 minutes live, every few seconds in a fast replay). Another selection than the default fills from the next group read.");
  el.hidden = !r; $("wf-cb").hidden = !r; $("wf-text").hidden = !r;
  if (!r) return;
  const width = Math.max(300, el.clientWidth || 800), height = Math.max(220, Math.min(420, Math.round(width * 0.38)));
  if (!WF.plot) {
    WF.plot = new uPlot({
      width, height, tzDate: utcDate, legend: { show: false },
      cursor: { drag: { x: false, y: false }, points: { show: false } },
      scales: { x: { time: true, range: () => { const q = wfRange(); return q ? [q.t0, q.t1] : [0, 1]; } },
                y: { range: () => { const q = wfRange(); return q ? [q.f0, q.f1] : [0, 1]; } } },
      axes: [axis("time (UTC)", { values: utcTicks }), axis("frequency (MHz)", { size: 60 })],
      series: [{}, { stroke: "transparent", points: { show: false } }],
      hooks: { draw: [wfDrawBlocks], setCursor: [wfHover] },
    }, [[0, 1], [null, null]], el);
    new ResizeObserver(() => { if (WF.plot && el.clientWidth) {
      const w = Math.max(300, el.clientWidth); WF.plot.setSize({ width: w, height: Math.max(220, Math.min(420, Math.round(w * 0.38))) }); } }).observe(el);
  }
  WF.plot.setData([[r.t0, r.t1], [null, null]]);
  const cb = $("wf-colorbar");
  if (cb.height !== WF.plot.height) cb.height = WF.plot.height;
  wfColorbar();
  const last = WF.blocks[WF.blocks.length - 1].ev;
  let flaggedSum = 0, allCells = 0;
  for (const b of WF.blocks) for (let t = 0; t < b.ev.amp.length; t++) for (let f = 0; f < b.ev.freq_mhz.length; f++) {
    flaggedSum += wfFlagged(b, t, f); allCells++;
  }
  const pending = WF.blocks.filter((b) => !b.flagger).length;
  $("wf-info").textContent = `${last.selection} ${last.pol} · ${WF.blocks.length} group(s), ${WF.rows} integrations ` +
    `(${utcHms(r.t0)}–${utcHms(r.t1)} UTC, window ${(WF.windowS / 60).toFixed(0)} min) · latest ${last.group_id} · ` +
    `${(100 * flaggedSum / allCells).toFixed(1)} % flagged as drawn` +
    ($("wf-flags").value === "flagger" && pending ? ` (${pending} group(s) not flagged yet: flags as read)` : "");
}
function wfHover(u) {
  const out = $("wf-hover");
  if (u.cursor.left === null || u.cursor.left < 0) { out.textContent = "hover over the waterfall for values"; return; }
  const c = wfCellAt(u.posToVal(u.cursor.left, "x"), u.posToVal(u.cursor.top, "y"));
  out.textContent = c ? `${utcHms(c.t)} UTC · ${c.f.toFixed(3)} MHz · |V| ${c.amp === null ? "all flagged" : c.amp.toPrecision(4) + " (raw)"} · ` +
    `flagged ${c.flagger === null ? "– (not flagged yet)" : (100 * c.flagger).toFixed(1) + " %"} by the flagger (all baselines), ` +
    `${(100 * c.read).toFixed(1)} % as read · group ${c.group_id}` : "";
}
function wfColorbar() {  // the amplitude scale with ticks, and the flag scale
  const c = $("wf-colorbar"), ctx = c.getContext("2d"), [lo, hi] = WF.scale || [0, 1];
  const H = c.height, W = c.width, barTop = 10, barH = H - 70;
  ctx.clearRect(0, 0, W, H);
  for (let y = 0; y < barH; y++) {
    const k = Math.round(255 * (1 - y / (barH - 1)));
    ctx.fillStyle = `rgb(${LUTS.viridis[3 * k]},${LUTS.viridis[3 * k + 1]},${LUTS.viridis[3 * k + 2]})`;
    ctx.fillRect(0, barTop + y, 14, 1);
  }
  ctx.fillStyle = THEME.axis; ctx.font = "11px system-ui, sans-serif"; ctx.textBaseline = "middle";
  for (let i = 0; i <= 4; i++) {
    const v = lo + (i / 4) * (hi - lo), y = barTop + (1 - i / 4) * (barH - 1);
    ctx.fillRect(14, y, 4, 1); ctx.fillText(v.toPrecision(3), 20, y);
  }
  // the flag scale: mid-scale data mixed with red by the flagged fraction, 0 → 100 %
  const fy = barTop + barH + 26;
  for (let x = 0; x < 50; x++) {
    const rgb = wfCellRgb((lo + hi) / 2, x / 49, lo, hi, true);
    ctx.fillStyle = `rgb(${rgb.map(Math.round).join(",")})`; ctx.fillRect(x, fy, 1, 10);
  }
  ctx.fillStyle = THEME.axis; ctx.fillText("flagged", 0, fy - 8); ctx.fillText("0", 0, fy + 20); ctx.fillText("100 %", 32, fy + 20);
}
// For tests and the curious: the colour drawn at a time (MJD) and frequency (MHz).
window.wfProbe = (mjd, fMhz) => {
  if (!WF.plot) return null;
  const u = WF.plot, x = u.valToPos(mjdToUnix(mjd), "x", true), y = u.valToPos(fMhz, "y", true);
  const d = u.ctx.getImageData(Math.round(x), Math.round(y), 1, 1).data;
  return { rgb: [d[0], d[1], d[2]], x, y };
};

function onWaterfall(ev) {
  if (ev.type === "window") {  // history follows; what the page has stays (a restart)
    WF.windowS = ev.window_s; $("waterfall").dataset.select = `${ev.select} ${ev.pol}`; return;
  }
  if (ev.type === "selected") { wfClear(); return; }
  if (ev.type === "error") { $("wf-hover").textContent = ev.message; return; }
  if (ev.type !== "waterfall") return;
  wfAdd(ev);
}
