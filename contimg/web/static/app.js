// contimg live page: WebSockets for status and waterfall (reconnecting), REST for the rest.
"use strict";
const $ = (id) => document.getElementById(id);
const state = { groups: new Map(), wfRows: 0, wfScale: null, latestCal: null, latestGroup: null };

// ---- colour map (viridis, 9 anchors, linear in between) ----------------------------------------
const VIRIDIS = [[68,1,84],[71,44,122],[59,81,139],[44,113,142],[33,144,141],[39,173,129],[92,200,99],[170,220,50],[253,231,37]];
function viridis(x) {
  x = Math.min(1, Math.max(0, x)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x)), f = x - i, a = VIRIDIS[i], b = VIRIDIS[i + 1];
  return [a[0] + f * (b[0] - a[0]), a[1] + f * (b[1] - a[1]), a[2] + f * (b[2] - a[2])];
}

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
let connected = { status: false };
function setConn(ok) {
  connected.status = ok;
  $("conn").textContent = ok ? "live" : "reconnecting…";
  $("conn").className = "pill " + (ok ? "ok" : "bad");
}
async function api(path) {
  const r = await fetch(path);
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}

// ---- queue -----------------------------------------------------------------------------------
function renderQueue() {
  const rows = [...state.groups.values()].sort((a, b) => (a.group_id < b.group_id ? 1 : -1)).slice(0, 30);
  $("queue").tBodies[0].innerHTML = rows.map((g) =>
    `<tr data-group="${g.group_id}" data-state="${g.state}"><td>${g.group_id}</td><td class="state-${g.state}">${g.state}</td>` +
    `<td>${g.stage || ""}</td><td>${g.present_subbands ?? ""}/${g.expected_subbands ?? ""}</td>` +
    `<td title="${(g.error || "").replace(/"/g, "&quot;")}">${(g.error || "").slice(0, 60)}</td></tr>`).join("");
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
    if (ev.state === "completed") { refreshImages(); refreshFlags(ev.group_id); refreshCal(); refreshQA(); }
  } else if (ev.type === "stage_timing") {
    const g = state.groups.get(ev.group_id) || { group_id: ev.group_id, state: "in_progress" };
    if (ev.status === "started") { g.stage = ev.stage; g.state = "in_progress"; }
    state.groups.set(ev.group_id, g); renderQueue();
  } else if (ev.type === "alert") {
    const li = document.createElement("li");
    li.textContent = `${new Date(ev.at * 1000).toISOString().slice(11, 19)} ${ev.severity}: ${ev.message}`;
    li.className = ev.severity === "critical" ? "state-failed" : ev.severity === "warning" ? "state-in_progress" : "";
    $("alerts").prepend(li);
  } else if (ev.type === "health") {
    refreshStatusSoon();
  }
}
let statusTimer = null;
function refreshStatusSoon() {  // at most one /api/status call per second, however many events arrive
  if (!statusTimer) statusTimer = setTimeout(() => { statusTimer = null; refreshStatus(); }, 1000);
}
async function refreshStatus() {
  try {
    const s = await api("/api/status");
    $("summary").textContent = `backend ${s.backend} · ${s.completed_last_hour} groups in the last hour · ` +
      `loop lag p99 ${s.loop_lag_ms_p99.toFixed(0)} ms · ${(s.rss_bytes / 2 ** 30).toFixed(2)} GiB · disk ${s.disk}`;
    $("tasks").tBodies[0].innerHTML = s.tasks.map((t) =>
      `<tr><td>${t.task}</td><td><span class="pill ${t.state === "ok" ? "ok" : t.state === "degraded" ? "warn" : "bad"}">${t.state}</span></td></tr>`).join("") +
      Object.entries(s.queue).map(([k, v]) => `<tr><td>${k}</td><td>${v}</td></tr>`).join("") +
      (s.cluster ? `<tr><td>cluster</td><td>${s.cluster.workers.length} workers · ${Object.keys(s.cluster.in_flight).length} ` +
        `in flight · ${s.cluster.completed_last_hour} done in the last hour</td></tr>` +
        s.cluster.workers.map((w) => `<tr><td>${w.name}</td><td>${w.host} · ${w.nthreads} thread(s)</td></tr>`).join("") : "");
  } catch (e) { /* restarting */ }
}

