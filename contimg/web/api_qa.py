"""Quality: per-group figures and gates, plots and photometry, variability, light curves."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi import Path as PathParam

from contimg.web.api_status import GROUP_ID
from contimg.web.context import WebContext, context_of
from contimg.web.models import (ArtifactOut, GateOut, LightcurveOut, PhotometryOut, QADetail, QAOut, VariableOut)

__all__ = ["router"]

router = APIRouter()


def _photometry_out(r: dict) -> PhotometryOut:
    return PhotometryOut(**{k: r[k] for k in PhotometryOut.model_fields})


def _variable_out(r: dict) -> VariableOut:
    return VariableOut(source=r["source"], n=r["n"], mean_flux_jy=r["mean_flux_jy"], eta=r["eta"], v=r["v"],
                       candidate=bool(r["candidate"]))


@router.get("/api/qa", response_model=list[QAOut], summary="quality figures per completed group")
async def qa(limit: int = Query(50, ge=1, le=1000), ctx: WebContext = Depends(context_of)) -> list[QAOut]:
    out = []
    for r in ctx.products.qa_summary(limit=limit):
        gates = [GateOut(**g) for g in ctx.products.gates(r["group_id"])]
        out.append(QAOut(flag_fraction=ctx.products.flag_fraction(r["group_id"]), cal_applied=bool(r["cal_applied"]),
                         calibrator=r["calibrator"] or "", gates=gates,
                         qa_passed=all(g.passed for g in gates) if gates else None,
                         **{k: r[k] for k in ("group_id", "noise_jy", "peak_jy", "dynamic_range", "bmaj_arcsec",
                                              "bmin_arcsec")}))
    return out


@router.get("/api/qa/{group_id}", response_model=QADetail, summary="one group's gates, plots and photometry")
async def qa_group(group_id: str = PathParam(pattern=GROUP_ID), ctx: WebContext = Depends(context_of)) -> QADetail:
    gates = [GateOut(**g) for g in ctx.products.gates(group_id)]
    if not gates:
        raise HTTPException(404, f"no QA for group {group_id}")
    return QADetail(group_id=group_id, gates=gates, n_detections=ctx.products.n_detections(group_id),
                    artifacts=[ArtifactOut(kind=a["kind"], url=ctx.product_url(a["path"]))
                               for a in ctx.products.artifacts(group_id)],
                    photometry=[_photometry_out(r) for r in ctx.products.photometry(group_id)])


@router.get("/api/variables", response_model=list[VariableOut], summary="variability statistics, highest eta first")
async def variables(candidates_only: bool = False, limit: int = Query(100, ge=1, le=10000),
                    ctx: WebContext = Depends(context_of)) -> list[VariableOut]:
    return [_variable_out(r) for r in ctx.products.variables(candidates_only=candidates_only, limit=limit)]


@router.get("/api/lightcurves/{source}", response_model=LightcurveOut, summary="one catalogue source's light curve")
async def lightcurve(source: str = PathParam(min_length=1, max_length=100, pattern=r"^[\w+\-. ]+$"),
                     ctx: WebContext = Depends(context_of)) -> LightcurveOut:
    points = ctx.products.lightcurve(source)
    if not points:
        raise HTTPException(404, f"no measurements of {source}")
    stats = ctx.products.variable(source)
    return LightcurveOut(source=source, points=[_photometry_out(r) for r in points],
                         stats=_variable_out(stats) if stats else None)
