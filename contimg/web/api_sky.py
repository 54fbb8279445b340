"""The sky the pipeline learns: strip mosaics (``/api/mosaics``), its own catalogue
(``/api/catalogue``), variability and transient candidates (``/api/candidates``), and an
operator's verdict on a candidate (a POST with the bearer token). A mosaic opens in the page's
image viewer through ``/api/mosaics/{name}/meta``, ``/array`` and ``/overlay`` (the contract of
the images' own, `contimg.web.api_images`): a running span is read from its Zarr planes, a
complete mosaic from its FITS. Read through the state
classes `contimg.state.mosaics.MosaicsDB` and `contimg.state.catalogue.CatalogueDB` on the
products database; the mosaics' FITS files are served from ``<root>/mosaics`` only."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from fastapi import APIRouter, Body, Depends, HTTPException, Query
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel

from contimg.state.catalogue import CatalogueDB
from contimg.state.mosaics import MosaicsDB
from contimg.web.api_images import (Plane, cutout_url, fits_plane, pixels_of, plane_array, plane_meta, transient_overlay,
                                    zarr_plane)
from contimg.web.api_status import require_token
from contimg.web.context import WebContext, context_of
from contimg.web.models import MosaicMetaOut, OverlayOut

__all__ = ["router"]

router = APIRouter()
NAME = r"^[\w+\-. :]{1,200}$"
CANDIDATE = r"^[\w+\-.:]{1,200}#\d+$"  # "<group id>#<detection>" (send '#' as %23)
_FILES = {"image": "image_path", "noise": "noise_path", "weight": "weight_path"}
_ZARR_PLANES = {"image": "image", "noise": "noise", "weight": "pb_weight"}  # the viewer's plane -> the Zarr array


class Verdict(BaseModel):
    verdict: Literal["real", "artefact"]
    by: str = ""
    note: str = ""


def _catalogue(ctx: WebContext) -> CatalogueDB:
    return CatalogueDB(ctx.root / "state" / "products.sqlite3")


def _mosaics(ctx: WebContext) -> MosaicsDB:
    return MosaicsDB(ctx.root / "state" / "products.sqlite3")


def _with_urls(row: dict) -> dict:
    return {**row, "files": {kind: f"/api/mosaics/{row['name']}/{kind}.fits" for kind, key in _FILES.items()
                             if row.get(key)}}


@router.get("/api/mosaics", summary="strip mosaics: the running span's and the finished ones, newest first")
async def mosaics(kind: str | None = Query(None, pattern=r"^\w+$"), limit: int = Query(100, ge=1, le=1000),
                  ctx: WebContext = Depends(context_of)) -> list[dict]:
    db = _mosaics(ctx)
    try:
        return [_with_urls(r) for r in db.list(kind=kind, limit=limit)]
    finally:
        db.close()


@router.get("/api/mosaics/{name}", summary="one mosaic: its groups, grid, noise, and its FITS files")
async def mosaic(name: str = PathParam(pattern=NAME), ctx: WebContext = Depends(context_of)) -> dict:
    return _with_urls(_mosaic_row(ctx, name))


@router.get("/api/mosaics/{name}/{kind}.fits", summary="a mosaic's image, noise or primary-beam weight FITS",
            response_class=FileResponse)
async def mosaic_file(name: str = PathParam(pattern=NAME), kind: Literal["image", "noise", "weight"] = PathParam(),
                      ctx: WebContext = Depends(context_of)) -> FileResponse:
    path = _inside_mosaics(ctx, _mosaic_row(ctx, name).get(_FILES[kind]))
    if path is None or not path.is_file():
        raise HTTPException(404, f"mosaic {name} has no {kind} FITS (a running span has none until it completes)")
    return FileResponse(path, media_type="application/fits", filename=path.name)


@router.get("/api/catalogue", summary="the pipeline's own catalogue: every source found, refined as it is seen again")
async def catalogue(response: Response, limit: int = Query(1000, ge=1, le=100000),
                    order: Literal["name", "interest"] = Query("name"),
                    ctx: WebContext = Depends(context_of)) -> list[dict]:
    """By name, or (``order=interest``) variability candidates first, then the highest η, then
    the brightest. ``X-Total-Count`` and ``X-Variable-Count``: the whole catalogue's."""
    db = _catalogue(ctx)
    try:
        n, n_var = db.count_sources()
        response.headers["X-Total-Count"], response.headers["X-Variable-Count"] = str(n), str(n_var)
        return db.sources_ranked(limit) if order == "interest" else db.sources()[:limit]
    finally:
        db.close()


