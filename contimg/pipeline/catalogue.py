"""The sky the pipeline learns: its own running catalogue, forced photometry of every catalogue
source, variability and transient candidates (`contimg.state.catalogue` holds the rows).

After each group (`update_catalogue`):
1. sources are found in its restored image (`contimg.qa.sources.find_sources`: islands above
   ``catalogue.detect_sigma`` local robust RMS where the averaged beam ≥ ``catalogue.min_pb``,
   a beam-shaped fit per island; a free elliptical Gaussian gives each one's shape);
2. each detection joins the nearest catalogue source within ``match_radius_beam`` beams, whose
   position (inverse-variance mean of its detections, error BMAJ / (2 SNR) each) and flux are
   refined (its shape: that of its best detection where a free Gaussian could be fitted); a
   detection with no counterpart becomes a new source — and, above
   ``transient_sigma``, is checked against the earlier images of the same sky (forced flux at its
   position in each): if it rose by ``transient_rise_sigma`` above all of them it is a transient
   candidate (a row, a cut-out PNG, an alert); new sky (no earlier image there) is never one;
3. every catalogue source inside the primary-beam cutoff is measured (forced photometry, error
   from the local noise), new sources also in the earlier images that cover them; eta and V are
   updated and the variability candidates flagged.
A finished mosaic goes through 1-3 too (`update_catalogue_from_mosaic`; no transient search on a
mosaic of several epochs, and its forced measurements are kept apart from the light curves).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from contimg.config import Config
from contimg.io.store import read_zarr
from contimg.io.thumbs import render_png
from contimg.pipeline.groupimage import GroupImage, load_group_image
from contimg.qa.photometry import forced_at, transient_rise, variability, variability_candidate
from contimg.qa.sources import (associate, find_islands, find_sources, fit_shape, measure_islands, refine_position,
                                rms_map)
from contimg.sky.catalogue import load_catalogue, position_names, resolve_catalogue
from contimg.sky.skymodel import PointSources
from contimg.state.catalogue import CatalogueDB
from contimg.state.products import ProductsDB

log = logging.getLogger(__name__)

__all__ = ["update_catalogue", "update_catalogue_from_mosaic", "build_catalogue", "catalogue_lightcurve"]

MAX_EARLIER_IMAGES = 12
MOSAIC_BLOCK_X = 2048  # a mosaic's source search: columns per block ...
MOSAIC_MARGIN_X = 256  # ... and read beside it on each side (wider than any island it keeps whole)


class _Images:
    """Group images loaded once per call (earlier images of the same sky), with their RMS maps."""

    def __init__(self, root: Path):
        self.root = root
        self.cache: dict[str, tuple[GroupImage, np.ndarray]] = {}

    def get(self, gid: str, image: GroupImage | None = None) -> tuple[GroupImage, np.ndarray]:
        if gid not in self.cache:
            img = image or load_group_image(self.root, gid)
            self.cache[gid] = (img, _rms(img))
        return self.cache[gid]


def _rms(img: GroupImage) -> np.ndarray:
    npix = img.restored.shape[0]
    beam_pix = np.sqrt(img.beam_rad[0] * img.beam_rad[1]) / img.cell_rad
    return rms_map(residual=img.residual, tile=int(min(max(32, 10 * beam_pix), npix)))


def _earlier(root: Path, img: GroupImage) -> list[str]:
    """The completed groups before ``img`` whose field centre lies within one image side of
    its own (the same sky), the latest ``MAX_EARLIER_IMAGES``."""
    products = ProductsDB(root / "state" / "products.sqlite3")
    try:
        rows = [g for g in products.groups() if g.get("status") == "completed" and g.get("mid_mjd") is not None
                and g["mid_mjd"] < img.mid_mjd - 1e-6 and g.get("ra_deg") is not None]
    finally:
        products.close()
    side = np.degrees(img.restored.shape[0] * img.cell_rad)
    ra0, dec0 = np.degrees(img.ra_rad), np.degrees(img.dec_rad)
    near = []
    for g in rows:
        c = (np.sin(np.radians(dec0)) * np.sin(np.radians(g["dec_deg"])) + np.cos(np.radians(dec0))
             * np.cos(np.radians(g["dec_deg"])) * np.cos(np.radians(g["ra_deg"] - ra0)))
        if np.degrees(np.arccos(np.clip(c, -1, 1))) < side and (Path(root) / "products" / g["group_id"] / "image.zarr").is_dir():
            near.append(g)
    near.sort(key=lambda g: g["mid_mjd"])
    return [g["group_id"] for g in near[-MAX_EARLIER_IMAGES:]]


def _external(root: Path, cfg: Config) -> PointSources | None:
    setting = cfg.catalogue.external or cfg.sky.catalogue
    path = resolve_catalogue(setting, root) if setting else None
    if path is None or not path.is_file():
        return None
    return load_catalogue(path)


def _unique_name(name: str, taken: set[str]) -> str:
    out, k = name, 0
    while out in taken:
        k += 1
        out = f"{name}{chr(ord('a') + (k - 1) % 26)}{'' if k <= 26 else k // 26}"
    taken.add(out)
    return out


def _detect(*, restored, rms, pb, wcs, beam_rad, cell_rad, cfg: Config, pbcor_input: bool) -> list[dict]:
    """The detections in an image (`find_sources`), brightest island first."""
    cc = cfg.catalogue
    found = find_sources(restored=restored, rms=rms, pb=pb, wcs=wcs, beam_rad=beam_rad, cell_rad=cell_rad,
                         threshold_sigma=cc.detect_sigma, min_pb=cc.min_pb, max_sources=cc.max_sources)
    return _detection_rows(found, restored=restored, beam_rad=beam_rad, cell_rad=cell_rad, cfg=cfg,
                           pbcor_input=pbcor_input)


def _detection_rows(found: dict[str, np.ndarray], *, restored, beam_rad, cell_rad, cfg: Config,
                    pbcor_input: bool) -> list[dict]:
    """Catalogue rows of `find_sources`'s sources (each with a free elliptical Gaussian's shape)."""
    rows = []
    for k in range(found["x"].size):
        pb_k = 1.0 if pbcor_input else float(found["pb"][k])
        flux = float(found["peak_jy"][k]) / pb_k
        err = float(np.hypot(found["rms_jy"][k] / pb_k, cfg.catalogue.systematic_fraction * abs(flux)))
        maj, mnr, pa = fit_shape(image=restored, x=float(found["x"][k]), y=float(found["y"][k]), beam_rad=beam_rad,
                                 cell_rad=cell_rad)
        rows.append({"n": k, "ra_deg": float(found["ra_deg"][k]), "dec_deg": float(found["dec_deg"][k]),
                     "flux_jy": flux, "err_jy": err, "peak_jy": float(found["peak_jy"][k]),
                     "rms_jy": float(found["rms_jy"][k]), "snr": float(found["snr"][k]), "pb": pb_k,
                     "maj_arcsec": float(np.degrees(maj) * 3600), "min_arcsec": float(np.degrees(mnr) * 3600),
                     "pa_deg": float(np.degrees(pa))})
    return rows


def _column_blocks(nx: int, *, block: int, margin: int) -> list[tuple[int, int, int, int]]:
    """(lo, hi, x0, x1) for each block of ``block`` columns of an image ``nx`` wide: its own
    columns [x0, x1) and the columns read with ``margin`` on each side [lo, hi)."""
    return [(max(0, x0 - margin), min(nx, x0 + block + margin), x0, min(x0 + block, nx))
            for x0 in range(0, nx, block)]


def _mosaic_block(path: Path, lo: int, hi: int, min_pb: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Columns [lo, hi) of a mosaic's store: its image, its noise as the RMS where the
    primary-beam weight reaches ``min_pb`` (NaN elsewhere), and that mask as a 0/1 beam."""
    arrays, _ = read_zarr(path, ("image", "noise", "pb_weight"), columns=slice(lo, hi))
    pb = (np.nan_to_num(arrays.pop("pb_weight")) >= min_pb).astype(np.float32)
    rms = np.where(pb > 0, arrays.pop("noise"), np.float32(np.nan))
    return arrays["image"], rms, pb


