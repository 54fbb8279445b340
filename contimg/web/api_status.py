"""``/api/status``, groups, alerts, Prometheus metrics and the reprocess request."""

from __future__ import annotations

import json
import secrets
import time
from typing import Literal

import numpy as np
import zarr
from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi import Path as PathParam
from fastapi.responses import PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from contimg.web.context import ReprocessRefused, WebContext, context_of
from contimg.web.metrics import prometheus_text
from contimg.web.models import (AlertOut, FlagsOut, FlagWaterfallOut, GroupDetail, GroupOut, ReprocessOut, StageTime, StatusOut,
                                SubbandFileOut, TaskHealth)

__all__ = ["router", "GROUP_ID"]

# a DSA-110 group (its first file's time, YYYY-MM-DDTHH:MM:SS) or a file group (the file's name)
GROUP_ID = r"^[\w+\-.:]{1,200}$"
router = APIRouter()
_bearer = HTTPBearer(auto_error=False)


def require_token(cred: HTTPAuthorizationCredentials | None = Depends(_bearer),
                  ctx: WebContext = Depends(context_of)) -> None:
    token = ctx.token()
    if not token:
        raise HTTPException(401, "no web token is configured (web.token or CONTIMG_WEB_TOKEN): "
                                 "state-changing requests are refused", headers={"WWW-Authenticate": "Bearer"})
    if cred is None or not secrets.compare_digest(cred.credentials, token):
        raise HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})


def _group_out(r: dict) -> dict:
    return dict(group_id=r["group_id"], state=r["state"], stage=r["processing_stage"] or "",
                checkpoint=r["checkpoint"] or "", present_subbands=r["present_subbands"],
                expected_subbands=r["expected_subbands"], retry_count=r["retry_count"], error=r["error"] or "",
                received_at=r["received_at"], finished_at=r["finished_at"])


@router.get("/api/status", response_model=StatusOut, summary="health of every task, queues, rates, backend")
async def status(ctx: WebContext = Depends(context_of)) -> StatusOut:
    h = ctx.health_doc()
    return StatusOut(pid=h["pid"], mode=h["mode"], started_at=h["started_at"],
                     uptime_s=time.time() - h["started_at"], stopping=h["stopping"],
                     tasks=[TaskHealth(task=k, state=v) for k, v in sorted(h["health"].items())],
                     queue=ctx.ingest.counts(), queues_in_memory=h["queues"], in_progress=h["in_hand"],
                     completed_last_hour=ctx.ingest.completed_since(time.time() - 3600), backend=h["backend"],
                     backends=h.get("backends") or {},
                     device=h.get("device", "cpu"), loop_lag_ms_p99=h["loop_lag_ms"]["p99"],
                     loop_lag_ms_max=h["loop_lag_ms"]["max"], rss_bytes=h["rss_bytes"], disk=h["disk"],
                     watcher=h["watcher"], ws_clients=ctx.ws_clients, cluster=h.get("cluster"))


@router.get("/api/groups", response_model=list[GroupOut], summary="groups, newest first")
async def groups(state: Literal["collecting", "pending", "in_progress", "completed", "failed"] | None = None,
                 limit: int = Query(50, ge=1, le=1000), offset: int = Query(0, ge=0),
                 ctx: WebContext = Depends(context_of)) -> list[dict]:
    return [_group_out(r) for r in ctx.ingest.page(state=state, limit=limit, offset=offset)]


@router.get("/api/groups/{group_id}", response_model=GroupDetail, summary="one group: state, timings, files")
async def group(group_id: str = PathParam(pattern=GROUP_ID), ctx: WebContext = Depends(context_of)) -> dict:
    r = ctx.ingest.row(group_id)
    if r is None:
        raise HTTPException(404, f"no group {group_id}")
    timings = [StageTime(stage=m["stage"], seconds=m["seconds"], attempt=m["attempt"], replayed=bool(m["replayed"]))
               for m in ctx.ingest.metrics(group_id)]
    files = [SubbandFileOut(path=f["path"], subband=f["subband"], role=f["role"], size=f["size"])
             for f in ctx.ingest.files(group_id)]
    return {**_group_out(r), "problems": json.loads(r["problems"] or "[]"), "timings": timings, "files": files,
            "images": ctx.products.image_ids(group_id)}