// ---- waterfall -------------------------------------------------------------------------------
function selection() {
  const mode = $("wf-mode").value;
  if (mode === "ant") return "ant:" + $("wf-ant").value;
  if (mode === "bl") return `bl:${$("wf-bl1").value}-${$("wf-bl2").value}`;
  return "avg";
}
function clearWaterfall() {
  const c = $("waterfall"), ctx = c.getContext("2d");
  ctx.fillStyle = "#0b0e13"; ctx.fillRect(0, 0, c.width, c.height);
  state.wfRows = 0; state.wfScale = null;
}
function drawColorbar(lo, hi) {
  const c = $("colorbar"), ctx = c.getContext("2d");
  for (let y = 0; y < c.height; y++) {
    const [r, g, b] = viridis(1 - y / (c.height - 1));
    ctx.fillStyle = `rgb(${r},${g},${b})`; ctx.fillRect(0, y, c.width, 1);
  }
  $("cb-labels").innerHTML = `<span>${hi.toPrecision(3)}</span><span>|V|</span><span>${lo.toPrecision(3)}</span>`;
}
function onWaterfall(ev) {
  if (ev.type === "selected") { clearWaterfall(); return; }
  if (ev.type !== "waterfall") return;
  const c = $("waterfall"), ctx = c.getContext("2d");
  const nbin = ev.freq_mhz.length, nt = ev.amp.length;
  if (!state.wfScale) {
    const vals = ev.amp.flat().filter((v) => v !== null).sort((a, b) => a - b);
    if (!vals.length) return;
    state.wfScale = [vals[Math.floor(0.02 * vals.length)], vals[Math.floor(0.98 * (vals.length - 1))]];
    drawColorbar(...state.wfScale);
  }
  const [lo, hi] = state.wfScale, rowH = 3, showFlags = $("wf-flags").checked;
  // scroll up by the new rows, draw them at the bottom
  const shift = nt * rowH;
  ctx.drawImage(c, 0, -shift);
  const img = ctx.createImageData(c.width, shift);
  for (let t = 0; t < nt; t++) {
    for (let x = 0; x < c.width; x++) {
      const b = Math.min(nbin - 1, Math.floor((x * nbin) / c.width));
      const v = ev.amp[t][b], f = ev.flagged[t][b];
      let rgb = v === null ? [40, 40, 40] : viridis((v - lo) / (hi - lo || 1));
      if (showFlags && f > 0.5) rgb = [255, 0, 200];
      for (let dy = 0; dy < rowH; dy++) {
        const i = ((t * rowH + dy) * c.width + x) * 4;
        img.data[i] = rgb[0]; img.data[i + 1] = rgb[1]; img.data[i + 2] = rgb[2]; img.data[i + 3] = 255;
      }
    }
  }
  ctx.putImageData(img, 0, c.height - shift);
  state.wfRows += nt;
  c.dataset.rows = state.wfRows;
  $("wf-info").textContent = `${ev.selection} ${ev.pol} · last group ${ev.group_id} · ` +
    `${ev.freq_mhz[0].toFixed(1)}–${ev.freq_mhz[nbin - 1].toFixed(1)} MHz · ${state.wfRows} integrations`;
}