def _new_source(det: dict, name: str, *, image: str, mid_mjd: float, sigma_arcsec: float) -> dict:
    vec, weight, ra, dec, err = refine_position(sum_vec=np.zeros(3), weight=0.0, ra_deg=det["ra_deg"],
                                                dec_deg=det["dec_deg"], sigma_arcsec=sigma_arcsec)
    w = 1.0 / det["err_jy"] ** 2
    return {"name": name, "ra_deg": ra, "dec_deg": dec, "pos_err_arcsec": err, "sx": vec[0], "sy": vec[1],
            "sz": vec[2], "pos_weight": weight, "flux_jy": det["flux_jy"], "flux_err_jy": det["err_jy"],
            "sum_wf": w * det["flux_jy"], "sum_w": w, "peak_snr": det["snr"], "maj_arcsec": det["maj_arcsec"],
            "min_arcsec": det["min_arcsec"], "pa_deg": det["pa_deg"], "n_detections": 1, "first_seen_mjd": mid_mjd,
            "last_seen_mjd": mid_mjd, "first_image": image, "last_image": image, "external_name": "",
            "external_sep_arcsec": None, "external_flux_jy": None, "n_forced": 0, "mean_flux_jy": None,
            "eta": None, "v": None, "variable": 0}


def _finite(value) -> bool:
    return value is not None and bool(np.isfinite(value))