def _read_flag_summary(path, names: tuple[str, ...]) -> tuple[dict[str, np.ndarray], dict]:
    """Only the named (small) arrays of a ``flags.zarr``, not the full flags."""
    grp = zarr.open_group(str(path), mode="r")
    return {n: np.asarray(grp[n][...]) for n in names if n in grp}, dict(grp.attrs)


def _flags_path(ctx: WebContext, group_id: str):
    path = ctx.products_root / group_id / "flags.zarr"
    if not path.is_dir():
        raise HTTPException(404, f"no flags stored for group {group_id}")
    return path


@router.get("/api/groups/{group_id}/flags", response_model=FlagsOut, summary="flag fractions of a group")
async def group_flags(group_id: str = PathParam(pattern=GROUP_ID), ctx: WebContext = Depends(context_of)) -> FlagsOut:
    path = _flags_path(ctx, group_id)
    arrays, attrs = await ctx.run_blocking(_read_flag_summary, path, ("per_antenna", "per_channel"))
    per_ant = [None if not np.isfinite(x) else float(x) for x in np.asarray(arrays["per_antenna"], float)]
    return FlagsOut(group_id=group_id, fraction=float(attrs["fraction"]), per_antenna=per_ant,
                    per_channel=[float(x) for x in arrays["per_channel"]])


@router.get("/api/groups/{group_id}/flag_waterfall", response_model=FlagWaterfallOut,
            summary="the flagger's flagged fraction per integration and channel bin (all cross-correlations)")
async def group_flag_waterfall(group_id: str = PathParam(pattern=GROUP_ID), bins: int = Query(192, ge=1, le=4096),
                               ctx: WebContext = Depends(context_of)) -> FlagWaterfallOut:
    """The flags after the flag stage, binned like the waterfall's rows (``bins`` channel bins of
    equal channel counts, ascending frequency), over every cross-correlation and polarization."""
    arrays, _ = await ctx.run_blocking(_read_flag_summary, _flags_path(ctx, group_id), ("per_time_channel",))
    if "per_time_channel" not in arrays:
        raise HTTPException(404, f"group {group_id}'s flags have no per-time-channel summary")
    ptc = np.asarray(arrays["per_time_channel"], float)  # (ntime, nchan)
    nchan = ptc.shape[1]
    nb = min(bins, nchan)
    edges = np.linspace(0, nchan, nb + 1).astype(int)
    binned = np.add.reduceat(ptc, edges[:-1], axis=1) / np.diff(edges)[None, :]
    return FlagWaterfallOut(group_id=group_id, flagged=np.round(binned, 4).tolist())


@router.get("/api/alerts", response_model=list[AlertOut], summary="recent alerts, newest first")
async def alerts(limit: int = Query(100, ge=1, le=500), ctx: WebContext = Depends(context_of)) -> list[AlertOut]:
    items = [e for e in ctx.bus.recent if e.type == "alert"][::-1][:limit]
    return [AlertOut(severity=e.severity, category=e.category, message=e.message, at=e.at) for e in items]


@router.get("/api/metrics", response_class=PlainTextResponse, summary="Prometheus text format")
async def metrics(ctx: WebContext = Depends(context_of)) -> PlainTextResponse:
    return PlainTextResponse(prometheus_text(ctx), media_type="text/plain; version=0.0.4")


@router.post("/api/reprocess/{group_id}", response_model=ReprocessOut, dependencies=[Depends(require_token)],
             summary="queue a group again from a stage (needs the bearer token)")
async def reprocess(group_id: str = PathParam(pattern=GROUP_ID), from_stage: str = Query("read"),
                    ctx: WebContext = Depends(context_of)) -> ReprocessOut:
    if from_stage not in ctx.stages:
        raise HTTPException(422, f"from_stage must be one of {', '.join(ctx.stages)}")
    try:
        ctx.reprocess(group_id, from_stage)
    except ReprocessRefused as exc:
        raise HTTPException(exc.status, str(exc)) from None
    return ReprocessOut(group_id=group_id, from_stage=from_stage, state="pending")