// ---- line plots ------------------------------------------------------------------------------
function plot(canvas, xs, series, label) {
  const ctx = canvas.getContext("2d"), W = canvas.width, H = canvas.height;
  ctx.fillStyle = "#0b0e13"; ctx.fillRect(0, 0, W, H);
  const all = series.flat().filter((v) => v !== null && isFinite(v));
  if (!all.length) return;
  let lo = Math.min(...all), hi = Math.max(...all); if (hi === lo) { hi += 1; lo -= 1; }
  const x0 = Math.min(...xs), x1 = Math.max(...xs);
  const colors = ["#5ec8ff", "#ffb15e", "#9cff5e"];
  series.forEach((ys, k) => {
    ctx.strokeStyle = colors[k % colors.length]; ctx.beginPath(); let pen = false;
    ys.forEach((y, i) => {
      if (y === null || !isFinite(y)) { pen = false; return; }
      const px = 30 + ((xs[i] - x0) / (x1 - x0 || 1)) * (W - 40), py = H - 15 - ((y - lo) / (hi - lo)) * (H - 30);
      pen ? ctx.lineTo(px, py) : ctx.moveTo(px, py); pen = true;
    });
    ctx.stroke();
  });
  ctx.fillStyle = "#8a96a8"; ctx.font = "11px sans-serif";
  ctx.fillText(`${label}  [${lo.toPrecision(3)}, ${hi.toPrecision(3)}]`, 32, 12);
}
async function refreshCal() {
  try {
    const tables = await api("/api/caltables?limit=1");
    if (!tables.length) { $("cal-info").textContent = "no solution yet"; return; }
    state.latestCal = tables[0];
    const g = await api(`/api/caltables/${tables[0].name}/gains?antenna=${$("cal-ant").value}`);
    $("cal-info").textContent = `${tables[0].name} on ${tables[0].calibrator} (${tables[0].status}, valid MJD ` +
      `${tables[0].valid_start_mjd.toFixed(3)}–${tables[0].valid_end_mjd.toFixed(3)}), antenna ${g.antenna}`;
    plot($("bandpass"), g.freq_mhz, g.amp, "bandpass |g| (XX blue, YY orange)");
    plot($("phase"), g.freq_mhz, g.phase_deg, "gain phase (deg)");
  } catch (e) { $("cal-info").textContent = String(e.message || e); }
}
async function refreshFlags(groupId) {
  try {
    const f = await api(`/api/groups/${groupId}/flags`);
    $("flag-info").textContent = `${groupId}: ${(100 * f.fraction).toFixed(1)} % flagged`;
    const ants = f.per_antenna.map((_, i) => i);
    plot($("flag-ant"), ants, [f.per_antenna], "flagged fraction per antenna");
    plot($("flag-chan"), f.per_channel.map((_, i) => i), [f.per_channel], "flagged fraction per channel");
  } catch (e) { /* not yet */ }
}
async function refreshImages() {
  try {
    const imgs = await api("/api/images?type=restored&limit=6");
    $("images").innerHTML = imgs.map((im) =>
      `<figure data-id="${im.id}"><img src="${im.thumbnail_url}?size=256" alt="${im.group_id}">` +
      `<figcaption>${im.group_id}<br>rms ${(im.noise_jy * 1e3).toFixed(2)} mJy · peak ${im.peak_jy.toFixed(3)} Jy · ` +
      `DR ${im.dynamic_range.toFixed(0)}<br>beam ${im.bmaj_arcsec.toFixed(1)}″×${im.bmin_arcsec.toFixed(1)}″ ${im.bpa_deg.toFixed(0)}°</figcaption></figure>`).join("");
    for (const fig of $("images").querySelectorAll("figure")) {
      fig.onclick = () => {
        const im = imgs.find((i) => String(i.id) === fig.dataset.id);
        $("zoom-img").src = im.thumbnail_url + "?size=1024";
        $("zoom-text").textContent = JSON.stringify(im, null, 1);
        $("zoom").showModal();
      };
    }
  } catch (e) { /* restarting */ }
}

// ---- QA --------------------------------------------------------------------------------------
const fmt = (x, d) => (x === null || x === undefined ? "–" : Number(x).toFixed(d));
async function refreshQA() {
  try {
    const rows = await api("/api/qa?limit=12");
    $("qa").tBodies[0].innerHTML = rows.map((q) => {
      const by = Object.fromEntries(q.gates.map((g) => [g.stage, g]));
      const cell = (st) => by[st] ? `<td class="${by[st].passed ? "state-completed" : "state-failed"}" title="${
        (by[st].reasons.join("; ") || "passed").replace(/"/g, "&quot;")}">${by[st].passed ? "pass" : "FAIL"}</td>` : "<td>–</td>";
      const m = (by.image || {}).metrics || {};
      return `<tr data-group="${q.group_id}"><td>${q.group_id}</td>${cell("read")}${cell("flag")}${cell("calibrate")}${cell("image")}` +
        `<td>${m.n_matched ?? "–"}/${m.n_catalogue_detectable ?? "–"}</td><td>${fmt(m.median_offset_beam, 3)} beam</td>` +
        `<td>${fmt(m.flux_ratio, 3)}</td></tr>`;
    }).join("");
    const vars = await api("/api/variables?candidates_only=true&limit=20");
    $("variables").tBodies[0].innerHTML = vars.map((v) =>
      `<tr><td><a href="/api/lightcurves/${encodeURIComponent(v.source)}">${v.source}</a></td><td>${v.n}</td>` +
      `<td>${fmt(v.mean_flux_jy * 1e3, 1)}</td><td>${fmt(v.eta, 1)}</td><td>${fmt(v.v, 3)}</td></tr>`).join("");
  } catch (e) { /* restarting */ }
}

// ---- wiring ----------------------------------------------------------------------------------
$("wf-mode").onchange = () => { $("wf-ant-label").hidden = $("wf-mode").value !== "ant"; $("wf-bl-label").hidden = $("wf-mode").value !== "bl"; };
const wf = connect(() => `/ws/waterfall?select=${encodeURIComponent(selection())}&pol=${$("wf-pol").value}`, onWaterfall, clearWaterfall);
$("wf-apply").onclick = () => wf.send({ select: selection(), pol: $("wf-pol").value });
$("cal-apply").onclick = refreshCal;
$("zoom-close").onclick = () => $("zoom").close();
connect(() => "/ws/status", onStatus, () => { refreshGroups(); refreshStatus(); refreshImages(); refreshCal(); refreshQA(); });
clearWaterfall();
setInterval(() => { refreshStatus(); refreshGroups(); }, 10000);