def _join(src: dict, det: dict, *, image: str, mid_mjd: float, sigma_arcsec: float) -> dict:
    vec, weight, ra, dec, err = refine_position(sum_vec=np.array([src["sx"], src["sy"], src["sz"]]),
                                                weight=src["pos_weight"], ra_deg=det["ra_deg"], dec_deg=det["dec_deg"],
                                                sigma_arcsec=sigma_arcsec)
    w = 1.0 / det["err_jy"] ** 2
    out = {**src, "ra_deg": ra, "dec_deg": dec, "pos_err_arcsec": err, "sx": vec[0], "sy": vec[1], "sz": vec[2],
           "pos_weight": weight, "sum_wf": src["sum_wf"] + w * det["flux_jy"], "sum_w": src["sum_w"] + w,
           "n_detections": src["n_detections"] + 1, "first_seen_mjd": min(src["first_seen_mjd"], mid_mjd),
           "last_seen_mjd": max(src["last_seen_mjd"], mid_mjd)}
    out["flux_jy"], out["flux_err_jy"] = out["sum_wf"] / out["sum_w"], 1.0 / np.sqrt(out["sum_w"])
    if mid_mjd >= src["last_seen_mjd"]:
        out["last_image"] = image
    if _finite(det["maj_arcsec"]) and (det["snr"] > src["peak_snr"] or not _finite(src["maj_arcsec"])):
        out.update(maj_arcsec=det["maj_arcsec"], min_arcsec=det["min_arcsec"], pa_deg=det["pa_deg"])
    out["peak_snr"] = max(src["peak_snr"], det["snr"])
    return out


def _recompute(db: CatalogueDB, names: set[str]) -> None:
    """Make the sums of ``names`` again from the detections they still have (after an image
    was forgotten); a source left with none is dropped (the image, searched again, finds it)."""
    gone, rows = [], []
    for name in sorted(names):
        src = db.source(name)
        dets = db.detections(source=name)
        if src is None:
            continue
        if not dets:
            gone.append(name)
            continue
        first = dets[0]
        row = _new_source(first, name, image=first["image"], mid_mjd=first["mid_mjd"],
                          sigma_arcsec=first["pos_sigma_arcsec"])
        for det in dets[1:]:
            row = _join(row, det, image=det["image"], mid_mjd=det["mid_mjd"], sigma_arcsec=det["pos_sigma_arcsec"])
        keep = ("external_name", "external_sep_arcsec", "external_flux_jy", "n_forced", "mean_flux_jy", "eta", "v",
                "variable")
        rows.append({**row, **{k: src[k] for k in keep}})
    db.delete_sources(gone)
    db.upsert_sources(rows)