@router.get("/api/catalogue/{name}", summary="one catalogue source and its light curve (forced photometry)")
async def catalogue_source(name: str = PathParam(pattern=NAME), ctx: WebContext = Depends(context_of)) -> dict:
    db = _catalogue(ctx)
    try:
        src = db.source(name)
        if src is None:
            raise HTTPException(404, f"no catalogue source {name}")
        return {"source": src, "lightcurve": db.lightcurve(name), "detections": db.detections(source=name)}
    finally:
        db.close()


@router.get("/api/candidates", summary="transient candidates (status new, real or artefact) and variability candidates")
async def candidates(status: Literal["new", "real", "artefact"] | None = Query(None),
                     limit: int = Query(100, ge=1, le=10000), ctx: WebContext = Depends(context_of)) -> dict:
    db = _catalogue(ctx)
    try:
        return {"transients": [{**t, "cutout_url": cutout_url(ctx, t["cutout_path"])}
                               for t in db.candidates(status=status, limit=limit)],
                "variables": db.variables()}
    finally:
        db.close()


@router.post("/api/candidates/{cid}", dependencies=[Depends(require_token)],
             summary="an operator's verdict on a transient candidate: real or artefact (needs the bearer token)")
async def mark(cid: str = PathParam(pattern=CANDIDATE), body: Verdict = Body(...),
               ctx: WebContext = Depends(context_of)) -> dict:
    db = _catalogue(ctx)
    try:
        return db.mark_candidate(cid, verdict=body.verdict, by=body.by, note=body.note)
    except KeyError:
        raise HTTPException(404, f"no transient candidate {cid}") from None
    finally:
        db.close()


# ---- the viewer's view of a mosaic ------------------------------------------------------------
def _mosaic_row(ctx: WebContext, name: str) -> dict:
    db = _mosaics(ctx)
    try:
        row = db.get(name)
    finally:
        db.close()
    if row is None:
        raise HTTPException(404, f"no mosaic {name}")
    return row


def _inside_mosaics(ctx: WebContext, path: str | None) -> Path | None:
    if not path:
        return None
    p = Path(path).resolve()
    return p if p.is_relative_to((ctx.root / "mosaics").resolve()) and p.exists() else None


def _plane_loader(ctx: WebContext, row: dict, plane: str):
    """(a blocking loader of the mosaic's ``plane``, ``zarr`` or ``fits``): a complete mosaic's
    FITS file when it has one, else (a running span) the plane in its Zarr store."""
    if row["status"] == "complete":
        path = _inside_mosaics(ctx, row.get(_FILES[plane]))
        if path is not None and path.is_file():
            return (lambda: fits_plane(path)), "fits"
    path = _inside_mosaics(ctx, row.get("zarr_path"))
    if path is None or not path.is_dir():
        raise HTTPException(404, f"mosaic {row['name']} has no planes yet")
    return (lambda: zarr_plane(path, _ZARR_PLANES[plane])), "zarr"


def _meta_of(load) -> tuple[dict, Plane]:
    plane = load()
    return plane_meta(plane), plane


PlaneName = Literal["image", "noise", "weight"]


@router.get("/api/mosaics/{name}/meta", response_model=MosaicMetaOut,
            summary="a mosaic plane's size, WCS (SIN) and pixel statistics, for the viewer (running: Zarr; complete: FITS)")
async def mosaic_meta(name: str = PathParam(pattern=NAME), plane: PlaneName = Query("image"),
                      ctx: WebContext = Depends(context_of)) -> dict:
    row = _mosaic_row(ctx, name)
    load, read_from = _plane_loader(ctx, row, plane)
    meta, _ = await ctx.run_blocking(_meta_of, load)
    return {**meta, "name": name, "kind": row["kind"], "status": row["status"], "plane": plane, "read_from": read_from,
            "start_mjd": row["start_mjd"], "end_mjd": row["end_mjd"], "n_groups": row["n_groups"],
            "groups": row["groups"], "noise_median_jy": row["noise_median_jy"]}


