// contimg live page: WebSockets for status and waterfall (reconnecting), REST for the rest.
// Needs plots.js (helpers, uPlot), waterfall.js and viewer.js loaded before it.
"use strict";
const state = { groups: new Map(), latestGroup: null };

// ---- a reconnecting WebSocket --------------------------------------------------------------------
function connect(path, onMessage, onOpen) {
  let delay = 500, ws = null;
  const url = () => (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path();
  const open = () => {
    ws = new WebSocket(url());
    ws.onopen = () => { delay = 500; setConn(true); if (onOpen) onOpen(ws); };
    ws.onmessage = (ev) => onMessage(JSON.parse(ev.data));
    ws.onclose = () => { setConn(false); setTimeout(open, delay); delay = Math.min(delay * 2, 8000); };
    ws.onerror = () => ws.close();
  };
  open();
  return { send: (obj) => ws && ws.readyState === 1 && ws.send(JSON.stringify(obj)), get: () => ws };
}
function setConn(ok) {
  $("conn").textContent = ok ? "live" : "reconnecting…";
  $("conn").className = "pill " + (ok ? "ok" : "bad");
}

// ---- queue -----------------------------------------------------------------------------------
function renderQueue() {
  const rows = [...state.groups.values()].sort((a, b) => (a.group_id < b.group_id ? 1 : -1)).slice(0, 30);
  emptyState("queue-empty", rows.length ? "" : "No group yet: subband files arriving in the incoming folder " +
    "are collected into groups here (collecting → pending → in_progress → completed).");
  $("queue").tBodies[0].innerHTML = rows.map((g) =>
    `<tr data-group="${g.group_id}" data-state="${g.state}"><td>${g.group_id}</td><td class="state-${g.state}">${g.state}</td>` +
    `<td>${g.stage || ""}</td><td>${g.present_subbands ?? ""}/${g.expected_subbands ?? ""}</td>` +
    `<td title="${esc(g.error)}">${esc((g.error || "").slice(0, 60))}</td></tr>`).join("");
}
async function refreshGroups() {
  try {
    for (const g of await api("/api/groups?limit=30")) state.groups.set(g.group_id, g);
    renderQueue();
  } catch (e) { /* the service may be restarting */ }
}

// ---- status events ---------------------------------------------------------------------------
function onStatus(ev) {
  if (ev.type === "group_state") {
    const g = state.groups.get(ev.group_id) || { group_id: ev.group_id };
    g.state = ev.state; g.stage = ev.stage || g.stage; g.error = ev.error || "";
    state.groups.set(ev.group_id, g); renderQueue(); refreshStatusSoon();
    if (ev.state === "completed") {
      wfFetchFlagger(ev.group_id); refreshImages(); refreshFlags(ev.group_id); refreshCal(); refreshQA(); refreshSkyAfter(ev.group_id);
    }
  } else if (ev.type === "stage_timing") {
    const g = state.groups.get(ev.group_id) || { group_id: ev.group_id, state: "in_progress" };
    if (ev.status === "started") { g.stage = ev.stage; g.state = "in_progress"; }
    if (ev.stage === "flag" && ev.status === "finished") wfFetchFlagger(ev.group_id);
    state.groups.set(ev.group_id, g); renderQueue();
  } else if (ev.type === "alert") {
    const li = document.createElement("li");
    li.textContent = `${new Date(ev.at * 1000).toISOString().slice(11, 19)} ${ev.severity}: ${ev.message}`;
    li.className = ev.severity === "critical" ? "state-failed" : ev.severity === "warning" ? "state-in_progress" : "";
    $("alerts").prepend(li); emptyState("alerts-empty", "");
  } else if (ev.type === "health") {
    refreshStatusSoon();
  }
}
let statusTimer = null;
function refreshStatusSoon() {  // at most one /api/status call per second, however many events arrive
  if (!statusTimer) statusTimer = setTimeout(() => { statusTimer = null; refreshStatus(); }, 1000);
}
// What each task is, in the operator's words; "extraN" are unnamed coroutines run beside the
// service's own tasks (`contimg replay` names its feeder "replay_feeder").
const TASKS = {
  watcher: ["file watcher", "notices subband files arriving in the incoming folder"],
  scheduler: ["scheduler", "claims the next pending group (calibrator transits first)"],
  reader: ["reader", "reads a group's 16 subband files"],
  processor: ["processor", "flags, calibrates and images the group in hand"],
  writer: ["writer", "writes FITS images, thumbnails, QA and database rows"],
  housekeeping: ["housekeeping", "requeues stuck groups, watches disk space, writes state/health.json"],
  web: ["web view", "this page, the REST API and the WebSockets"],
  drain: ["drain", "stops the service once all input is processed"],
  cluster: ["cluster", "sends groups to the Dask workers"],
  replay_feeder: ["replay feeder", "copies the archived files into the incoming folder at the replay speed"],
};
function taskLabel(name) {
  if (/^extra\d+$/.test(name)) return ["replay feeder", "copies the archived files into the incoming folder at the replay speed", true];
  const t = TASKS[name] || [name, ""];
  return [t[0], t[1], name === "drain" || name === "replay_feeder"];  // tasks that end when their work is done
}
function badge(task, st, finishes) {
  if (st === "stopped" && finishes) return `<span class="pill done" title="it ran to its end">finished</span>`;
  const cls = st === "ok" ? "ok" : st === "degraded" ? "warn" : st === "stopped" ? "idle" : "bad";
  const text = st === "ok" ? "running" : st;
  return `<span class="pill ${cls}" data-state="${st}">${text}</span>`;
}
function figure(x) {  // a self-check number: two significant digits, small ones with an exponent
  return x !== 0 && (Math.abs(x) < 1e-3 || Math.abs(x) >= 1e4) ? x.toExponential(1) : x.toPrecision(2);
}
async function refreshStatus() {
  try {
    const s = await api("/api/status");
    $("summary").textContent = `backend ${s.backend} · ${s.completed_last_hour} groups in the last hour · ` +
      `loop lag p99 ${s.loop_lag_ms_p99.toFixed(0)} ms · ${(s.rss_bytes / 2 ** 30).toFixed(2)} GiB · disk ${s.disk}`;
    $("tasks").tBodies[0].innerHTML = s.tasks.map((t) => {
      const [label, what, finishes] = taskLabel(t.task);
      return `<tr data-task="${esc(t.task)}"><td><b>${esc(label)}</b><br><small>${esc(what)}</small></td><td>${badge(t.task, t.state, finishes)}</td></tr>`;
    }).join("");
    $("backends").tBodies[0].innerHTML = Object.entries(s.backends || {}).map(([stage, c]) => {
      const figs = Object.entries(c.figures || {}).map(([name, f]) =>
        `<span class="${f.ok ? "" : "state-failed"}">${esc(name)} ${figure(f.value)} ${f.ok ? "≤" : "&gt;"} ${figure(f.limit)}</span>`).join("<br>");
      const pill = c.backend === "gpu" ? `<span class="pill ok">GPU</span>` : `<span class="pill idle">CPU</span>`;
      return `<tr data-stage="${esc(stage)}"><td><b>${esc(stage)}</b><br><small>asked: ${esc(c.requested)}</small></td>` +
        `<td>${pill}<br><small>${esc(c.reason)}${c.checked ? ` (${c.seconds.toFixed(1)} s)` : ""}</small>` +
        (figs ? `<br><small>${figs}</small>` : "") + `</td></tr>`;
    }).join("");
    $("counts").tBodies[0].innerHTML = Object.entries(s.queue).map(([k, v]) => `<tr><td class="state-${k}">${k}</td><td>${v}</td></tr>`).join("") +
      (s.cluster ? `<tr><td>cluster</td><td>${s.cluster.workers.length} workers · ${Object.keys(s.cluster.in_flight).length} ` +
        `in flight · ${s.cluster.completed_last_hour} done in the last hour</td></tr>` +
        s.cluster.workers.map((w) => `<tr><td>${esc(w.name)}</td><td>${esc(w.host)} · ${w.nthreads} thread(s)</td></tr>`).join("") : "");
  } catch (e) { /* restarting */ }
}

// ---- gains and flags -------------------------------------------------------------------------
async function refreshCal() {
  try {
    const tables = await api("/api/caltables?limit=1");
    if (!tables.length) {
      emptyState("cal-empty", "No calibration solution yet: the bandpass and gains appear after a group in which a " +
        "calibrator transits has been calibrated (or once a solution is registered).");
      return;
    }
    const t = tables[0];
    const g = await api(`/api/caltables/${t.name}/gains?antenna=${$("cal-ant").value}`);
    emptyState("cal-empty", "");
    $("cal-info").textContent = `${t.name} on ${t.calibrator} (${t.status}, valid MJD ${t.valid_start_mjd.toFixed(3)}–` +
      `${t.valid_end_mjd.toFixed(3)}, refant ${t.refant}), antenna ${g.antenna}`;
    linePlot($("bandpass"), g.freq_mhz, g.amp, { xLabel: "frequency (MHz)", yLabel: "|gain| (solution units)", height: 170,
      series: [{ label: "XX |g|" }, { label: "YY |g|" }] });
    linePlot($("phase"), g.freq_mhz, g.phase_deg, { xLabel: "frequency (MHz)", yLabel: "phase (deg)", height: 170,
      yRange: [-180, 180], series: [{ label: "XX phase", unit: "°" }, { label: "YY phase", unit: "°" }] });
  } catch (e) { emptyState("cal-empty", String(e.message || e)); }
}
async function refreshFlags(groupId) {
  try {
    const f = await api(`/api/groups/${groupId}/flags`);
    emptyState("flag-empty", "");
    $("flag-info").textContent = `${groupId}: ${(100 * f.fraction).toFixed(1)} % of the data flagged`;
    linePlot($("flag-ant"), f.per_antenna.map((_, i) => i), [f.per_antenna.map((v) => (v === null ? null : 100 * v))],
      { xLabel: "antenna", yLabel: "flagged (%)", height: 150, yRange: [0, 100], xValue: (u, v) => (v === null ? "–" : "antenna " + v),
        series: [{ label: "flagged", unit: "%", bars: true, color: "#ff7b7b" }] });
    linePlot($("flag-chan"), f.per_channel.map((_, i) => i), [f.per_channel.map((v) => 100 * v)],
      { xLabel: "channel (ascending frequency)", yLabel: "flagged (%)", height: 150, yRange: [0, 100],
        xValue: (u, v) => (v === null ? "–" : "channel " + v), series: [{ label: "flagged", unit: "%", color: "#ffb15e" }] });
  } catch (e) { /* not yet */ }
}
async function refreshLatestFlags() {
  const done = [...state.groups.values()].filter((g) => g.state === "completed").sort((a, b) => (a.group_id < b.group_id ? 1 : -1));
  if (done.length) refreshFlags(done[0].group_id);
  else emptyState("flag-empty", "No flagged group yet: the flagged fraction per antenna and per channel appears when " +
    "the first group has been flagged and written.");
}

// ---- images ----------------------------------------------------------------------------------
async function refreshImages() {
  try {
    const imgs = await api("/api/images?type=restored&limit=6");
    emptyState("images-empty", imgs.length ? "" : "No image yet: each group's restored image appears here when the group completes.");
    $("images").innerHTML = imgs.map((im) =>
      `<figure data-id="${im.id}" title="open the full image"><img src="${im.thumbnail_url}?size=512" alt="restored image of ${im.group_id}">` +
      `<figcaption>${im.group_id}<br>RMS ${fmt(im.noise_jy * 1e3, 2)} mJy/beam · peak ${fmt(im.peak_jy, 3)} Jy/beam · ` +
      `DR ${fmt(im.dynamic_range, 0)}<br>beam ${fmt(im.bmaj_arcsec, 1)}″×${fmt(im.bmin_arcsec, 1)}″ ${fmt(im.bpa_deg, 0)}°</figcaption></figure>`).join("");
    for (const fig of $("images").querySelectorAll("figure")) fig.onclick = () => openViewer(fig.dataset.id);
  } catch (e) { /* restarting */ }
}

// ---- QA --------------------------------------------------------------------------------------
async function refreshQA() {
  try {
    const rows = await api("/api/qa?limit=12");
    emptyState("qa-empty", rows.length ? "" : "No completed group yet: each group's gates (read, flag, calibrate, image) and its " +
      "cross-match with the catalogue appear when it completes.");
    $("qa").tBodies[0].innerHTML = rows.map((q) => {
      const by = Object.fromEntries(q.gates.map((g) => [g.stage, g]));
      const cell = (st) => by[st] ? `<td class="${by[st].passed ? "state-completed" : "state-failed"}" title="${
        esc(by[st].reasons.join("; ") || "passed")}">${by[st].passed ? "pass" : "FAIL"}</td>` : "<td>–</td>";
      const m = (by.image || {}).metrics || {};
      return `<tr data-group="${q.group_id}"><td>${q.group_id}</td>${cell("read")}${cell("flag")}${cell("calibrate")}${cell("image")}` +
        `<td>${m.n_matched ?? "–"}/${m.n_catalogue_detectable ?? "–"}</td><td>${fmt(m.median_offset_beam, 3)} beam</td>` +
        `<td>${fmt(m.flux_ratio, 3)}</td></tr>`;
    }).join("");
    const vars = await api("/api/variables?limit=20");
    const cands = vars.filter((v) => v.candidate);
    emptyState("var-empty", vars.length ? "" : "No light curve yet: every catalogue source in the primary beam is measured " +
      "in every image (forced photometry); η and V appear once a source has two or more measurements.");
    $("variables").tBodies[0].innerHTML = vars.map((v) =>
      `<tr class="${v.candidate ? "candidate" : ""}"><td><a href="/source/${encodeURIComponent(v.source)}">${esc(v.source)}</a>` +
      `${v.candidate ? ' <span class="pill bad">candidate</span>' : ""}</td><td>${v.n}</td>` +
      `<td>${fmt(v.mean_flux_jy * 1e3, 1)}</td><td>${fmt(v.eta, 1)}</td><td>${fmt(v.v, 3)}</td></tr>`).join("");
    $("var-info").textContent = vars.length ? `${cands.length} candidate(s) · highest η first` : "";
  } catch (e) { /* restarting */ }
}

// ---- the strip mosaic and the pipeline's own catalogue -----------------------------------------
const utc = (mjd) => new Date(Math.round((mjd - 40587) * 1440) * 60e3).toISOString().slice(0, 16).replace("T", " ");  // to the minute
async function refreshMosaics() {
  try {
    const rows = await api("/api/mosaics?limit=50");
    rows.sort((a, b) => (a.status === "running") !== (b.status === "running") ? (a.status === "running" ? -1 : 1) : b.start_mjd - a.start_mjd);
    emptyState("mosaic-empty", rows.length ? "" : "No mosaic yet: the running strip mosaic of the current span (mosaic.span_hours, " +
      "aligned to 00:00 UTC) appears when the first group of the drift scan has completed and its catalogue and mosaic " +
      "update has run; a span's fixed FITS product is listed here once the next span begins.");
    $("mosaics").tBodies[0].innerHTML = rows.map((m) => {
      const files = Object.entries(m.files || {}).map(([k, url]) => `<a href="${url}" onclick="event.stopPropagation()">${k}</a>`).join(" ");
      const noise = m.noise_median_jy === null ? "– (when complete)" : `${fmt(m.noise_median_jy * 1e3, 2)} / ${fmt(m.noise_min_jy * 1e3, 2)}`;
      return `<tr data-name="${esc(m.name)}" data-status="${m.status}" title="open ${esc(m.name)} in the viewer"><td>${esc(m.name)}` +
        `${m.kind === "custom" ? " <small>(built on request)</small>" : ""}</td>` +
        `<td><span class="pill ${m.status === "running" ? "warn" : "ok"}">${m.status}</span></td><td>${m.n_groups}</td>` +
        `<td>${utc(m.start_mjd)}–${utc(m.end_mjd).slice(11)}</td><td>${fmt(m.width_deg, 2)}° × ${fmt(m.height_deg, 2)}°</td>` +
        `<td>${noise}</td><td>${files || "<small>Zarr only while running</small>"}</td></tr>`;
    }).join("");
    for (const tr of $("mosaics").tBodies[0].rows) tr.onclick = () => openViewer(`/api/mosaics/${encodeURIComponent(tr.dataset.name)}`);
    $("mosaics").dataset.names = rows.map((m) => m.name).join(",");
    if (rows.length) await mosaicPreview(rows[0]);
  } catch (e) { /* restarting */ }
}
// A preview of the newest (running) mosaic across the panel: its covered part, every Nth pixel.
async function mosaicPreview(row) {
  const base = `/api/mosaics/${encodeURIComponent(row.name)}`, m = await api(`${base}/meta`), b = m.data_box;
  const step = Math.max(m.step, Math.ceil((b[1] - b[0]) / 1600));
  const [data, shape] = await fetchArray(`${base}/array?step=${step}&x0=${b[0]}&y0=${b[2]}&w=${b[1] - b[0]}&h=${b[3] - b[2]}`);
  const c = $("mosaic-preview");
  paintFloat(c, data, shape[0], shape[1], m.median - 3 * m.rms_mad, m.median + 20 * m.rms_mad, "asinh", "inferno");
  c.hidden = false; c.onclick = () => openViewer(base);
  $("mosaic-preview-info").textContent = `${row.name} (${row.status}, ${row.n_groups} group(s)): the part covered so far, ` +
    `−3σ…+20σ asinh, RMS ${fmt(m.rms_mad * 1e3, 2)} mJy/beam`;
}
async function refreshOwn() {
  try {
    const [r, cands] = await Promise.all([fetch("/api/catalogue?order=interest&limit=15"), api("/api/candidates?limit=20")]);
    if (!r.ok) throw new Error("/api/catalogue: " + r.status);
    const srcs = await r.json(), nAll = Number(r.headers.get("X-Total-Count")), nVar = Number(r.headers.get("X-Variable-Count"));
    emptyState("own-empty", srcs.length ? "" : "No source of the pipeline's own catalogue yet: the sources found in each " +
      "group's image (and in the mosaics) appear when the first group's catalogue update has run; each is then measured " +
      "in every image that covers it.");
    $("own-info").textContent = srcs.length ? `${nAll} sources · ${nVar} variability candidate(s) · candidates, then highest η` : "";
    $("own-sources").tBodies[0].innerHTML = srcs.map((s) =>
      `<tr class="${s.variable ? "candidate" : ""}" data-source="${esc(s.name)}"><td><a href="/source/${encodeURIComponent(s.name)}">${esc(s.name)}</a>` +
      `${s.variable ? ' <span class="pill bad">variable</span>' : ""}${s.external_name ? ` <small>= ${esc(s.external_name)}</small>` : ""}</td>` +
      `<td>${s.n_detections}×</td><td>${s.n_forced ?? 0}</td><td>${fmt((s.mean_flux_jy ?? s.flux_jy) * 1e3, 1)}</td>` +
      `<td>${fmt(s.eta, 1)}</td><td>${fmt(s.v, 3)}</td></tr>`).join("");
    const tr = cands.transients;
    emptyState("trans-empty", tr.length ? "" : "No transient candidate: a detection above catalogue.transient_sigma with no " +
      "catalogue counterpart, which the earlier images of the same sky did not see, appears here with its cut-out; " +
      "an operator marks it real or artefact (POST /api/candidates/{id} with the token).");
    $("trans-info").textContent = tr.length ? `${tr.filter((t) => t.status === "new").length} new of ${tr.length}, newest first` : "";
    $("transients").tBodies[0].innerHTML = tr.map((t) =>
      `<tr data-id="${esc(t.id)}" data-status="${t.status}"><td>${t.source ? `<a href="/source/${encodeURIComponent(t.source)}">${esc(t.source)}</a><br>` : ""}` +
      `<small>${esc(t.id)} · ${utc(t.mid_mjd)}</small></td><td>${fmt(t.flux_jy * 1e3, 1)}</td><td>${fmt(t.snr, 1)}</td>` +
      `<td><span class="pill ${t.status}">${t.status}</span></td>` +
      `<td>${t.cutout_url ? `<a href="${t.cutout_url}"><img src="${t.cutout_url}" alt="cut-out of ${esc(t.id)}"></a>` : "–"}</td></tr>`).join("");
  } catch (e) { /* restarting */ }
}
function refreshSky() { refreshMosaics(); refreshOwn(); }
// A completed group's catalogue and mosaic update runs after its "completed" event: look again
// until a mosaic holds the group (or a minute has passed).
const skyWaits = new Set();
async function refreshSkyAfter(groupId) {
  if (skyWaits.has(groupId)) return;
  skyWaits.add(groupId);
  try {
    for (let k = 0; k < 30; k++) {
      const rows = await api("/api/mosaics?limit=5").catch(() => []);
      if (rows.some((m) => (m.groups || []).includes(groupId))) break;
      await new Promise((r) => setTimeout(r, 2000));
    }
  } finally { skyWaits.delete(groupId); refreshSky(); }
}

// ---- wiring ----------------------------------------------------------------------------------
function selection() {
  const mode = $("wf-mode").value;
  if (mode === "ant") return "ant:" + $("wf-ant").value;
  if (mode === "bl") return `bl:${$("wf-bl1").value}-${$("wf-bl2").value}`;
  return "avg";
}
$("wf-mode").onchange = () => { $("wf-ant-label").hidden = $("wf-mode").value !== "ant"; $("wf-bl-label").hidden = $("wf-mode").value !== "bl"; };
const wf = connect(() => `/ws/waterfall?select=${encodeURIComponent(selection())}&pol=${$("wf-pol").value}`, onWaterfall);
$("wf-apply").onclick = () => wf.send({ select: selection(), pol: $("wf-pol").value });
$("wf-flags").onchange = wfRepaint;
$("cal-apply").onclick = refreshCal;
wireViewer();
connect(() => "/ws/status", onStatus, async () => {
  await refreshGroups(); refreshStatus(); refreshImages(); refreshCal(); refreshQA(); refreshLatestFlags(); refreshSky();
});
wfRedraw();
setInterval(() => { refreshStatus(); refreshGroups(); }, 10000);