def _forget(db: CatalogueDB, image: str) -> None:
    """Take an image's detections, forced measurements and unmarked candidates out of the
    catalogue before it is searched again, so a re-run counts nothing twice."""
    affected = {d["source"] for d in db.detections(image=image)}
    db.forget_image(image)
    _recompute(db, affected)


def _cross_external(rows: list[dict], external: PointSources | None, radius_arcsec: float) -> None:
    if external is None or not rows or not len(external):
        return
    idx, sep = associate(cat_ra_deg=np.degrees(external.ra_rad), cat_dec_deg=np.degrees(external.dec_rad),
                         ra_deg=np.array([r["ra_deg"] for r in rows]), dec_deg=np.array([r["dec_deg"] for r in rows]),
                         radius_arcsec=radius_arcsec)
    for r, i, s in zip(rows, idx, sep):
        if i >= 0:
            r.update(external_name=str(external.name[i]), external_sep_arcsec=float(s),
                     external_flux_jy=float(external.flux_jy[i]))


def _usable(dets: list[dict], *, image: str) -> list[dict]:
    """The detections with a finite position, flux and S/N (one without would give its source
    a NaN position, stored as NULL, and every later search of the catalogue would trip on it)."""
    ok = [d for d in dets if np.all(np.isfinite([d["ra_deg"], d["dec_deg"], d["snr"], d["flux_jy"]]))]
    if len(ok) < len(dets):
        log.warning("%s: %d detection(s) without a finite position, flux or S/N left out of the catalogue",
                    image, len(dets) - len(ok))
    return ok


def _associate_and_grow(db: CatalogueDB, dets: list[dict], *, image: str, mid_mjd: float, beam_rad, cfg: Config,
                        root: Path) -> tuple[dict[str, dict], list[tuple[dict, dict]]]:
    """Join detections to the catalogue or start new sources; (changed rows by name, [(new
    source, its detection)])."""
    cat = {r["name"]: r for r in db.sources()}
    names = list(cat)
    bmaj_arcsec = float(np.degrees(beam_rad[0]) * 3600)
    idx, _ = associate(cat_ra_deg=np.array([cat[n]["ra_deg"] for n in names], float),
                       cat_dec_deg=np.array([cat[n]["dec_deg"] for n in names], float),
                       ra_deg=np.array([d["ra_deg"] for d in dets]), dec_deg=np.array([d["dec_deg"] for d in dets]),
                       radius_arcsec=cfg.catalogue.match_radius_beam * bmaj_arcsec)
    changed, new = {}, []
    taken = set(names)
    for det, i in zip(dets, idx):
        sigma = bmaj_arcsec / (2.0 * max(det["snr"], 1.0))
        det["pos_sigma_arcsec"] = sigma
        if i >= 0:
            name = names[i]
            changed[name] = _join(changed.get(name, cat[name]), det, image=image, mid_mjd=mid_mjd, sigma_arcsec=sigma)
            det.update(source=name, new=0)
        else:
            name = _unique_name(str(position_names([det["ra_deg"]], [det["dec_deg"]], prefix="CTG J")[0]), taken)
            row = _new_source(det, name, image=image, mid_mjd=mid_mjd, sigma_arcsec=sigma)
            changed[name] = row
            new.append((row, det))
            det.update(source=name, new=1)
    _cross_external([r for r, _ in new], _external(root, cfg), cfg.catalogue.match_radius_beam * bmaj_arcsec)
    return changed, new


