"""The web view: a FastAPI app served by uvicorn from the service's own event loop.

REST under ``/api`` reads the service's databases (on the loop's thread, where their
connections live), WebSockets push the status bus (``/ws/status``) and waterfall rows
(``/ws/waterfall``), ``/`` serves the page. Files are served only from the products folder;
the one state-changing request (reprocess) needs the bearer token; CORS is off.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, WebSocket, WebSocketDisconnect
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from contimg.bus import EVENT_TYPES
from contimg.stages import STAGES, checkpoint_before, usable_checkpoint
from contimg.waterfall import parse_selection

if TYPE_CHECKING:
    from contimg.service import Service

log = logging.getLogger(__name__)

__all__ = ["create_app"]

STATIC = Path(__file__).parent / "static"
GROUP_ID = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$"
IMAGE_TYPES = ("dirty", "psf", "model", "residual", "restored", "pbcor")


# ---- response models ----------------------------------------------------------------------------
class TaskHealth(BaseModel):
    task: str
    state: Literal["ok", "degraded", "failed", "stopped"]


class StatusOut(BaseModel):
    """The service as a whole."""

    pid: int
    mode: str
    started_at: float
    uptime_s: float
    stopping: bool
    tasks: list[TaskHealth]
    queue: dict[str, int]  # groups by state
    queues_in_memory: dict[str, int]  # claim, read, write
    in_progress: dict[str, str]  # group → stage
    completed_last_hour: int
    backend: str
    device: str
    loop_lag_ms_p99: float
    loop_lag_ms_max: float
    cluster: dict | None = None  # cluster mode: scheduler, workers, groups in flight (s), completed in the last hour
    rss_bytes: int
    disk: str
    watcher: str | None
    ws_clients: int


class GroupOut(BaseModel):
    group_id: str
    state: str
    stage: str
    checkpoint: str
    present_subbands: int
    expected_subbands: int
    retry_count: int
    error: str
    received_at: float | None
    finished_at: float | None


class StageTime(BaseModel):
    stage: str
    seconds: float
    attempt: int
    replayed: bool


class SubbandFileOut(BaseModel):
    path: str
    subband: int
    role: str
    size: int


class GroupDetail(GroupOut):
    problems: list[str]
    timings: list[StageTime]
    files: list[SubbandFileOut]
    images: list[int]


class MsIndexRow(BaseModel):
    group_id: str
    status: str | None = None
    stage: str | None = None
    start_mjd: float | None = None
    end_mjd: float | None = None
    mid_mjd: float | None = None
    cal_applied: int | None = None
    calibrator: str | None = None
    image_name: str | None = None
    ra_deg: float | None = None
    dec_deg: float | None = None
    n_subbands: int | None = None
    error: str | None = None


class ImageOut(BaseModel):
    id: int
    group_id: str
    type: str
    bmaj_arcsec: float
    bmin_arcsec: float
    bpa_deg: float
    noise_jy: float
    peak_jy: float
    dynamic_range: float
    pbcor: bool
    fits_url: str
    thumbnail_url: str


class CalTableOut(BaseModel):
    """One registered solution table (`contimg.calregistry`); ``name`` is its set (the group solved on)."""

    name: str
    calibrator: str
    refant: str
    mid_mjd: float
    median_snr: float | None
    n_antennas: int
    n_channels: int
    status: str = Field(description="active (applied to groups in its window), rejected (failed its quality gate; never applied) or superseded")
    cal_type: str
    apply_order: int
    valid_start_mjd: float
    valid_end_mjd: float
    created_at: float
    quality: dict = Field(default_factory=dict, description="the solution quality gate: passed, metrics, reasons")


class GainsOut(BaseModel):
    """One antenna's gains of a solution: amplitude and phase (deg) per channel and polarization."""

    name: str
    antenna: int
    freq_mhz: list[float]
    amp: list[list[float | None]]  # (npol, nchan); None where flagged
    phase_deg: list[list[float | None]]


class FlagsOut(BaseModel):
    group_id: str
    fraction: float
    per_antenna: list[float | None]  # by antenna number; None for antennas not in the data
    per_channel: list[float]


class QAOut(BaseModel):
    group_id: str
    flag_fraction: float | None
    noise_jy: float | None
    peak_jy: float | None
    dynamic_range: float | None
    bmaj_arcsec: float | None
    bmin_arcsec: float | None
    cal_applied: bool
    calibrator: str
    qa_passed: bool | None = None
    gates: list[GateOut] = []


