"""The image viewer's and the source page's data: an image's WCS and pixel statistics, its
pixels (whole, subsampled or a window) as raw float32, the catalogue sources (forced
photometry), the sources found and the variability candidates at their pixel positions, and a
catalogue source's light curve with the restored image of each point (for its cut-outs).

Pixels go to the browser as they are in the FITS file (``BUNIT``, usually Jy/beam) and the page
draws them on its own canvas: the cursor's value is then the FITS value, not a colour read back
from a PNG, and the overlays, RA/Dec and colour scale need no plug-in."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
from astropy.io import fits
from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi import Path as PathParam
from fastapi.responses import Response

from contimg.web.api_products import _image_row
from contimg.web.context import WebContext, context_of
from contimg.web.models import ImageMetaOut, OverlayOut, SourceOut

__all__ = ["read_image", "router"]

router = APIRouter()
MAX_PIXELS_WHOLE = 2048 * 2048  # larger images go to the viewer subsampled (every Nth pixel)

_cache: OrderedDict[tuple[str, float], tuple[np.ndarray, fits.Header]] = OrderedDict()
_cache_lock = threading.Lock()


def read_image(path: Path) -> tuple[np.ndarray, fits.Header]:
    """The 2-D float32 image (ny, nx) of a FITS file and its header; the last two read are kept."""
    key = (str(path), path.stat().st_mtime)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    with fits.open(path, memmap=False) as hdul:
        header = hdul[0].header.copy()
        data = np.ascontiguousarray(np.squeeze(hdul[0].data), dtype="<f4")
    if data.ndim != 2:
        raise ValueError(f"{path}: not an image (shape {data.shape})")
    with _cache_lock:
        _cache[key] = (data, header)
        while len(_cache) > 2:
            _cache.popitem(last=False)
    return data, header


_metas: OrderedDict[tuple[str, float], dict] = OrderedDict()


def _meta(path: Path) -> dict:
    """Size, WCS keywords and pixel statistics of a FITS image (the last 32 asked for are kept)."""
    key = (str(path), path.stat().st_mtime)
    with _cache_lock:
        if key in _metas:
            return _metas[key]
    meta = _compute_meta(path)
    with _cache_lock:
        _metas[key] = meta
        while len(_metas) > 32:
            _metas.popitem(last=False)
    return meta


def _compute_meta(path: Path) -> dict:
    data, h = read_image(path)
    finite = data[np.isfinite(data)]
    pct = np.percentile(finite, [0.5, 1, 50, 99, 99.5, 99.9]) if finite.size else np.zeros(6)
    mad = float(np.median(np.abs(finite - pct[2])) * 1.4826) if finite.size else 0.0
    ny, nx = data.shape
    step = int(np.ceil(np.sqrt(nx * ny / MAX_PIXELS_WHOLE)))
    return dict(nx=nx, ny=ny, step=max(step, 1), bunit=str(h.get("BUNIT", "")), ctype1=str(h.get("CTYPE1", "")),
                ctype2=str(h.get("CTYPE2", "")), crval1=float(h["CRVAL1"]), crval2=float(h["CRVAL2"]),
                crpix1=float(h["CRPIX1"]), crpix2=float(h["CRPIX2"]), cdelt1=float(h["CDELT1"]),
                cdelt2=float(h["CDELT2"]), freq_hz=float(h.get("CRVAL3", 0.0)), date_obs=str(h.get("DATE-OBS", "")),
                bmaj_deg=h.get("BMAJ"), bmin_deg=h.get("BMIN"), bpa_deg=h.get("BPA"),
                min=float(finite.min()) if finite.size else 0.0, max=float(finite.max()) if finite.size else 0.0,
                p0_5=float(pct[0]), p1=float(pct[1]), median=float(pct[2]), p99=float(pct[3]), p99_5=float(pct[4]),
                p99_9=float(pct[5]), rms_mad=mad)


@router.get("/api/images/{image_id}/meta", response_model=ImageMetaOut,
            summary="an image's size, WCS (SIN) and pixel statistics, for the viewer")
async def image_meta(image_id: int = PathParam(ge=1), ctx: WebContext = Depends(context_of)) -> dict:
    row = _image_row(ctx, image_id)
    path = ctx.inside_products(row["path"])
    meta = await ctx.run_blocking(_meta, path)
    return {"id": image_id, "group_id": row["group_id"], "type": row["type"], **meta}


def _window(path: Path, step: int, x0: int, y0: int, w: int | None, h: int | None) -> tuple[bytes, tuple[int, int]]:
    data, _ = read_image(path)
    ny, nx = data.shape
    x1 = nx if w is None else min(nx, x0 + w)
    y1 = ny if h is None else min(ny, y0 + h)
    if x0 >= nx or y0 >= ny or x1 <= x0 or y1 <= y0:
        raise HTTPException(422, f"window outside the {nx}×{ny} image")
    cut = np.ascontiguousarray(data[y0:y1:step, x0:x1:step], dtype="<f4")
    return cut.tobytes(), cut.shape


@router.get("/api/images/{image_id}/array", summary="pixels as little-endian float32, row-major (y, x)",
            response_class=Response, responses={200: {"content": {"application/octet-stream": {}}}})
async def image_array(image_id: int = PathParam(ge=1), step: int = Query(1, ge=1, le=64),
                      x0: int = Query(0, ge=0), y0: int = Query(0, ge=0), w: int | None = Query(None, ge=1, le=8192),
                      h: int | None = Query(None, ge=1, le=8192), ctx: WebContext = Depends(context_of)) -> Response:
    """Row 0 is FITS row 1 (the bottom of the sky image); ``X-Shape`` gives ``ny,nx`` of what is sent.
    Without a window (``w``, ``h``) the whole image, which must then have at most 2048² pixels
    per step² (ask for ``step`` from ``/meta``)."""
    path = ctx.inside_products(_image_row(ctx, image_id)["path"])
    if w is None and h is None:
        meta = await ctx.run_blocking(_meta, path)
        if step < meta["step"]:
            raise HTTPException(422, f"the whole {meta['nx']}×{meta['ny']} image needs step ≥ {meta['step']}")
    body, shape = await ctx.run_blocking(_window, path, step, x0, y0, w, h)
    return Response(body, media_type="application/octet-stream",
                    headers={"X-Shape": f"{shape[0]},{shape[1]}", "X-Origin": f"{y0},{x0}", "X-Step": str(step),
                             "Cache-Control": "no-cache"})


@router.get("/api/images/{image_id}/overlay", response_model=OverlayOut,
            summary="catalogue sources (forced photometry), sources found and candidates at their pixels")
async def image_overlay(image_id: int = PathParam(ge=1), ctx: WebContext = Depends(context_of)) -> dict:
    row = _image_row(ctx, image_id)
    candidates = ctx.products.candidate_sources()
    catalogue = [dict(source=p["source"], x=p["x"], y=p["y"], ra_deg=p["ra_deg"], dec_deg=p["dec_deg"],
                      flux_jy=p["flux_jy"], err_jy=p["err_jy"], catalogue_flux_jy=p["catalogue_flux_jy"],
                      candidate=p["source"] in candidates)
                 for p in ctx.products.photometry(row["group_id"])]
    found = [dict(x=d["x"], y=d["y"], ra_deg=d["ra_deg"], dec_deg=d["dec_deg"], peak_jy=d["peak_jy"], snr=d["snr"],
                  match=d["match"] or "") for d in ctx.products.detections(row["group_id"])]
    return {"image_id": image_id, "group_id": row["group_id"], "catalogue": catalogue, "found": found}


@router.get("/api/sources/{source}", response_model=SourceOut,
            summary="a catalogue source: light curve (forced photometry), η and V, the image of each point")
async def source(source: str = PathParam(min_length=1, max_length=100, pattern=r"^[\w+\-. ]+$"),
                 ctx: WebContext = Depends(context_of)) -> dict:
    points = ctx.products.lightcurve(source)
    if not points:
        raise HTTPException(404, f"no measurements of {source}")
    images = ctx.products.restored_image_ids([p["group_id"] for p in points])
    stats = ctx.products.variable(source)
    return {"source": source, "ra_deg": points[-1]["ra_deg"], "dec_deg": points[-1]["dec_deg"],
            "points": [dict(group_id=p["group_id"], mid_mjd=p["mid_mjd"], flux_jy=p["flux_jy"], err_jy=p["err_jy"],
                            noise_jy=p["noise_jy"], pb=p["pb"], catalogue_flux_jy=p["catalogue_flux_jy"], x=p["x"],
                            y=p["y"], image_id=images.get(p["group_id"])) for p in points],
            "stats": None if stats is None else dict(n=stats["n"], mean_flux_jy=stats["mean_flux_jy"],
                                                      eta=stats["eta"], v=stats["v"],
                                                      candidate=bool(stats["candidate"]))}