def _measure(db: CatalogueDB, img: GroupImage, rms: np.ndarray, sources: list[dict], cfg: Config) -> list[dict]:
    """Forced photometry of ``sources`` in a group image; the rows (with ``source``)."""
    if not sources:
        return []
    meas = forced_at(restored=img.restored, rms=rms, pb=img.pb, wcs=img.wcs, beam_rad=img.beam_rad,
                     cell_rad=img.cell_rad, ra_deg=np.array([s["ra_deg"] for s in sources]),
                     dec_deg=np.array([s["dec_deg"] for s in sources]), min_pb=cfg.catalogue.min_pb,
                     systematic_fraction=cfg.catalogue.systematic_fraction)
    out = []
    for m in meas:
        s = sources[m.pop("index")]
        out.append({"source": s["name"], "kind": "group", "mid_mjd": img.mid_mjd, "freq_hz": img.freq_hz,
                    "ra_deg": s["ra_deg"], "dec_deg": s["dec_deg"], **m})
    return out


def _variability(db: CatalogueDB, names: set[str], cfg: Config) -> list[dict]:
    """Update eta, V and the candidate flag of ``names``; the rows newly flagged."""
    cc, rows, flagged = cfg.catalogue, [], []
    for name in sorted(names):
        src = db.source(name)
        if src is None:
            continue
        lc = db.lightcurve(name)
        stats = variability(flux_jy=np.array([r["flux_jy"] for r in lc]), err_jy=np.array([r["err_jy"] for r in lc]))
        cand = variability_candidate(stats, eta_threshold=cc.eta_threshold, v_threshold=cc.v_threshold,
                                     min_points=cc.min_points)
        if cand and not src["variable"]:
            flagged.append({**src, **stats})
        rows.append({**src, "n_forced": stats["n"], "mean_flux_jy": stats["mean_flux_jy"],
                     "eta": stats["eta"] if np.isfinite(stats["eta"]) else None,
                     "v": stats["v"] if np.isfinite(stats["v"]) else None, "variable": int(cand)})
    db.upsert_sources(rows)
    return flagged


def _cutout(img: GroupImage, det: dict, path: Path, cfg: Config) -> Path:
    x, y = img.wcs.world_to_pixel_values(det["ra_deg"], det["dec_deg"])
    half = max(8, int(np.radians(cfg.catalogue.cutout_arcmin / 60.0) / img.cell_rad / 2))
    ix, iy = int(round(float(x))), int(round(float(y)))
    ny, nx = img.restored.shape
    cut = img.restored[max(iy - half, 0):min(iy + half + 1, ny), max(ix - half, 0):min(ix + half + 1, nx)]
    path.parent.mkdir(parents=True, exist_ok=True)
    return render_png(cut, path, size=256)