class GateOut(BaseModel):
    stage: str
    passed: bool
    metrics: dict
    reasons: list[str]


class ArtifactOut(BaseModel):
    kind: str
    url: str


class PhotometryOut(BaseModel):
    group_id: str
    source: str
    mid_mjd: float
    flux_jy: float
    err_jy: float
    noise_jy: float
    pb: float
    catalogue_flux_jy: float


class QADetail(BaseModel):
    group_id: str
    gates: list[GateOut]
    artifacts: list[ArtifactOut]
    n_detections: int
    photometry: list[PhotometryOut]


class VariableOut(BaseModel):
    source: str
    n: int
    mean_flux_jy: float | None
    eta: float | None
    v: float | None
    candidate: bool


class LightcurveOut(BaseModel):
    source: str
    points: list[PhotometryOut]
    stats: VariableOut | None


class AlertOut(BaseModel):
    severity: str
    category: str
    message: str
    at: float


class ReprocessOut(BaseModel):
    group_id: str
    from_stage: str
    state: str


# ---- the app ------------------------------------------------------------------------------------
def _token(svc: "Service") -> str:
    return os.environ.get("CONTIMG_WEB_TOKEN") or svc.cfg.web.token


def create_app(svc: "Service") -> FastAPI:
    """The web view of a running `Service` (its databases must be open)."""
    app = FastAPI(title="contimg", version="0.1", summary="Real-time continuum imaging: status, products, QA",
                  docs_url="/api/docs", openapi_url="/api/openapi.json", redoc_url=None)
    products_root = (svc.root / "products").resolve()
    bearer = HTTPBearer(auto_error=False)
    svc.ws_clients = 0

    def require_token(cred: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        token = _token(svc)
        if not token:
            raise HTTPException(401, "no web token is configured (web.token or CONTIMG_WEB_TOKEN): "
                                     "state-changing requests are refused", headers={"WWW-Authenticate": "Bearer"})
        if cred is None or not secrets.compare_digest(cred.credentials, token):
            raise HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})

    def inside_products(path: str | Path) -> Path:
        """``path`` resolved, if it lies inside the products folder and is a file; else 404/403."""
        p = Path(path)
        p = (products_root / p if not p.is_absolute() else p).resolve()
        if not p.is_relative_to(products_root):
            raise HTTPException(403, "only files under the products folder are served")
        if not p.is_file():
            raise HTTPException(404, "no such file")
        return p

    def image_row(image_id: int) -> dict:
        rows = list(svc.products.db.query("SELECT rowid AS id, * FROM images WHERE rowid = ?", [image_id]))
        if not rows:
            raise HTTPException(404, f"no image {image_id}")
        return rows[0]

    def image_out(r: dict) -> ImageOut:
        return ImageOut(id=r["id"], group_id=r["group_id"], type=r["type"], bmaj_arcsec=r["bmaj_arcsec"],
                        bmin_arcsec=r["bmin_arcsec"], bpa_deg=r["bpa_deg"], noise_jy=r["noise_jy"],
                        peak_jy=r["peak_jy"], dynamic_range=r["dynamic_range"], pbcor=bool(r["pbcor"]),
                        fits_url=f"/api/images/{r['id']}/fits", thumbnail_url=f"/api/images/{r['id']}/thumbnail.png")

    def group_out(r: dict) -> dict:
        return dict(group_id=r["group_id"], state=r["state"], stage=r["processing_stage"] or "",
                    checkpoint=r["checkpoint"] or "", present_subbands=r["present_subbands"],
                    expected_subbands=r["expected_subbands"], retry_count=r["retry_count"], error=r["error"] or "",
                    received_at=r["received_at"], finished_at=r["finished_at"])

    def gates_of(group_id: str) -> list[GateOut]:
        rows = svc.products.db.query("SELECT * FROM qa WHERE group_id = ?", [group_id])
        order = {"read": 0, "flag": 1, "calibrate": 2, "image": 3}
        gates = [GateOut(stage=r["stage"], passed=bool(r["passed"]), metrics=json.loads(r["metrics"]),
                         reasons=json.loads(r["reasons"])) for r in rows]
        return sorted(gates, key=lambda g: order.get(g.stage, 9))

    def product_url(path: str) -> str:
        return "/api/products/" + Path(path).resolve().relative_to(products_root).as_posix()

    def photometry_out(r: dict) -> PhotometryOut:
        return PhotometryOut(**{k: r[k] for k in PhotometryOut.model_fields})

    def variable_out(r: dict) -> VariableOut:
        return VariableOut(source=r["source"], n=r["n"], mean_flux_jy=r["mean_flux_jy"], eta=r["eta"], v=r["v"],
                           candidate=bool(r["candidate"]))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text())

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str = PathParam(pattern=r"^[a-z]+\.(js|css)$")) -> FileResponse:
        return FileResponse(STATIC / name)

    @app.get("/api/status", response_model=StatusOut, summary="health of every task, queues, rates, backend")
    async def status() -> StatusOut:
        h = svc.health_doc()
        done = svc.ingest.db.execute("SELECT count(*) FROM ingest_queue WHERE state = 'completed' AND "
                                     "finished_at >= ?", [time.time() - 3600]).fetchone()[0]
        return StatusOut(pid=h["pid"], mode=h["mode"], started_at=h["started_at"],
                         uptime_s=time.time() - h["started_at"], stopping=h["stopping"],
                         tasks=[TaskHealth(task=k, state=v) for k, v in sorted(h["health"].items())],
                         queue=svc.ingest.counts(), queues_in_memory=h["queues"], in_progress=h["in_hand"],
                         completed_last_hour=done, backend=h["backend"], device=h.get("device", "cpu"),
                         loop_lag_ms_p99=h["loop_lag_ms"]["p99"], loop_lag_ms_max=h["loop_lag_ms"]["max"],
                         rss_bytes=h["rss_bytes"], disk=h["disk"], watcher=h["watcher"], ws_clients=svc.ws_clients,
                         cluster=h.get("cluster"))

    @app.get("/api/groups", response_model=list[GroupOut], summary="groups, newest first")
    async def groups(state: Literal["collecting", "pending", "in_progress", "completed", "failed"] | None = None,
                     limit: int = Query(50, ge=1, le=1000), offset: int = Query(0, ge=0)) -> list[dict]:
        where, args = ("WHERE state = ?", [state]) if state else ("", [])
        rows = svc.ingest.db.query(f"SELECT * FROM ingest_queue {where} ORDER BY start_unix DESC LIMIT ? OFFSET ?",
                                   [*args, limit, offset])
        return [group_out(r) for r in rows]

    @app.get("/api/groups/{group_id}", response_model=GroupDetail, summary="one group: state, timings, files")
    async def group(group_id: str = PathParam(pattern=GROUP_ID)) -> dict:
        r = svc.ingest.row(group_id)
        if r is None:
            raise HTTPException(404, f"no group {group_id}")
        timings = [StageTime(stage=m["stage"], seconds=m["seconds"], attempt=m["attempt"],
                             replayed=bool(m["replayed"])) for m in svc.ingest.metrics(group_id)]
        files = [SubbandFileOut(path=f["path"], subband=f["subband"], role=f["role"], size=f["size"])
                 for f in svc.ingest.files(group_id)]
        images = [i["id"] for i in svc.products.db.query("SELECT rowid AS id FROM images WHERE group_id = ?",
                                                          [group_id])]
        return {**group_out(r), "problems": json.loads(r["problems"] or "[]"), "timings": timings, "files": files,
                "images": images}

    @app.get("/api/groups/{group_id}/flags", response_model=FlagsOut, summary="flag fractions of a group")
    async def group_flags(group_id: str = PathParam(pattern=GROUP_ID)) -> FlagsOut:
        path = products_root / group_id / "flags.zarr"
        if not path.is_dir():
            raise HTTPException(404, f"no flags stored for group {group_id}")
        from contimg.store import read_zarr

        arrays, attrs = await svc.workers["misc"].run(read_zarr, path)
        per_ant = [None if not np.isfinite(x) else float(x) for x in np.asarray(arrays["per_antenna"], float)]
        return FlagsOut(group_id=group_id, fraction=float(attrs["fraction"]), per_antenna=per_ant,
                        per_channel=[float(x) for x in arrays["per_channel"]])

    @app.get("/api/ms_index", response_model=list[MsIndexRow], summary="one row per group (products.sqlite3)")
    async def ms_index(limit: int = Query(100, ge=1, le=5000)) -> list[dict]:
        return list(svc.products.db.query("SELECT * FROM ms_index ORDER BY group_id DESC LIMIT ?", [limit]))

    @app.get("/api/images", response_model=list[ImageOut], summary="image products, newest first")
    async def images(group_id: str | None = Query(None, pattern=GROUP_ID),
                     type: Literal[IMAGE_TYPES] | None = None,  # noqa: A002 - the column's name
                     limit: int = Query(50, ge=1, le=1000)) -> list[ImageOut]:
        clauses, args = [], []
        if group_id:
            clauses.append("group_id = ?")
            args.append(group_id)
        if type:
            clauses.append("type = ?")
            args.append(type)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = svc.products.db.query(f"SELECT rowid AS id, * FROM images {where} ORDER BY group_id DESC, type "
                                     f"LIMIT ?", [*args, limit])
        return [image_out(r) for r in rows]

    @app.get("/api/images/{image_id}", response_model=ImageOut, summary="one image's metadata")
    async def image(image_id: int = PathParam(ge=1)) -> ImageOut:
        return image_out(image_row(image_id))

    @app.get("/api/images/{image_id}/fits", summary="the FITS file", response_class=FileResponse)
    async def image_fits(image_id: int = PathParam(ge=1)) -> FileResponse:
        path = inside_products(image_row(image_id)["path"])
        return FileResponse(path, media_type="application/fits", filename=path.name)

    @app.get("/api/images/{image_id}/thumbnail.png", summary="a PNG thumbnail", response_class=FileResponse)
    async def image_thumbnail(image_id: int = PathParam(ge=1), size: int = Query(512, ge=64, le=2048)):
        from contimg.web.thumbs import thumbnail_for

        fits_path = inside_products(image_row(image_id)["path"])
        png = await svc.workers["misc"].run(thumbnail_for, fits_path, size)
        return FileResponse(inside_products(png), media_type="image/png")

    @app.get("/api/products/{path:path}", summary="any file under the products folder",
             response_class=FileResponse)
    async def product_file(path: str) -> FileResponse:
        return FileResponse(inside_products(path))

    @app.get("/api/caltables", response_model=list[CalTableOut],
             summary="registered gain solutions (cal_registry.sqlite3), newest first")
    async def caltables(limit: int = Query(20, ge=1, le=500)) -> list[CalTableOut]:
        out = []
        for r in svc.calreg.rows(limit=limit):
            quality = json.loads(r["quality_json"] or "{}")
            out.append(CalTableOut(name=r["set_name"], calibrator=r["calibrator"], refant=r["refant"],
                                   mid_mjd=r["mid_mjd"], median_snr=quality.get("metrics", {}).get("median_snr"),
                                   n_antennas=r["n_antennas"], n_channels=r["n_channels"], status=r["status"],
                                   cal_type=r["cal_type"], apply_order=r["apply_order"],
                                   valid_start_mjd=r["valid_start_mjd"], valid_end_mjd=r["valid_end_mjd"],
                                   created_at=r["created_at"], quality=quality))
        return out

    @app.get("/api/caltables/{name}/gains", response_model=GainsOut, summary="one antenna's bandpass and phases")
    async def caltable_gains(name: str = PathParam(pattern=GROUP_ID), antenna: int = Query(..., ge=0, le=1000)):
        from contimg.store import load_solution

        row = svc.calreg.row(name)
        if row is None or not Path(row["path"]).is_dir():
            raise HTTPException(404, f"no solution {name}")
        path = Path(row["path"])
        sol = await svc.workers["misc"].run(load_solution, path)
        where = np.flatnonzero(np.asarray(sol.antenna_numbers) == antenna)
        if where.size == 0:
            raise HTTPException(404, f"antenna {antenna} is not in solution {name}")
        g = sol.gains[where[0]]  # (nchan, npol)
        f = sol.flags[where[0]]

        def clean(a):
            return [[None if bad else float(x) for x, bad in zip(a[:, p], f[:, p])] for p in range(a.shape[1])]

        return GainsOut(name=name, antenna=antenna, freq_mhz=[float(x) / 1e6 for x in sol.freq_hz],
                        amp=clean(np.abs(g)), phase_deg=clean(np.degrees(np.angle(g))))

    @app.get("/api/qa", response_model=list[QAOut], summary="quality figures per completed group")
    async def qa(limit: int = Query(50, ge=1, le=1000)) -> list[QAOut]:
        rows = svc.products.db.query(
            "SELECT m.group_id, m.cal_applied, m.calibrator, i.noise_jy, i.peak_jy, i.dynamic_range, i.bmaj_arcsec, "
            "i.bmin_arcsec FROM ms_index m LEFT JOIN images i ON i.group_id = m.group_id AND i.type = 'restored' "
            "WHERE m.status = 'completed' ORDER BY m.group_id DESC LIMIT ?", [limit])
        out = []
        for r in rows:
            gates = gates_of(r["group_id"])
            out.append(QAOut(flag_fraction=svc.flag_fraction(r["group_id"]), cal_applied=bool(r["cal_applied"]),
                             calibrator=r["calibrator"] or "", gates=gates,
                             qa_passed=all(g.passed for g in gates) if gates else None,
                             **{k: r[k] for k in ("group_id", "noise_jy", "peak_jy", "dynamic_range", "bmaj_arcsec",
                                                  "bmin_arcsec")}))
        return out

    @app.get("/api/qa/{group_id}", response_model=QADetail, summary="one group's gates, plots and photometry")
    async def qa_group(group_id: str = PathParam(pattern=GROUP_ID)) -> QADetail:
        gates = gates_of(group_id)
        if not gates:
            raise HTTPException(404, f"no QA for group {group_id}")
        arts = svc.products.db.query("SELECT kind, path FROM qa_artifacts WHERE group_id = ? ORDER BY kind", [group_id])
        n_det = svc.products.db.execute("SELECT COUNT(*) FROM detections WHERE group_id = ?", [group_id]).fetchone()[0]
        phot = svc.products.db.query("SELECT * FROM photometry WHERE group_id = ? ORDER BY source", [group_id])
        return QADetail(group_id=group_id, gates=gates, n_detections=n_det,
                        artifacts=[ArtifactOut(kind=a["kind"], url=product_url(a["path"])) for a in arts],
                        photometry=[photometry_out(r) for r in phot])

    @app.get("/api/variables", response_model=list[VariableOut], summary="variability statistics, highest eta first")
    async def variables(candidates_only: bool = False, limit: int = Query(100, ge=1, le=10000)) -> list[VariableOut]:
        where = "WHERE candidate = 1 " if candidates_only else ""
        rows = svc.products.db.query(f"SELECT * FROM variables {where}ORDER BY eta DESC LIMIT ?", [limit])
        return [variable_out(r) for r in rows]

    @app.get("/api/lightcurves/{source}", response_model=LightcurveOut, summary="one catalogue source's light curve")
    async def lightcurve(source: str = PathParam(min_length=1, max_length=100, pattern=r"^[\w+\-. ]+$")) -> LightcurveOut:
        points = svc.products.lightcurve(source)
        if not points:
            raise HTTPException(404, f"no measurements of {source}")
        stats = list(svc.products.db["variables"].rows_where("source = ?", [source]))
        return LightcurveOut(source=source, points=[photometry_out(r) for r in points],
                             stats=variable_out(stats[0]) if stats else None)

    @app.get("/api/alerts", response_model=list[AlertOut], summary="recent alerts, newest first")
    async def alerts(limit: int = Query(100, ge=1, le=500)) -> list[AlertOut]:
        items = [e for e in svc.bus.recent if e.type == "alert"][::-1][:limit]
        return [AlertOut(severity=e.severity, category=e.category, message=e.message, at=e.at) for e in items]

    @app.get("/api/metrics", response_class=PlainTextResponse, summary="Prometheus text format")
    async def metrics() -> PlainTextResponse:
        from contimg.web.metrics import prometheus_text

        return PlainTextResponse(prometheus_text(svc), media_type="text/plain; version=0.0.4")

    @app.post("/api/reprocess/{group_id}", response_model=ReprocessOut, dependencies=[Depends(require_token)],
              summary="queue a group again from a stage (needs the bearer token)")
    async def reprocess(group_id: str = PathParam(pattern=GROUP_ID),
                        from_stage: Literal[STAGES] = Query("read")) -> ReprocessOut:
        r = svc.ingest.row(group_id)
        if r is None:
            raise HTTPException(404, f"no group {group_id}")
        if r["state"] in ("in_progress", "collecting"):
            raise HTTPException(409, f"group {group_id} is {r['state']}; try again when it is done")
        checkpoint = checkpoint_before(from_stage)
        if usable_checkpoint(products_root / group_id, checkpoint) != checkpoint:
            raise HTTPException(409, f"group {group_id}: the intermediates needed to start at {from_stage} "
                                     f"are not stored")
        svc.ingest.request_reprocess(group_id, checkpoint=checkpoint)
        svc.wake()
        return ReprocessOut(group_id=group_id, from_stage=from_stage, state="pending")

    # ---- WebSockets ---------------------------------------------------------------------------
    async def pump(ws: WebSocket, sub, transform=lambda e: e.to_dict()) -> None:
        """Send the subscription's events until the client goes; receive selections alongside."""
        while True:
            event = await sub.get()
            await ws.send_text(json.dumps(transform(event), default=float))

    @app.websocket("/ws/status")
    async def ws_status(ws: WebSocket, types: str | None = None) -> None:
        wanted = set(types.split(",")) if types else set(EVENT_TYPES) - {"waterfall"}
        if not wanted <= set(EVENT_TYPES):
            await ws.close(code=1008, reason=f"unknown event types {sorted(wanted - set(EVENT_TYPES))}")
            return
        await ws.accept()
        sub = svc.bus.subscribe(maxsize=svc.cfg.web.client_queue, types=wanted)
        svc.ws_clients += 1
        try:
            for e in [e for e in svc.bus.recent if e.type in wanted][-50:]:  # the latest 50 of the kinds asked for
                await ws.send_text(json.dumps(e.to_dict(), default=float))
            sender = asyncio.create_task(pump(ws, sub))
            receiver = asyncio.create_task(_drain_client(ws))
            await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
            for t in (sender, receiver):
                t.cancel()
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            svc.bus.unsubscribe(sub)
            svc.ws_clients -= 1

    @app.websocket("/ws/waterfall")
    async def ws_waterfall(ws: WebSocket, select: str = "avg", pol: str = "XX") -> None:
        """Rows of the selection (``avg``, ``ant:N``, ``bl:A-B``) and polarization (XX, YY, I);
        the client may send ``{"select": ..., "pol": ...}`` to change them."""
        try:
            parse_selection(select)
        except ValueError as exc:
            await ws.close(code=1008, reason=str(exc))
            return
        await ws.accept()
        current = {"key": (select, pol.upper())}
        svc.watch_waterfall(current["key"], +1)
        sub = svc.bus.subscribe(maxsize=svc.cfg.web.client_queue, types={"waterfall"})
        svc.ws_clients += 1

        async def send_latest():
            latest = svc.last_waterfall.get(current["key"])
            if latest is not None:
                await ws.send_text(json.dumps(latest.to_dict(), default=float))

        async def sender():
            while True:
                e = await sub.get()
                if (e.selection, e.pol) == current["key"]:
                    await ws.send_text(json.dumps(e.to_dict(), default=float))

        async def receiver():
            while True:
                msg = await ws.receive_text()
                try:
                    req = json.loads(msg)
                    key = (str(req.get("select", current["key"][0])), str(req.get("pol", current["key"][1])).upper())
                    parse_selection(key[0])
                    if key[1] not in ("XX", "YY", "I"):
                        raise ValueError(f"waterfall polarization {key[1]!r}: XX, YY or I")
                except (ValueError, AttributeError, json.JSONDecodeError) as exc:
                    await ws.send_text(json.dumps({"type": "error", "message": str(exc)}))
                    continue
                svc.watch_waterfall(current["key"], -1)
                current["key"] = key
                svc.watch_waterfall(key, +1)
                await ws.send_text(json.dumps({"type": "selected", "select": key[0], "pol": key[1]}))
                await send_latest()

        try:
            await send_latest()
            tasks = {asyncio.create_task(sender()), asyncio.create_task(receiver())}
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in tasks:
                t.cancel()
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            svc.bus.unsubscribe(sub)
            svc.watch_waterfall(current["key"], -1)
            svc.ws_clients -= 1

    return app


async def _drain_client(ws: WebSocket) -> None:
    """Read (and ignore) what a status client sends, so that a close is noticed."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            await ws.receive_text()
