"""The sky the pipeline learns: strip mosaics (``/api/mosaics``), its own catalogue
(``/api/catalogue``), variability and transient candidates (``/api/candidates``), and an
operator's verdict on a candidate (a POST with the bearer token). Read through the state
classes `contimg.state.mosaics.MosaicsDB` and `contimg.state.catalogue.CatalogueDB` on the
products database; the mosaics' FITS files are served from ``<root>/mosaics`` only."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Query
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from pydantic import BaseModel

from contimg.state.catalogue import CatalogueDB
from contimg.state.mosaics import MosaicsDB
from contimg.web.api_status import require_token
from contimg.web.context import WebContext, context_of

__all__ = ["router"]

router = APIRouter()
NAME = r"^[\w+\-. :]{1,200}$"
CANDIDATE = r"^[\w+\-.:]{1,200}#\d+$"  # "<group id>#<detection>" (send '#' as %23)
_FILES = {"image": "image_path", "noise": "noise_path", "weight": "weight_path"}


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
    db = _mosaics(ctx)
    try:
        row = db.get(name)
    finally:
        db.close()
    if row is None:
        raise HTTPException(404, f"no mosaic {name}")
    return _with_urls(row)


@router.get("/api/mosaics/{name}/{kind}.fits", summary="a mosaic's image, noise or primary-beam weight FITS",
            response_class=FileResponse)
async def mosaic_file(name: str = PathParam(pattern=NAME), kind: Literal["image", "noise", "weight"] = PathParam(),
                      ctx: WebContext = Depends(context_of)) -> FileResponse:
    db = _mosaics(ctx)
    try:
        row = db.get(name)
    finally:
        db.close()
    path = Path((row or {}).get(_FILES[kind]) or "")
    home = (ctx.root / "mosaics").resolve()
    if not row or not path.name or not path.resolve().is_relative_to(home) or not path.is_file():
        raise HTTPException(404, f"mosaic {name} has no {kind} FITS (a running span has none until it completes)")
    return FileResponse(path, media_type="application/fits", filename=path.name)


@router.get("/api/catalogue", summary="the pipeline's own catalogue: every source found, refined as it is seen again")
async def catalogue(limit: int = Query(1000, ge=1, le=100000), ctx: WebContext = Depends(context_of)) -> list[dict]:
    db = _catalogue(ctx)
    try:
        return db.sources()[:limit]
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
        return {"transients": db.candidates(status=status, limit=limit), "variables": db.variables()}
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