def update_catalogue(root: str | Path, group_id: str, *, cfg: Config, image: GroupImage | None = None) -> dict:
    """Steps 1-3 of the module's docstring for one completed group. Returns ``n_detections``,
    ``n_new``, ``n_forced``, ``candidates`` (transient candidate rows), ``variables`` (sources
    newly flagged) and ``alerts`` (dicts with ``severity``, ``category``, ``message``) for the
    service to send."""
    root = Path(root)
    images = _Images(root)
    img, rms = images.get(group_id, image)
    db = CatalogueDB(root / "state" / "products.sqlite3")
    try:
        _forget(db, group_id)
        dets = _usable(_detect(restored=img.restored, rms=rms, pb=img.pb, wcs=img.wcs, beam_rad=img.beam_rad,
                               cell_rad=img.cell_rad, cfg=cfg, pbcor_input=False), image=group_id)
        for d in dets:
            d.update(kind="group", mid_mjd=img.mid_mjd)
        changed, new = _associate_and_grow(db, dets, image=group_id, mid_mjd=img.mid_mjd, beam_rad=img.beam_rad,
                                           cfg=cfg, root=root)
        earlier = _earlier(root, img)
        candidates, alerts = [], []
        for src, det in new:
            if det["snr"] < cfg.catalogue.transient_sigma or not earlier:
                continue
            prior = []
            for gid in earlier:
                e_img, e_rms = images.get(gid)
                prior += [{"image": gid, "flux_jy": m["flux_jy"], "err_jy": m["err_jy"], "pb": m["pb"]}
                          for m in forced_at(restored=e_img.restored, rms=e_rms, pb=e_img.pb, wcs=e_img.wcs,
                                             beam_rad=e_img.beam_rad, cell_rad=e_img.cell_rad, ra_deg=det["ra_deg"],
                                             dec_deg=det["dec_deg"], min_pb=cfg.catalogue.min_pb,
                                             systematic_fraction=cfg.catalogue.systematic_fraction)]
            rise = transient_rise(flux_jy=det["flux_jy"], err_jy=det["err_jy"],
                                  prior_flux_jy=np.array([p["flux_jy"] for p in prior]),
                                  prior_err_jy=np.array([p["err_jy"] for p in prior]))
            if not (np.isfinite(rise) and rise >= cfg.catalogue.transient_rise_sigma):
                continue
            cid = f"{group_id}#{det['n']}"
            png = _cutout(img, det, root / "products" / group_id / "qa" / f"{group_id}.transient{det['n']}.png", cfg)
            row = {"id": cid, "image": group_id, "mid_mjd": img.mid_mjd, "ra_deg": det["ra_deg"],
                   "dec_deg": det["dec_deg"], "flux_jy": det["flux_jy"], "err_jy": det["err_jy"], "snr": det["snr"],
                   "pb": det["pb"], "prior": prior, "min_rise_sigma": rise, "cutout_path": str(png),
                   "source": src["name"]}
            db.record_candidate(row)
            candidates.append(row)
            alerts.append({"severity": "warning", "category": "transient",
                           "message": f"group {group_id}: transient candidate {src['name']} at "
                                      f"({det['ra_deg']:.4f}, {det['dec_deg']:+.4f}) deg, "
                                      f"{det['flux_jy'] * 1e3:.1f} mJy ({det['snr']:.0f} sigma), {rise:.1f} sigma above "
                                      f"{len(prior)} earlier measurement(s)"})
        db.upsert_sources(list(changed.values()))
        db.record_detections(group_id, dets)
        sources = db.sources()
        forced = _measure(db, img, rms, sources, cfg)
        db.record_forced(group_id, forced)
        touched = {r["source"] for r in forced}
        new_rows = [r for r, _ in new]
        for gid in earlier if new_rows else []:  # new sources, measured where earlier images cover them
            e_img, e_rms = images.get(gid)
            back = _measure(db, e_img, e_rms, new_rows, cfg)
            db.record_forced(gid, back, replace=False)
            touched |= {r["source"] for r in back}
        flagged = _variability(db, touched, cfg)
        for v in flagged:
            alerts.append({"severity": "info", "category": "variable",
                           "message": f"{v['name']}: variability candidate (eta {v['eta']:.1f}, V {v['v']:.2f}, "
                                      f"{v['n']} measurements)"})
    finally:
        db.close()
    return {"n_detections": len(dets), "n_new": len(new), "n_forced": len(forced), "candidates": candidates,
            "variables": flagged, "alerts": alerts}


def _detect_in_blocks(path: Path, blocks: list[tuple[int, int, int, int]], *, wcs: WCS, beam, cell: float,
                      cfg: Config) -> list[dict]:
    """`_detect` on a mosaic's store, block by block: the islands of every block whose brightest
    pixel is in its own columns, the brightest ``catalogue.max_sources`` of them all, each then
    measured in its block (the rows a search of the whole mosaic gives)."""
    cc = cfg.catalogue
    found = []  # (peak, y, x in the mosaic, block)
    for b, (lo, hi, x0, x1) in enumerate(blocks):
        image, rms, pb = _mosaic_block(path, lo, hi, cc.min_pb)
        peaks, ys, xs = find_islands(restored=image, rms=rms, pb=pb, threshold_sigma=cc.detect_sigma, min_pb=cc.min_pb)
        own = (xs + lo >= x0) & (xs + lo < x1)
        found += zip(peaks[own].tolist(), ys[own].tolist(), (xs[own] + lo).tolist(), [b] * int(own.sum()))
    found.sort(key=lambda f: -f[0])
    chosen = found[:cc.max_sources]
    rows: dict[int, dict] = {}  # by rank
    for b, (lo, hi, _, _) in enumerate(blocks):
        ranks = [r for r, f in enumerate(chosen) if f[3] == b]
        if not ranks:
            continue
        image, rms, pb = _mosaic_block(path, lo, hi, cc.min_pb)
        sel = [chosen[r] for r in ranks]
        measured = measure_islands(restored=image, rms=rms, pb=pb, wcs=wcs.slice((slice(None), slice(lo, hi))),
                                   beam_rad=beam, cell_rad=cell, peaks=np.array([f[0] for f in sel]),
                                   ys=np.array([f[1] for f in sel]), xs=np.array([f[2] - lo for f in sel]))
        for r, row in zip(ranks, _detection_rows(measured, restored=image, beam_rad=beam, cell_rad=cell, cfg=cfg,
                                                 pbcor_input=True)):
            rows[r] = {**row, "n": r}
    return [rows[r] for r in range(len(chosen))]


