// A source's page (/source/NAME): its light curve with 1σ error bars and its measurements, η and
// V, and cut-outs of the restored images at its position (the image's own pixels, from
// /api/images/{id}/array). A source of the external catalogue, else of the pipeline's own (with
// its detections, first and last seen, and the transient candidate that started it, if one did).
"use strict";
const SRC = decodeURIComponent(location.pathname.replace(/^\/source\//, ""));
const CUT = 32;  // cut-out half-size in pixels

function errorBars(points) {  // a uPlot draw hook: a vertical line ±err at each point
  return (u) => {
    const ctx = u.ctx; ctx.save(); ctx.setLineDash([]); ctx.strokeStyle = "#5ec8ff"; ctx.lineWidth = 1.5;
    for (const p of points) {
      const x = u.valToPos(mjdToUnix(p.mid_mjd), "x", true);
      const y0 = u.valToPos(1e3 * (p.flux_jy - p.err_jy), "y", true), y1 = u.valToPos(1e3 * (p.flux_jy + p.err_jy), "y", true);
      ctx.beginPath(); ctx.moveTo(x, y0); ctx.lineTo(x, y1); ctx.moveTo(x - 4, y0); ctx.lineTo(x + 4, y0);
      ctx.moveTo(x - 4, y1); ctx.lineTo(x + 4, y1); ctx.stroke();
    }
    ctx.restore();
  };
}
async function loadSource() {
  $("src-name").textContent = SRC;
  document.title = `contimg — ${SRC}`;
  let s;
  try { s = await api(`/api/sources/${encodeURIComponent(SRC)}`); }
  catch (e) {
    emptyState("lc-empty", `No measurement of ${SRC} yet: a source of the external catalogue or of the pipeline's own ` +
      "is measured (forced photometry) in every restored image whose primary beam covers it; its light curve appears " +
      "after the first such group completes.");
    return;
  }
  emptyState("lc-empty", "");
  $("src-pos").textContent = `RA ${sexa(s.ra_deg, true)} Dec ${sexa(s.dec_deg, false)} (${s.ra_deg.toFixed(4)}°, ${s.dec_deg.toFixed(4)}°)`;
  const pts = s.points, xs = pts.map((p) => mjdToUnix(p.mid_mjd));
  const lo = Math.min(...pts.map((p) => 1e3 * (p.flux_jy - p.err_jy))), hi = Math.max(...pts.map((p) => 1e3 * (p.flux_jy + p.err_jy)));
  const own = s.catalogue === "own";
  const cat = pts.map((p) => (p.catalogue_flux_jy === null ? null : 1e3 * p.catalogue_flux_jy)), pad = 0.1 * (hi - lo || 1);
  $("src-kind").textContent = own ? "the pipeline's own catalogue" : "external catalogue";
  linePlot($("lightcurve"), xs, [pts.map((p) => 1e3 * p.flux_jy), pts.map((p) => 1e3 * p.err_jy), cat], {
    xLabel: "group mid-time (UTC, " + new Date(xs[0] * 1e3).toISOString().slice(0, 10) + ")", yLabel: "flux density (mJy)", xTime: true, height: 260,
    yRange: [Math.min(lo, ...cat.filter(isFinite)) - pad, Math.max(hi, ...cat.filter(isFinite)) + pad],
    series: [{ label: "flux", unit: "mJy", points: true }, { label: "±1σ", unit: "mJy", points: true, color: "transparent" },
             { label: own ? "mean of its detections" : "catalogue", unit: "mJy", color: "#9cff5e", dash: [6, 4] }],
    hooks: { draw: [errorBars(pts)] } });
  const st = s.stats;
  const rows = [["measurements", pts.length], ["mean flux", st ? fmt(st.mean_flux_jy * 1e3, 2) + " mJy" : "–"],
    ["η (reduced χ² about the weighted mean)", st ? fmt(st.eta, 2) : "– (needs two measurements)"],
    ["V (standard deviation / mean)", st ? fmt(st.v, 3) : "–"],
    ["variability candidate", st ? (st.candidate ? "yes" : "no") : "–"],
    [own ? "flux of its detections (inverse-variance mean)" : "catalogue flux", fmt(pts.at(-1).catalogue_flux_jy * 1e3, 2) + " mJy"],
    ["latest primary-beam response", fmt(pts.at(-1).pb, 3)]];
  if (own) {
    const o = s.own;
    rows.push(["detections", o.n_detections], ["first seen", mjdUtc(o.first_seen_mjd)], ["last seen", mjdUtc(o.last_seen_mjd)],
      ["position error", fmt(o.pos_err_arcsec, 1) + "″"], ["peak S/N", fmt(o.peak_snr, 1)],
      ["fitted shape", `${fmt(o.maj_arcsec, 0)}″ × ${fmt(o.min_arcsec, 0)}″ ${fmt(o.pa_deg, 0)}°`],
      ["external counterpart", o.external_name ? `${o.external_name} (${fmt(o.external_sep_arcsec, 1)}″)` : "none"]);
    for (const t of s.transients) rows.push([`transient candidate ${t.id}`, `${fmt(t.flux_jy * 1e3, 1)} mJy, ${fmt(t.snr, 1)}σ, ${t.status}`]);
  }
  $("src-stats").tBodies[0].innerHTML = rows.map(([k, v]) => `<tr><td>${esc(k)}</td><td>${esc(v)}</td></tr>`).join("");
  $("lc-table").tBodies[0].innerHTML = pts.map((p) =>
    `<tr data-group="${esc(p.group_id)}" data-flux="${p.flux_jy}" data-err="${p.err_jy}"><td>${esc(p.group_id)}</td>` +
    `<td>${mjdUtc(p.mid_mjd)}</td><td>${fmt(p.flux_jy * 1e3, 3)} ± ${fmt(p.err_jy * 1e3, 3)}</td><td>${fmt(p.noise_jy * 1e3, 3)}</td>` +
    `<td>${fmt(p.pb, 3)}</td></tr>`).join("");
  const cuts = s.transients.filter((t) => t.cutout_url);
  $("trans-cuts").innerHTML = cuts.map((t) => `<figure><img src="${t.cutout_url}" alt="cut-out of ${esc(t.id)}"><figcaption>` +
    `transient candidate ${esc(t.id)} (${t.status})</figcaption></figure>`).join("");
  await loadCutouts(pts.filter((p) => p.image_id !== null).slice(-12));
}
async function loadCutouts(pts) {
  if (!pts.length) { emptyState("cut-empty", "No restored image of these groups is registered."); return; }
  const cuts = [];
  for (const p of pts) {
    const x0 = Math.max(0, Math.round(p.x) - CUT), y0 = Math.max(0, Math.round(p.y) - CUT);
    const [data, shape] = await fetchArray(`/api/images/${p.image_id}/array?x0=${x0}&y0=${y0}&w=${2 * CUT + 1}&h=${2 * CUT + 1}`);
    cuts.push({ p, data, shape, x0, y0 });
  }
  const all = cuts.flatMap((c) => Array.from(c.data).filter(isFinite)).sort((a, b) => a - b);
  const lo = all[Math.floor(0.01 * (all.length - 1))], hi = all[Math.floor(0.999 * (all.length - 1))];
  $("cutouts").innerHTML = "";
  for (const c of cuts) {
    const fig = document.createElement("figure"), canvas = document.createElement("canvas");
    paintFloat(canvas, c.data, c.shape[0], c.shape[1], lo, hi, "linear", "grey");
    const ctx = canvas.getContext("2d"), cx = c.p.x - c.x0 + 0.5, cy = c.shape[0] - (c.p.y - c.y0 + 0.5);
    ctx.strokeStyle = "#9cff5e"; ctx.lineWidth = 0.6; ctx.beginPath(); ctx.arc(cx, cy, 5, 0, 2 * Math.PI); ctx.stroke();
    fig.appendChild(canvas);
    const cap = document.createElement("figcaption");
    cap.innerHTML = `<a href="/api/images/${c.p.image_id}/fits">${esc(c.p.group_id)}</a><br>${fmt(c.p.flux_jy * 1e3, 2)} ± ${fmt(c.p.err_jy * 1e3, 2)} mJy`;
    fig.appendChild(cap);
    $("cutouts").appendChild(fig);
  }
  $("cutouts").dataset.count = String(cuts.length);
  $("cutouts").title = `grey scale ${lo.toPrecision(3)} to ${hi.toPrecision(3)} (image units)`;
}
function mjdUtc(mjd) { return mjd === null || mjd === undefined ? "–" : new Date((mjd - 40587) * 86400e3).toISOString().slice(0, 19).replace("T", " "); }
loadSource();
