// The image viewer: an image's or a strip mosaic's own pixels (float32 from {base}/array, where
// base is /api/images/{id} or /api/mosaics/{name}) on a canvas, with pan (drag), zoom (wheel,
// buttons), a colour scale (range, stretch, map) with a colour bar in the image's unit, the
// cursor's pixel, RA/Dec (the FITS SIN projection, inverted here) and value, and the overlays of
// {base}/overlay: the external catalogue's sources (forced photometry), the pipeline's own
// catalogue, the sources found, and the variability and transient candidates.
"use strict";
const VIEW = { base: null, meta: null, data: null, nx: 0, ny: 0, step: 1, scale: 1, ox: 0, oy: 0, overlay: null, img: null };

async function fetchArray(url) {  // (Float32Array, [ny, nx]) of a /array request
  const r = await fetch(url);
  if (!r.ok) throw new Error(url + ": " + r.status + " " + (await r.text()));
  const shape = r.headers.get("X-Shape").split(",").map(Number);
  return [new Float32Array(await r.arrayBuffer()), shape];
}
// pixel (x, y), 0-based like numpy's [y, x], → [RA, Dec] in degrees (SIN, CDELT, no rotation: as contimg writes)
function pixelToWorld(m, x, y) {
  const d2r = Math.PI / 180, X = m.cdelt1 * (x + 1 - m.crpix1) * d2r, Y = m.cdelt2 * (y + 1 - m.crpix2) * d2r;
  const a0 = m.crval1 * d2r, d0 = m.crval2 * d2r, n = Math.sqrt(Math.max(0, 1 - X * X - Y * Y));
  const dec = Math.asin(Y * Math.cos(d0) + n * Math.sin(d0)), ra = a0 + Math.atan2(X, n * Math.cos(d0) - Y * Math.sin(d0));
  return [(((ra / d2r) % 360) + 360) % 360, dec / d2r];
}
function stretch(name, t) {
  t = Math.min(1, Math.max(0, t));
  return name === "asinh" ? Math.asinh(10 * t) / Math.asinh(10) : name === "sqrt" ? Math.sqrt(t) : t;
}
// Colour-map a float image (row 0 = the bottom of the sky) into an RGBA canvas (row 0 at the top).
function paintFloat(canvas, data, ny, nx, lo, hi, stretchName, lutName) {
  canvas.width = nx; canvas.height = ny;
  const ctx = canvas.getContext("2d"), img = ctx.createImageData(nx, ny), lut = LUTS[lutName] || LUTS.grey;
  for (let y = 0; y < ny; y++) for (let x = 0; x < nx; x++) {
    const v = data[y * nx + x], i = ((ny - 1 - y) * nx + x) * 4;
    if (!isFinite(v)) { img.data[i + 3] = 0; continue; }
    const k = Math.round(255 * stretch(stretchName, (v - lo) / (hi - lo || 1)));
    img.data[i] = lut[3 * k]; img.data[i + 1] = lut[3 * k + 1]; img.data[i + 2] = lut[3 * k + 2]; img.data[i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}
function viewerRange() {
  const m = VIEW.meta, p = $("v-range").value;
  if (p === "custom") return [Number($("v-lo").value), Number($("v-hi").value)];
  if (p === "minmax") return [m.min, m.max];
  if (p === "sigma") return [m.median - 3 * m.rms_mad, m.median + 20 * m.rms_mad];
  return p === "99.9" ? [m.p0_5, m.p99_9] : [m.p0_5, m.p99_5];
}
function viewerPaint() {
  const [lo, hi] = viewerRange();
  $("v-lo").value = lo.toPrecision(4); $("v-hi").value = hi.toPrecision(4);
  VIEW.img = VIEW.img || document.createElement("canvas");
  paintFloat(VIEW.img, VIEW.data, VIEW.ny, VIEW.nx, lo, hi, $("v-stretch").value, $("v-cmap").value);
  const cb = $("v-colorbar"), ctx = cb.getContext("2d"), lut = LUTS[$("v-cmap").value];
  ctx.clearRect(0, 0, cb.width, cb.height);
  for (let x = 0; x < cb.width; x++) {
    const k = Math.round(255 * stretch($("v-stretch").value, x / (cb.width - 1)));
    ctx.fillStyle = `rgb(${lut[3 * k]},${lut[3 * k + 1]},${lut[3 * k + 2]})`; ctx.fillRect(x, 0, 1, cb.height);
  }
  const unit = VIEW.meta.bunit || "(no BUNIT)";
  $("v-cb-labels").innerHTML = `<span>${lo.toPrecision(3)}</span><span>${esc(unit)} · ${$("v-stretch").value}</span><span>${hi.toPrecision(3)}</span>`;
  viewerDraw();
}
function viewerFit() {  // the part of the image that has data (a running mosaic: the groups so far), whole in the canvas
  viewerDraw();  // sizes the canvas to its box
  const c = $("v-canvas"), st = VIEW.step, b = (VIEW.meta && VIEW.meta.data_box) || [0, VIEW.nx * st, 0, VIEW.ny * st];
  const bx0 = b[0] / st, bw = Math.max(1, (b[1] - b[0]) / st), by1 = b[3] / st, bh = Math.max(1, (b[3] - b[2]) / st);
  const s = Math.min(c.width / bw, c.height / bh);
  VIEW.scale = s; VIEW.ox = (c.width - bw * s) / 2 - bx0 * s; VIEW.oy = (c.height - bh * s) / 2 - (VIEW.ny - by1) * s;
  viewerDraw();
}
function viewerZoom(f, cx, cy) {
  const c = $("v-canvas"); cx = cx ?? c.width / 2; cy = cy ?? c.height / 2;
  const s = Math.min(64, Math.max(0.05, VIEW.scale * f)); f = s / VIEW.scale;
  VIEW.ox = cx - (cx - VIEW.ox) * f; VIEW.oy = cy - (cy - VIEW.oy) * f; VIEW.scale = s;
  viewerDraw();
}
// full-resolution pixel (x, y) ↔ canvas position (the pixel's centre)
function imageToCanvas(x, y) {
  const s = VIEW.scale, st = VIEW.step;
  return [VIEW.ox + (x / st + 0.5) * s, VIEW.oy + (VIEW.ny - 1 - y / st + 0.5) * s];
}
function canvasToImage(cx, cy) {
  const xd = Math.floor((cx - VIEW.ox) / VIEW.scale), r = Math.floor((cy - VIEW.oy) / VIEW.scale), yd = VIEW.ny - 1 - r;
  return [xd, yd];
}
function viewerDraw() {
  const c = $("v-canvas"), ctx = c.getContext("2d"), box = c.getBoundingClientRect();
  if (box.width && (c.width !== Math.round(box.width) || c.height !== Math.round(box.height))) {  // one canvas pixel per CSS pixel
    c.width = Math.round(box.width); c.height = Math.round(box.height);
  }
  ctx.fillStyle = "#0b0e13"; ctx.fillRect(0, 0, c.width, c.height);
  if (!VIEW.img) return;
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(VIEW.img, VIEW.ox, VIEW.oy, VIEW.nx * VIEW.scale, VIEW.ny * VIEW.scale);
  const ov = VIEW.overlay;
  if (!ov) return;
  const r = Math.max(6, 3 * VIEW.scale);
  ctx.lineWidth = 1.5;
  if ($("v-found").checked) {
    ctx.strokeStyle = "#5ec8ff";
    for (const s of ov.found) { const [x, y] = imageToCanvas(s.x, s.y); ctx.strokeRect(x - r, y - r, 2 * r, 2 * r); }
  }
  if ($("v-cat").checked) {
    ctx.strokeStyle = "#9cff5e";
    for (const s of ov.catalogue) { const [x, y] = imageToCanvas(s.x, s.y); ctx.beginPath(); ctx.arc(x, y, r + 3, 0, 2 * Math.PI); ctx.stroke(); }
  }
  if ($("v-own").checked) {  // the pipeline's own catalogue: yellow diamonds
    ctx.strokeStyle = "#ffd166";
    for (const s of ov.own || []) {
      const [x, y] = imageToCanvas(s.x, s.y), d = r + 4;
      ctx.beginPath(); ctx.moveTo(x, y - d); ctx.lineTo(x + d, y); ctx.lineTo(x, y + d); ctx.lineTo(x - d, y); ctx.closePath(); ctx.stroke();
    }
  }
  if ($("v-cand").checked) {
    ctx.strokeStyle = "#ff5e5e"; ctx.lineWidth = 2.5; ctx.font = "12px system-ui"; ctx.fillStyle = "#ff9e9e";
    const variables = [...ov.catalogue.filter((s) => s.candidate), ...(ov.own || []).filter((s) => s.variable)];
    for (const s of variables) {
      const [x, y] = imageToCanvas(s.x, s.y); ctx.beginPath(); ctx.arc(x, y, r + 8, 0, 2 * Math.PI); ctx.stroke();
      ctx.fillText(s.source, x + r + 10, y);
    }
    ctx.strokeStyle = "#ff5ef0"; ctx.fillStyle = "#ff9ef6";  // transient candidates: magenta crosses
    for (const t of ov.transients || []) {
      const [x, y] = imageToCanvas(t.x, t.y), d = r + 8;
      ctx.beginPath(); ctx.moveTo(x - d, y - d); ctx.lineTo(x + d, y + d); ctx.moveTo(x - d, y + d); ctx.lineTo(x + d, y - d); ctx.stroke();
      ctx.fillText(`${t.id} (${t.status})`, x + d + 4, y - d);
    }
  }
}
// What the overlays hold at full-resolution pixel (x, y), within tol pixels: a line of text or "".
function overlayNear(x, y, tol) {
  const ov = VIEW.overlay, near = (s) => Math.hypot(s.x - x, s.y - y) <= tol;
  if (!ov) return "";
  const out = [], s = ov.catalogue.find(near), o = (ov.own || []).find(near), t = (ov.transients || []).find(near);
  if (s) out.push(`${s.source}: ${fmt(s.flux_jy * 1e3, 2)} ± ${fmt(s.err_jy * 1e3, 2)} mJy (catalogue ${fmt(s.catalogue_flux_jy * 1e3, 1)})${s.candidate ? " · CANDIDATE" : ""}`);
  if (o) out.push(`${o.source}: ${o.flux_jy === null ? "–" : fmt(o.flux_jy * 1e3, 2)} ± ${o.err_jy === null ? "–" : fmt(o.err_jy * 1e3, 2)} mJy ` +
    `(own catalogue, ${o.n_detections} detection(s)${o.eta === null ? "" : `, η ${fmt(o.eta, 2)}, V ${fmt(o.v, 3)}`})${o.variable ? " · VARIABLE" : ""}`);
  if (t) out.push(`transient ${t.id}: ${fmt(t.flux_jy * 1e3, 2)} mJy, ${fmt(t.snr, 1)}σ (${t.status})`);
  return out.length ? " · " + out.join(" · ") : "";
}
function viewerReadout(ev) {
  const c = $("v-canvas"), rect = c.getBoundingClientRect();
  const cx = (ev.clientX - rect.left) * (c.width / rect.width), cy = (ev.clientY - rect.top) * (c.height / rect.height);
  const [xd, yd] = canvasToImage(cx, cy);
  if (xd < 0 || yd < 0 || xd >= VIEW.nx || yd >= VIEW.ny) { $("v-readout").textContent = "outside the image"; return; }
  const x = xd * VIEW.step, y = yd * VIEW.step, v = VIEW.data[yd * VIEW.nx + xd], [ra, dec] = pixelToWorld(VIEW.meta, x, y);
  const near = overlayNear(x, y, Math.max(2, 6 / VIEW.scale) * VIEW.step);
  const out = $("v-readout");
  out.dataset.x = x; out.dataset.y = y; out.dataset.value = v;
  out.textContent = `x ${x} y ${y} · RA ${sexa(ra, true)} Dec ${sexa(dec, false)} (${ra.toFixed(4)}°, ${dec.toFixed(4)}°) · ` +
    `${isFinite(v) ? v.toPrecision(5) : "blank"} ${VIEW.meta.bunit}${VIEW.step > 1 ? ` (every ${VIEW.step}th pixel shown)` : ""}${near}`;
}
// base: /api/images/{id} or /api/mosaics/{name} (an image id alone means the former)
async function openViewer(base) {
  if (!String(base).startsWith("/")) base = `/api/images/${base}`;
  const dlg = $("viewer"), c = $("v-canvas");
  if (!dlg.open) dlg.showModal();
  VIEW.base = base; c.dataset.ready = "0"; c.dataset.base = base;
  $("v-readout").textContent = "loading…"; $("v-legend").textContent = ""; VIEW.img = null; VIEW.overlay = null; viewerDraw();
  try {
    const m = await api(`${base}/meta`);
    const [data, shape] = await fetchArray(`${base}/array?step=${m.step}`);
    if (VIEW.base !== base) return;  // another image was opened meanwhile
    VIEW.meta = m; VIEW.step = m.step; VIEW.data = data; [VIEW.ny, VIEW.nx] = shape;
    const what = m.name !== undefined
      ? `strip mosaic ${m.name} (${m.status}, ${m.n_groups} group(s), ${mjdIso(m.start_mjd)}–${mjdIso(m.end_mjd).slice(11)} UTC, ` +
        `from its ${m.read_from === "zarr" ? "running Zarr planes" : "FITS"})`
      : `${m.group_id} ${m.type}`;
    $("v-title").textContent = `${what} · ${m.nx}×${m.ny} px of ${fmt(Math.abs(m.cdelt1) * 3600, 1)}″ · ` +
      `${fmt(m.freq_hz / 1e6, 1)} MHz · ${m.date_obs} · RMS ${fmt(m.rms_mad * 1e3, 2)} m${m.bunit}` +
      (m.bmaj_deg ? ` · beam ${fmt(m.bmaj_deg * 3600, 1)}″×${fmt(m.bmin_deg * 3600, 1)}″` : "");
    viewerPaint(); viewerFit();
    c.dataset.image = base.replace(/^\/api\/images\//, "");
    $("v-readout").textContent = "move the cursor over the image";
    const ov = await api(`${base}/overlay`);
    if (VIEW.base !== base) return;
    VIEW.overlay = ov;
    const nVar = ov.catalogue.filter((s) => s.candidate).length + (ov.own || []).filter((s) => s.variable).length;
    $("v-legend").textContent = `${ov.catalogue.length} catalogue sources (green circles) · ${(ov.own || []).length} of the ` +
      `pipeline's own catalogue (yellow diamonds) · ${ov.found.length} found (blue squares) · ${nVar} variability ` +
      `candidates (red) · ${(ov.transients || []).length} transient candidates (magenta crosses)`;
    viewerDraw();
    c.dataset.ready = "1";
  } catch (e) { $("v-readout").textContent = String(e.message || e); }
}
function mjdIso(mjd) { return new Date(Math.round((mjd - 40587) * 1440) * 60e3).toISOString().slice(0, 16).replace("T", " "); }
function wireViewer() {
  const c = $("v-canvas");
  let drag = null;
  c.onpointerdown = (e) => { drag = [e.clientX, e.clientY]; c.setPointerCapture(e.pointerId); };
  c.onpointerup = () => { drag = null; };
  c.onpointermove = (e) => {
    if (drag) {
      const r = c.getBoundingClientRect();
      VIEW.ox += (e.clientX - drag[0]) * (c.width / r.width); VIEW.oy += (e.clientY - drag[1]) * (c.height / r.height); drag = [e.clientX, e.clientY]; viewerDraw();
    }
    if (VIEW.data) viewerReadout(e);
  };
  c.onwheel = (e) => {
    e.preventDefault();
    const rect = c.getBoundingClientRect();
    viewerZoom(e.deltaY < 0 ? 1.25 : 0.8, (e.clientX - rect.left) * (c.width / rect.width), (e.clientY - rect.top) * (c.height / rect.height));
  };
  $("v-in").onclick = () => viewerZoom(2); $("v-out").onclick = () => viewerZoom(0.5); $("v-fit").onclick = viewerFit;
  for (const id of ["v-range", "v-stretch", "v-cmap"]) $(id).onchange = () => VIEW.data && viewerPaint();
  for (const id of ["v-lo", "v-hi"]) $(id).onchange = () => { $("v-range").value = "custom"; VIEW.data && viewerPaint(); };
  for (const id of ["v-cat", "v-own", "v-found", "v-cand"]) $(id).onchange = viewerDraw;
  $("v-close").onclick = () => { VIEW.base = null; $("viewer").close(); };
}
// For tests: where the full-resolution pixel (x, y) is on the screen (CSS pixels, page coordinates).
window.viewerScreenOf = (x, y) => {
  const c = $("v-canvas"), rect = c.getBoundingClientRect(), [cx, cy] = imageToCanvas(x, y);
  return [rect.left + cx * (rect.width / c.width), rect.top + cy * (rect.height / c.height)];
};