def _forced_in_blocks(path: Path, blocks: list[tuple[int, int, int, int]], *, wcs: WCS, beam, cell: float,
                      cfg: Config, ra_deg: np.ndarray, dec_deg: np.ndarray) -> list[dict]:
    """`forced_at` of positions (n,) in a mosaic's store, each in the block whose own columns
    hold it; rows as `forced_at` gives them for the whole mosaic (``index`` into the positions)."""
    ra_deg, dec_deg = np.asarray(ra_deg, float), np.asarray(dec_deg, float)
    col = np.full(ra_deg.shape, np.nan)
    ok = np.isfinite(ra_deg) & np.isfinite(dec_deg)  # (a position the catalogue lacks: never measured)
    if not ok.any():
        return []
    col[ok] = np.round(np.asarray(wcs.world_to_pixel_values(ra_deg[ok], dec_deg[ok])[0], float))
    meas = []
    for lo, hi, x0, x1 in blocks:
        idx = np.flatnonzero((col >= x0) & (col < x1))
        if idx.size == 0:
            continue
        image, rms, pb = _mosaic_block(path, lo, hi, cfg.catalogue.min_pb)
        for m in forced_at(restored=image, rms=rms, pb=pb, wcs=wcs.slice((slice(None), slice(lo, hi))),
                           beam_rad=beam, cell_rad=cell, ra_deg=ra_deg[idx], dec_deg=dec_deg[idx], min_pb=0.5,
                           systematic_fraction=cfg.catalogue.systematic_fraction):
            meas.append({**m, "index": int(idx[m["index"]]), "x": m["x"] + lo})
    return sorted(meas, key=lambda m: m["index"])


