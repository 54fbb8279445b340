"""The image viewer's and the source page's data: an image's WCS and pixel statistics, its
pixels (whole, subsampled or a window) as raw float32, the catalogue sources (forced
photometry), the sources found, the variability and transient candidates at their pixel
positions, and a source's light curve with the restored image of each point (for its cut-outs):
a source of the external catalogue (``ProductsDB``) or, when that has none of the name, of the
pipeline's own catalogue (``CatalogueDB``).

Pixels go to the browser as they are in the FITS file (``BUNIT``, usually Jy/beam) and the page
draws them on its own canvas: the cursor's value is then the FITS value, not a colour read back
from a PNG, and the overlays, RA/Dec and colour scale need no plug-in.

The same viewer shows strip mosaics (`contimg.web.api_sky`): a `Plane` is a 2-D float32 image
and its FITS header, read from a FITS file (`fits_plane`) or from a plane of a Zarr store with
the header in its attributes (`zarr_plane`, a running mosaic's planes); the statistics
(`plane_meta`) and the pixels sent (`plane_array`) are the same functions for both."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.stats import mad_std
from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi import Path as PathParam
from fastapi.responses import Response

from contimg.state.catalogue import CatalogueDB
from contimg.web.api_products import _image_row
from contimg.web.context import WebContext, context_of
from contimg.web.models import ImageMetaOut, OverlayOut, SourceOut

__all__ = ["Plane", "fits_plane", "zarr_plane", "plane_meta", "plane_array", "read_image", "pixels_of", "router"]

router = APIRouter()
MAX_PIXELS_WHOLE = 2048 * 2048  # larger images go to the viewer subsampled (every Nth pixel)


@dataclass(frozen=True)
class Plane:
    """A 2-D float32 image (ny, nx; row 0 is FITS row 1), its FITS header, and the key it is
    cached under (the file and its version)."""

    key: tuple
    data: np.ndarray
    header: fits.Header


_cache: OrderedDict[tuple, Plane] = OrderedDict()
_cache_lock = threading.Lock()
CACHED_PLANES = 3  # the last image, the last mosaic and one more


def _cached(key: tuple, load: Callable[[], tuple[np.ndarray, fits.Header]]) -> Plane:
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    data, header = load()
    if data.ndim != 2:
        raise ValueError(f"{key[1]}: not an image (shape {data.shape})")
    plane = Plane(key, data, header)
    with _cache_lock:
        _cache[key] = plane
        while len(_cache) > CACHED_PLANES:
            _cache.popitem(last=False)
    return plane


def fits_plane(path: Path) -> Plane:
    """The image of a FITS file (its first HDU, squeezed to 2-D) and its header."""
    def load() -> tuple[np.ndarray, fits.Header]:
        with fits.open(path, memmap=False) as hdul:
            return np.ascontiguousarray(np.squeeze(hdul[0].data), dtype="<f4"), hdul[0].header.copy()

    return _cached(("fits", str(path), path.stat().st_mtime_ns), load)


def _zarr_version(path: Path) -> int:
    """When the store's group metadata last changed: a mosaic update rewrites its attributes
    (the groups in it, the header) after its pixels, so this changes with every update."""
    for meta in ("zarr.json", ".zattrs", ".zgroup"):
        if (path / meta).is_file():
            return (path / meta).stat().st_mtime_ns
    raise FileNotFoundError(f"{path}: not a Zarr group")


def zarr_plane(path: Path, name: str = "image", *, attempts: int = 3) -> Plane:
    """Plane ``name`` of a Zarr group whose attribute ``header`` holds its FITS header (as
    `contimg.pipeline.mosaic` writes a mosaic's planes). The service may be updating the store
    while it is read: a read that fails, or during which the store changed, is tried again."""
    import zarr

    def load() -> tuple[np.ndarray, fits.Header]:
        grp = zarr.open_group(str(path), mode="r")
        header = fits.Header.fromstring(grp.attrs["header"])
        return np.ascontiguousarray(grp[name][...], dtype="<f4"), header

    for attempt in range(attempts):
        try:  # a store rebuilt (a reprocessed group) is briefly absent: renamed into place
            version = _zarr_version(path)
            plane = _cached(("zarr", str(path), name, version), load)
            if _zarr_version(path) == version or attempt == attempts - 1:
                return plane
        except (KeyError, ValueError, OSError):
            if attempt == attempts - 1:
                raise
        time.sleep(0.2)
    raise AssertionError("unreachable")


def read_image(path: Path) -> tuple[np.ndarray, fits.Header]:
    """The 2-D float32 image (ny, nx) of a FITS file and its header (the last few read are kept)."""
    plane = fits_plane(path)
    return plane.data, plane.header


_metas: OrderedDict[tuple, dict] = OrderedDict()


def plane_meta(plane: Plane) -> dict:
    """Size, WCS keywords, the box holding its finite pixels and the pixel statistics of a
    plane (the last 32 asked for are kept)."""
    with _cache_lock:
        if plane.key in _metas:
            return _metas[plane.key]
    meta = _compute_meta(plane.data, plane.header)
    with _cache_lock:
        _metas[plane.key] = meta
        while len(_metas) > 32:
            _metas.popitem(last=False)
    return meta


def _compute_meta(data: np.ndarray, h: fits.Header) -> dict:
    ok = np.isfinite(data)
    finite = data[ok]
    pct = np.percentile(finite, [0.5, 1, 50, 99, 99.5, 99.9]) if finite.size else np.zeros(6)
    mad = float(mad_std(finite)) if finite.size else 0.0
    ny, nx = data.shape
    cols, rows = np.flatnonzero(ok.any(axis=0)), np.flatnonzero(ok.any(axis=1))
    box = [int(cols[0]), int(cols[-1]) + 1, int(rows[0]), int(rows[-1]) + 1] if finite.size else [0, nx, 0, ny]
    step = int(np.ceil(np.sqrt(nx * ny / MAX_PIXELS_WHOLE)))
    return dict(nx=nx, ny=ny, step=max(step, 1), bunit=str(h.get("BUNIT", "")), ctype1=str(h.get("CTYPE1", "")),
                ctype2=str(h.get("CTYPE2", "")), crval1=float(h["CRVAL1"]), crval2=float(h["CRVAL2"]),
                crpix1=float(h["CRPIX1"]), crpix2=float(h["CRPIX2"]), cdelt1=float(h["CDELT1"]),
                cdelt2=float(h["CDELT2"]), freq_hz=float(h.get("CRVAL3", 0.0)), date_obs=str(h.get("DATE-OBS", "")),
                bmaj_deg=h.get("BMAJ"), bmin_deg=h.get("BMIN"), bpa_deg=h.get("BPA"),
                min=float(finite.min()) if finite.size else 0.0, max=float(finite.max()) if finite.size else 0.0,
                p0_5=float(pct[0]), p1=float(pct[1]), median=float(pct[2]), p99=float(pct[3]), p99_5=float(pct[4]),
                p99_9=float(pct[5]), rms_mad=mad, finite_fraction=float(finite.size / max(data.size, 1)),
                data_box=box)


def plane_array(load: Callable[[], Plane], step: int, x0: int, y0: int, w: int | None, h: int | None) -> Response:
    """The pixels of ``load()`` as the ``/array`` endpoints send them (blocking: run it off the
    loop): every ``step``-th pixel of the window from (``x0``, ``y0``), ``w`` × ``h`` (the
    whole plane when neither is given, which then needs ``step`` ≥ the meta's)."""
    plane = load()
    data = plane.data
    ny, nx = data.shape
    if w is None and h is None:
        need = plane_meta(plane)["step"]
        if step < need:
            raise HTTPException(422, f"the whole {nx}×{ny} image needs step ≥ {need}")
    x1 = nx if w is None else min(nx, x0 + w)
    y1 = ny if h is None else min(ny, y0 + h)
    if x0 >= nx or y0 >= ny or x1 <= x0 or y1 <= y0:
        raise HTTPException(422, f"window outside the {nx}×{ny} image")
    cut = np.ascontiguousarray(data[y0:y1:step, x0:x1:step], dtype="<f4")
    return Response(cut.tobytes(), media_type="application/octet-stream",
                    headers={"X-Shape": f"{cut.shape[0]},{cut.shape[1]}", "X-Origin": f"{y0},{x0}",
                             "X-Step": str(step), "Cache-Control": "no-cache"})


def pixels_of(header: fits.Header, ra_deg: list[float], dec_deg: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """0-based pixel (x, y) of each position through the header's celestial WCS (astropy)."""
    from astropy.wcs import WCS

    if not len(ra_deg):
        return np.zeros(0), np.zeros(0)
    x, y = WCS(header).celestial.world_to_pixel_values(np.asarray(ra_deg, float), np.asarray(dec_deg, float))
    return np.atleast_1d(np.asarray(x, float)), np.atleast_1d(np.asarray(y, float))


def _fits_meta(path: Path) -> dict:
    return plane_meta(fits_plane(path))


@router.get("/api/images/{image_id}/meta", response_model=ImageMetaOut,
            summary="an image's size, WCS (SIN) and pixel statistics, for the viewer")
async def image_meta(image_id: int = PathParam(ge=1), ctx: WebContext = Depends(context_of)) -> dict:
    row = _image_row(ctx, image_id)
    path = ctx.inside_products(row["path"])
    meta = await ctx.run_blocking(_fits_meta, path)
    return {"id": image_id, "group_id": row["group_id"], "type": row["type"], **meta}


@router.get("/api/images/{image_id}/array", summary="pixels as little-endian float32, row-major (y, x)",
            response_class=Response, responses={200: {"content": {"application/octet-stream": {}}}})
async def image_array(image_id: int = PathParam(ge=1), step: int = Query(1, ge=1, le=64),
                      x0: int = Query(0, ge=0), y0: int = Query(0, ge=0), w: int | None = Query(None, ge=1, le=8192),
                      h: int | None = Query(None, ge=1, le=8192), ctx: WebContext = Depends(context_of)) -> Response:
    """Row 0 is FITS row 1 (the bottom of the sky image); ``X-Shape`` gives ``ny,nx`` of what is sent.
    Without a window (``w``, ``h``) the whole image, which must then have at most 2048² pixels
    per step² (ask for ``step`` from ``/meta``)."""
    path = ctx.inside_products(_image_row(ctx, image_id)["path"])
    return await ctx.run_blocking(plane_array, lambda: fits_plane(path), step, x0, y0, w, h)


def own_catalogue(ctx: WebContext) -> CatalogueDB:
    """The pipeline's own catalogue (sources, forced photometry, candidates) in the products DB."""
    return CatalogueDB(ctx.root / "state" / "products.sqlite3")


def cutout_url(ctx: WebContext, path: str | None) -> str | None:
    """The URL of a transient candidate's cut-out PNG (None when it is not a file under products/)."""
    try:
        return ctx.product_url(path) if path and Path(path).is_file() else None
    except ValueError:  # outside the products folder
        return None


def own_overlay(db: CatalogueDB, forced: list[dict]) -> list[dict]:
    """The own catalogue's sources measured in an image or mosaic (its forced photometry rows,
    each with its pixel ``x``, ``y``), with their detection count and variability."""
    out = []
    for f in forced:
        src = db.source(f["source"]) or {}
        out.append(dict(source=f["source"], x=f["x"], y=f["y"], ra_deg=f["ra_deg"], dec_deg=f["dec_deg"],
                        flux_jy=f["flux_jy"], err_jy=f["err_jy"], mean_flux_jy=src.get("flux_jy"),
                        n_detections=src.get("n_detections") or 0, eta=src.get("eta"), v=src.get("v"),
                        variable=bool(src.get("variable"))))
    return out


def transient_overlay(ctx: WebContext, rows: list[dict], x: np.ndarray, y: np.ndarray) -> list[dict]:
    """Transient candidates at their pixels (x, y); those whose position has no pixel (NaN) are left out."""
    return [dict(id=r["id"], image=r["image"], x=float(xi), y=float(yi), ra_deg=r["ra_deg"], dec_deg=r["dec_deg"],
                 flux_jy=r["flux_jy"], snr=r["snr"], status=r["status"], cutout_url=cutout_url(ctx, r["cutout_path"]))
            for r, xi, yi in zip(rows, x, y) if np.isfinite(xi) and np.isfinite(yi)]


@router.get("/api/images/{image_id}/overlay", response_model=OverlayOut,
            summary="catalogue sources (forced photometry; the external and the pipeline's own), sources found "
                    "and variability and transient candidates at their pixels")
async def image_overlay(image_id: int = PathParam(ge=1), ctx: WebContext = Depends(context_of)) -> dict:
    row = _image_row(ctx, image_id)
    gid = row["group_id"]
    candidates = ctx.products.candidate_sources()
    catalogue = [dict(source=p["source"], x=p["x"], y=p["y"], ra_deg=p["ra_deg"], dec_deg=p["dec_deg"],
                      flux_jy=p["flux_jy"], err_jy=p["err_jy"], catalogue_flux_jy=p["catalogue_flux_jy"],
                      candidate=p["source"] in candidates)
                 for p in ctx.products.photometry(gid)]
    found = [dict(x=d["x"], y=d["y"], ra_deg=d["ra_deg"], dec_deg=d["dec_deg"], peak_jy=d["peak_jy"], snr=d["snr"],
                  match=d["match"] or "") for d in ctx.products.detections(gid)]
    db = own_catalogue(ctx)
    try:
        own = own_overlay(db, db.forced_in(gid))
        trans = db.candidates_in([gid])
    finally:
        db.close()
    if trans:
        header = (await ctx.run_blocking(fits_plane, ctx.inside_products(row["path"]))).header
        tx, ty = pixels_of(header, [t["ra_deg"] for t in trans], [t["dec_deg"] for t in trans])
    else:
        tx = ty = np.zeros(0)
    return {"image_id": image_id, "group_id": gid, "catalogue": catalogue, "own": own, "found": found,
            "transients": transient_overlay(ctx, trans, tx, ty)}


def _stats_out(n: int, mean: float | None, eta: float | None, v: float | None, candidate: bool) -> dict | None:
    return None if eta is None else dict(n=n, mean_flux_jy=mean, eta=eta, v=v, candidate=bool(candidate))


@router.get("/api/sources/{source}", response_model=SourceOut,
            summary="a source's light curve (forced photometry), η and V, the image of each point: a source of "
                    "the external catalogue, else of the pipeline's own catalogue")
async def source(source: str = PathParam(min_length=1, max_length=100, pattern=r"^[\w+\-. ]+$"),
                 ctx: WebContext = Depends(context_of)) -> dict:
    points = ctx.products.lightcurve(source)
    if points:
        images = ctx.products.restored_image_ids([p["group_id"] for p in points])
        stats = ctx.products.variable(source)
        return {"source": source, "catalogue": "external", "ra_deg": points[-1]["ra_deg"],
                "dec_deg": points[-1]["dec_deg"],
                "points": [dict(group_id=p["group_id"], mid_mjd=p["mid_mjd"], flux_jy=p["flux_jy"], err_jy=p["err_jy"],
                                noise_jy=p["noise_jy"], pb=p["pb"], catalogue_flux_jy=p["catalogue_flux_jy"], x=p["x"],
                                y=p["y"], image_id=images.get(p["group_id"])) for p in points],
                "stats": None if stats is None else _stats_out(stats["n"], stats["mean_flux_jy"], stats["eta"],
                                                               stats["v"], stats["candidate"])}
    db = own_catalogue(ctx)
    try:
        src, lc = db.source(source), db.lightcurve(source)
        trans = db.candidates_of(source)
    finally:
        db.close()
    if src is None or not lc:
        raise HTTPException(404, f"no measurements of {source}")
    images = ctx.products.restored_image_ids([p["image"] for p in lc])
    return {"source": source, "catalogue": "own", "ra_deg": src["ra_deg"], "dec_deg": src["dec_deg"],
            "points": [dict(group_id=p["image"], mid_mjd=p["mid_mjd"], flux_jy=p["flux_jy"], err_jy=p["err_jy"],
                            noise_jy=p["noise_jy"], pb=p["pb"], catalogue_flux_jy=src["flux_jy"], x=p["x"], y=p["y"],
                            image_id=images.get(p["image"])) for p in lc],
            "stats": _stats_out(src["n_forced"] or len(lc), src["mean_flux_jy"], src["eta"], src["v"],
                                src["variable"]),
            "own": dict(n_detections=src["n_detections"], first_seen_mjd=src["first_seen_mjd"],
                        last_seen_mjd=src["last_seen_mjd"], pos_err_arcsec=src["pos_err_arcsec"],
                        peak_snr=src["peak_snr"], maj_arcsec=src["maj_arcsec"], min_arcsec=src["min_arcsec"],
                        pa_deg=src["pa_deg"], external_name=src["external_name"] or "",
                        external_sep_arcsec=src["external_sep_arcsec"], flux_err_jy=src["flux_err_jy"]),
            "transients": [dict(id=t["id"], image=t["image"], mid_mjd=t["mid_mjd"], flux_jy=t["flux_jy"], snr=t["snr"],
                                status=t["status"], cutout_url=cutout_url(ctx, t["cutout_path"])) for t in trans]}
