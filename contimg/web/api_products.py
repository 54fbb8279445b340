"""Products: ``ms_index``, images (metadata, FITS, thumbnails), any file under the products
folder, and the registered calibration tables with one antenna's gains."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi import Path as PathParam
from fastapi.responses import FileResponse

from contimg.io.store import read_zarr
from contimg.io.thumbs import thumbnail_for
from contimg.web.api_status import GROUP_ID
from contimg.web.context import WebContext, context_of
from contimg.web.models import CalTableOut, GainsOut, ImageOut, MsIndexRow

__all__ = ["router", "IMAGE_TYPES"]

IMAGE_TYPES = ("dirty", "psf", "model", "residual", "restored", "pbcor")
router = APIRouter()


def _image_row(ctx: WebContext, image_id: int) -> dict:
    row = ctx.products.image_by_id(image_id)
    if row is None:
        raise HTTPException(404, f"no image {image_id}")
    return row


def _image_out(r: dict) -> ImageOut:
    return ImageOut(id=r["id"], group_id=r["group_id"], type=r["type"], bmaj_arcsec=r["bmaj_arcsec"],
                    bmin_arcsec=r["bmin_arcsec"], bpa_deg=r["bpa_deg"], noise_jy=r["noise_jy"], peak_jy=r["peak_jy"],
                    dynamic_range=r["dynamic_range"], pbcor=bool(r["pbcor"]),
                    fits_url=f"/api/images/{r['id']}/fits", thumbnail_url=f"/api/images/{r['id']}/thumbnail.png")


@router.get("/api/ms_index", response_model=list[MsIndexRow], summary="one row per group (products.sqlite3)")
async def ms_index(limit: int = Query(100, ge=1, le=5000), ctx: WebContext = Depends(context_of)) -> list[dict]:
    return ctx.products.ms_index(limit=limit)


@router.get("/api/images", response_model=list[ImageOut], summary="image products, newest first")
async def images(group_id: str | None = Query(None, pattern=GROUP_ID),
                 type: Literal[IMAGE_TYPES] | None = None,  # noqa: A002 - the column's name
                 limit: int = Query(50, ge=1, le=1000), ctx: WebContext = Depends(context_of)) -> list[ImageOut]:
    return [_image_out(r) for r in ctx.products.image_rows(group_id=group_id, image_type=type, limit=limit)]


@router.get("/api/images/{image_id}", response_model=ImageOut, summary="one image's metadata")
async def image(image_id: int = PathParam(ge=1), ctx: WebContext = Depends(context_of)) -> ImageOut:
    return _image_out(_image_row(ctx, image_id))


@router.get("/api/images/{image_id}/fits", summary="the FITS file", response_class=FileResponse)
async def image_fits(image_id: int = PathParam(ge=1), ctx: WebContext = Depends(context_of)) -> FileResponse:
    path = ctx.inside_products(_image_row(ctx, image_id)["path"])
    return FileResponse(path, media_type="application/fits", filename=path.name)


@router.get("/api/images/{image_id}/thumbnail.png", summary="a PNG thumbnail", response_class=FileResponse)
async def image_thumbnail(image_id: int = PathParam(ge=1), size: int = Query(512, ge=64, le=2048),
                          ctx: WebContext = Depends(context_of)):
    fits_path = ctx.inside_products(_image_row(ctx, image_id)["path"])
    png = await ctx.run_blocking(thumbnail_for, fits_path, size)
    return FileResponse(ctx.inside_products(png), media_type="image/png")


@router.get("/api/products/{path:path}", summary="any file under the products folder", response_class=FileResponse)
async def product_file(path: str, ctx: WebContext = Depends(context_of)) -> FileResponse:
    return FileResponse(ctx.inside_products(path))


@router.get("/api/caltables", response_model=list[CalTableOut],
            summary="registered gain solutions (cal_registry.sqlite3), newest first")
async def caltables(limit: int = Query(20, ge=1, le=500), ctx: WebContext = Depends(context_of)) -> list[CalTableOut]:
    out = []
    for r in ctx.calreg.rows(limit=limit):
        quality = json.loads(r["quality_json"] or "{}")
        out.append(CalTableOut(name=r["set_name"], calibrator=r["calibrator"], refant=r["refant"],
                               mid_mjd=r["mid_mjd"], median_snr=quality.get("metrics", {}).get("median_snr"),
                               n_antennas=r["n_antennas"], n_channels=r["n_channels"], status=r["status"],
                               cal_type=r["cal_type"], apply_order=r["apply_order"],
                               valid_start_mjd=r["valid_start_mjd"], valid_end_mjd=r["valid_end_mjd"],
                               created_at=r["created_at"], quality=quality))
    return out


@router.get("/api/caltables/{name}/gains", response_model=GainsOut, summary="one antenna's bandpass and phases")
async def caltable_gains(name: str = PathParam(pattern=GROUP_ID), antenna: int = Query(..., ge=0, le=1000),
                         ctx: WebContext = Depends(context_of)):
    row = ctx.calreg.row(name)
    if row is None or not Path(row["path"]).is_dir():
        raise HTTPException(404, f"no solution {name}")
    arrays, _ = await ctx.run_blocking(read_zarr, Path(row["path"]))
    where = np.flatnonzero(np.asarray(arrays["antenna_numbers"]) == antenna)
    if where.size == 0:
        raise HTTPException(404, f"antenna {antenna} is not in solution {name}")
    g = arrays["gains"][where[0]]  # (nchan, npol)
    f = arrays["flags"][where[0]]

    def clean(a):
        return [[None if bad else float(x) for x, bad in zip(a[:, p], f[:, p])] for p in range(a.shape[1])]

    return GainsOut(name=name, antenna=antenna, freq_mhz=[float(x) / 1e6 for x in arrays["freq_hz"]],
                    amp=clean(np.abs(g)), phase_deg=clean(np.degrees(np.angle(g))))