def update_catalogue_from_mosaic(root: str | Path, name: str, *, cfg: Config) -> dict:
    """Sources found in mosaic ``name`` (its Zarr planes: the image, its noise map as the RMS,
    the primary-beam weight ≥ ``catalogue.min_pb``) join the catalogue or start new sources;
    every catalogue source in it is measured (``kind`` mosaic), and its new sources in each of
    its group images (light curves). ``n_detections``, ``n_new``, ``n_forced``.

    The mosaic is read in blocks of ``MOSAIC_BLOCK_X`` columns with ``MOSAIC_MARGIN_X`` more on
    each side (memory bounded whatever the span's length): each block gives the islands whose
    brightest pixel is in its own columns, the brightest ``catalogue.max_sources`` of all are
    measured, each in its block, as a search of the whole would; a source is measured (forced) in
    the block whose own columns hold its position."""
    root = Path(root)
    path = root / "mosaics" / name / f"{name}.zarr"
    _, attrs = read_zarr(path, ())
    header = fits.Header.fromstring(attrs["header"])
    wcs = WCS(header).celestial
    beam = tuple(np.radians(header[k]) for k in ("BMAJ", "BMIN", "BPA"))
    cell = np.radians(abs(header["CDELT1"]))
    mid_mjd = float(header["MJD-AVG"])
    blocks = _column_blocks(int(header["NAXIS1"]), block=MOSAIC_BLOCK_X, margin=MOSAIC_MARGIN_X)
    dets = _usable(_detect_in_blocks(path, blocks, wcs=wcs, beam=beam, cell=cell, cfg=cfg), image=name)
    for d in dets:
        d.update(kind="mosaic", mid_mjd=mid_mjd)
    db = CatalogueDB(root / "state" / "products.sqlite3")
    try:
        _forget(db, name)
        changed, new = _associate_and_grow(db, dets, image=name, mid_mjd=mid_mjd, beam_rad=beam, cfg=cfg, root=root)
        db.upsert_sources(list(changed.values()))
        db.record_detections(name, dets)
        sources = db.sources()
        meas = _forced_in_blocks(path, blocks, wcs=wcs, beam=beam, cell=cell, cfg=cfg,
                                 ra_deg=np.array([s["ra_deg"] for s in sources], float),
                                 dec_deg=np.array([s["dec_deg"] for s in sources], float))
        forced = []
        for m in meas:
            s = sources[m.pop("index")]
            forced.append({"source": s["name"], "kind": "mosaic", "mid_mjd": mid_mjd, "freq_hz": float(header["CRVAL3"]),
                           "ra_deg": s["ra_deg"], "dec_deg": s["dec_deg"], **m})
        db.record_forced(name, forced)
        new_rows = [r for r, _ in new]
        touched = set()
        if new_rows:  # sources only the mosaic's depth reveals, measured in its group images too
            for gid in attrs.get("groups", []):  # one group's images in memory at a time
                if not (root / "products" / gid / "image.zarr").is_dir():
                    continue
                g_img = load_group_image(root, gid)
                back = _measure(db, g_img, _rms(g_img), new_rows, cfg)
                db.record_forced(gid, back, replace=False)
                touched |= {r["source"] for r in back}
        _variability(db, touched, cfg)
    finally:
        db.close()
    return {"n_detections": len(dets), "n_new": len(new), "n_forced": len(forced)}


def build_catalogue(root: str | Path, *, cfg: Config) -> dict:
    """The catalogue of a processed root from scratch: every completed group in time order
    (`update_catalogue`); totals and every alert it raised."""
    root = Path(root)
    products = ProductsDB(root / "state" / "products.sqlite3")
    try:
        groups = sorted((g for g in products.groups() if g.get("status") == "completed"), key=lambda g: g["mid_mjd"])
    finally:
        products.close()
    db = CatalogueDB(root / "state" / "products.sqlite3")
    try:
        db.clear()
    finally:
        db.close()
    total = {"n_groups": 0, "n_detections": 0, "n_new": 0, "candidates": [], "variables": [], "alerts": []}
    for g in groups:
        out = update_catalogue(root, g["group_id"], cfg=cfg)
        total["n_groups"] += 1
        for k in ("n_detections", "n_new"):
            total[k] += out[k]
        for k in ("candidates", "variables", "alerts"):
            total[k] += out[k]
    return total


def catalogue_lightcurve(root: str | Path, *, name: str | None = None, ra_deg: float | None = None,
                         dec_deg: float | None = None, radius_arcsec: float = 60.0) -> tuple[dict, list[dict]]:
    """The catalogue source named ``name`` — or the nearest to (``ra_deg``, ``dec_deg``) within
    ``radius_arcsec`` — and its light curve (forced photometry in the group images, time order):
    what ``contimg lightcurve NAME|RA DEC`` shows. KeyError when there is no such source."""
    db = CatalogueDB(Path(root) / "state" / "products.sqlite3")
    try:
        if name is not None:
            src = db.source(name)
        else:
            rows = db.sources()
            idx, _ = associate(cat_ra_deg=np.array([r["ra_deg"] for r in rows]),
                               cat_dec_deg=np.array([r["dec_deg"] for r in rows]), ra_deg=np.array([ra_deg]),
                               dec_deg=np.array([dec_deg]), radius_arcsec=radius_arcsec)
            src = rows[int(idx[0])] if idx[0] >= 0 else None
        if src is None:
            where = name if name is not None else f"({ra_deg}, {dec_deg}) within {radius_arcsec} arcsec"
            raise KeyError(f"no catalogue source {where}")
        return src, db.lightcurve(src["name"])
    finally:
        db.close()