@router.get("/api/mosaics/{name}/array", summary="a mosaic plane's pixels as little-endian float32, row-major (y, x)",
            response_class=Response, responses={200: {"content": {"application/octet-stream": {}}}})
async def mosaic_array(name: str = PathParam(pattern=NAME), plane: PlaneName = Query("image"),
                       step: int = Query(1, ge=1, le=64), x0: int = Query(0, ge=0), y0: int = Query(0, ge=0),
                       w: int | None = Query(None, ge=1, le=8192), h: int | None = Query(None, ge=1, le=8192),
                       ctx: WebContext = Depends(context_of)) -> Response:
    """As ``/api/images/{id}/array``: row 0 is FITS row 1, ``X-Shape`` the ``ny,nx`` sent; NaN
    where no image reaches the grid."""
    load, _ = _plane_loader(ctx, _mosaic_row(ctx, name), plane)
    return await ctx.run_blocking(plane_array, load, step, x0, y0, w, h)


def _covered(plane: Plane, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Which pixels (x, y) fall on a finite pixel of the plane."""
    ny, nx = plane.data.shape
    xi, yi = np.round(np.nan_to_num(x, nan=-1)).astype(int), np.round(np.nan_to_num(y, nan=-1)).astype(int)
    inside = (xi >= 0) & (xi < nx) & (yi >= 0) & (yi < ny)
    ok = np.zeros(len(x), bool)
    ok[inside] = np.isfinite(plane.data[yi[inside], xi[inside]])
    return ok


@router.get("/api/mosaics/{name}/overlay", response_model=OverlayOut,
            summary="the pipeline's own catalogue sources, the sources found in the mosaic and the transient "
                    "candidates, at their pixels of the mosaic (astropy WCS of its header)")
async def mosaic_overlay(name: str = PathParam(pattern=NAME), ctx: WebContext = Depends(context_of)) -> dict:
    row = _mosaic_row(ctx, name)
    load, _ = _plane_loader(ctx, row, "image")
    plane = await ctx.run_blocking(load)
    db = _catalogue(ctx)
    try:
        sources = db.sources()
        measured = {f["source"]: f for f in db.forced_in(name)}  # a searched (complete) mosaic's forced photometry
        found = db.detections(image=name)
        trans = db.candidates(limit=10000)
    finally:
        db.close()
    sx, sy = pixels_of(plane.header, [s["ra_deg"] for s in sources], [s["dec_deg"] for s in sources])
    keep = _covered(plane, sx, sy)
    own = [dict(source=s["name"], x=float(x), y=float(y), ra_deg=s["ra_deg"], dec_deg=s["dec_deg"],
                flux_jy=measured[s["name"]]["flux_jy"] if s["name"] in measured else s["flux_jy"],
                err_jy=measured[s["name"]]["err_jy"] if s["name"] in measured else s["flux_err_jy"],
                mean_flux_jy=s["flux_jy"], n_detections=s["n_detections"] or 0, eta=s["eta"], v=s["v"],
                variable=bool(s["variable"]))
           for s, x, y, k in zip(sources, sx, sy, keep) if k]
    fx, fy = pixels_of(plane.header, [d["ra_deg"] for d in found], [d["dec_deg"] for d in found])
    found_out = [dict(x=float(x), y=float(y), ra_deg=d["ra_deg"], dec_deg=d["dec_deg"], peak_jy=d["peak_jy"],
                      snr=d["snr"], match=d["source"] or "") for d, x, y in zip(found, fx, fy)]
    tx, ty = pixels_of(plane.header, [t["ra_deg"] for t in trans], [t["dec_deg"] for t in trans])
    tk = _covered(plane, tx, ty)
    trans = [t for t, k in zip(trans, tk) if k]
    return {"mosaic": name, "catalogue": [], "own": own, "found": found_out,
            "transients": transient_overlay(ctx, trans, tx[tk], ty[tk])}
