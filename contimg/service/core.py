"""The always-on service: one asyncio process, a thin shell around the stage functions.

::

    watcher ─► ingest.sqlite3 (collecting → pending)
    scheduler ─q_claim─► reader ─q_read─► processor (device thread) ─q_write─► writer
                          (read)          (flag, calibrate, image)            (FITS, DB rows)

Every edge is a bounded queue and the scheduler claims a group only when one of ``prefetch + 1``
memory slots is free (the processor gives it back once the group is imaged), so at most
``prefetch + 1`` groups' visibilities are in memory. Flagging, calibration and imaging run one at a time in the
device worker thread; reading and writing run in their own threads; the event loop only moves
work, records state and publishes events, so it stays responsive.

Every task runs under a supervisor (traceback logged, health published, restart with back-off).
Each stage's start, end and checkpoint are recorded in the ingest DB, so a restart after a crash
resumes an ``in_progress`` group from its last stored intermediate. SIGTERM/SIGINT: stop taking
work, finish the stage in hand (or, past ``shutdown_grace_s``, leave the group at its last
checkpoint), put unfinished groups back to ``pending``, close the databases and return 0.

The same class runs `contimg serve` (watching a folder, forever), `contimg replay` (watching,
fed by a replay task, until the input is done) and `contimg run` (files registered up front,
until the queue is empty).
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import gc
import json
import logging
import os
import shutil
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path

import numpy as np
import psutil

from contimg.sky.calibrators import vla_calibrators
from contimg.bus import Alert, GroupState, Health, QAResult, StageTiming, StatusBus, Waterfall
from contimg.config import Config
from contimg.state.calregistry import CalRegistry
from contimg.pipeline.calibration import adopt_unregistered
from contimg.state.ingest import IngestDB
from contimg.io.naming import scan_folder
from contimg.io.reader import ReadError
from contimg.offline import load_earth_orientation
from contimg.state.products import ProductsDB
from contimg.qa.alerts import AlertManager
from contimg.sky.catalogue import load_catalogue, resolve_catalogue
from contimg.service.recorder import QARecorder
from contimg.pipeline.stages import (CHECKPOINT_FILES, STAGES, GroupWork, group_has_calibrator, reprocess_checkpoint,
                                     run_stage, usable_checkpoint)
from contimg.web.context import ReprocessRefused, WebContext
from contimg.service.watch import FolderWatcher
from contimg.service.runtime import Worker, write_json
from contimg.state.lock import RootLock, ServiceLockError, service_running
from contimg.qa.waterfall import waterfall_events

log = logging.getLogger(__name__)

__all__ = ["Service", "ServiceLockError", "Worker", "service_running"]


ESSENTIAL = ("scheduler", "reader", "processor", "writer")  # without one of these nothing moves
PROCESSOR_STAGES = ("flag", "calibrate", "image")


class Service:
    """The pipeline as a long-running asyncio service (see the module docstring).

    mode: "serve" (watch ``watch_dir`` until stopped), "drain" (stop once nothing is collecting,
    pending or in progress and ``input_done`` is set). web: serve the web view (default: in
    "serve" mode, when ``web.enabled``).
    """

    def __init__(self, root: str | Path, cfg: Config, *, mode: str = "serve", watch_dir: Path | None = None,
                 timeout_scale: float = 1.0, install_signal_handlers: bool = True, web: bool | None = None,
                 cluster=None):
        self.root = Path(root)
        self.cfg = cfg
        self.sc = cfg.service
        self.mode = mode
        self.watch_dir = Path(watch_dir) if watch_dir is not None else None
        self.timeout_scale = timeout_scale  # replay at speed X shortens the collecting timeout by X
        # signal handlers can only be installed from the main thread
        self.install_signal_handlers = install_signal_handlers and threading.current_thread() is threading.main_thread()
        self.bus = StatusBus()
        self.state_dir = self.root / "state"
        self.ingest: IngestDB | None = None
        self.products: ProductsDB | None = None
        self.calreg: CalRegistry | None = None
        self.health: dict[str, str] = {}
        self.in_hand: dict[str, GroupWork] = {}
        self.outcomes: dict[str, dict] = {}
        self.input_done = asyncio.Event()
        self.stopping = asyncio.Event()
        self.exit_code = 0
        self.lag_s: deque[float] = deque(maxlen=1200)  # the event loop's timer lag, last minute
        self._lag_window: list[float] = []  # since the last completed group
        self.gc_max_s = 0.0  # the longest garbage collection (it holds the GIL), for health.json
        self._gc_started = 0.0
        self._gc_window_max = 0.0  # since the last completed group
        self.disk_state = "ok"
        self.started_at = time.time()
        self._wake = asyncio.Event()
        self._current: dict[str, GroupWork | None] = {}
        self._slot_holders: set[str] = set()
        self._lock = RootLock(self.root)
        self.web_enabled = web if web is not None else (mode == "serve" and cfg.web.enabled)
        self.web_port: int | None = None
        self.web: WebContext | None = None  # what the web view sees (made when it starts)
        self.waterfall_watch: Counter = Counter()  # (selection, pol) → clients watching it
        self.last_waterfall: dict[tuple[str, str], Waterfall] = {}
        self._tasks: list[asyncio.Task] = []
        self._watcher: FolderWatcher | None = None
        self.alerts = AlertManager(cfg.alerts, publish=self.bus.publish, record=self._record_alert)
        self.cluster = cluster  # a `contimg.pipeline.cluster.ClusterBackend`: groups run as Dask tasks
        self._remote: dict[str, GroupWork] = {}  # groups whose task is on the cluster
        self._remote_done = asyncio.Event()
        self.catalogue = None  # the sky catalogue (loaded at open)
        self.qa: QARecorder | None = None  # records what QA the stages left (made at open)

    # ---- set-up -------------------------------------------------------------------------------
    def open(self) -> None:
        self._lock.acquire()
        load_earth_orientation()
        vla_calibrators()  # parse the calibrator list once, before any group
        self.ingest = IngestDB(self.state_dir / "ingest.sqlite3", n_subbands=self.cfg.grouping.n_subbands,
                               tolerance_s=self.cfg.grouping.group_tolerance_s)
        self.products = ProductsDB(self.state_dir / "products.sqlite3")
        self.calreg = CalRegistry(self.state_dir / "cal_registry.sqlite3")
        adopted = adopt_unregistered(self.calreg, self.root / "cal",
                                     bandpass_validity_hours=self.cfg.calibrate.bandpass_validity_hours, qa_cfg=self.cfg.qa)
        if adopted:
            log.info("registered %d solution tables written before the calibration registry: %s", len(adopted),
                     ", ".join(adopted[:10]))
        self.qa = QARecorder(products=self.products, alerts=self.alerts, cfg=self.cfg)
        # a bad catalogue is refused at start-up, naming the file
        self.catalogue = load_catalogue(resolve_catalogue(self.cfg.sky.catalogue, self.root))
        log.info("sky catalogue: %d sources (%s)", len(self.catalogue), self.cfg.sky.catalogue or "VLA calibrators")
        for gid in self.ingest.recover_interrupted(max_retries=self.sc.max_retries):
            row = self.ingest.row(gid)
            log.warning("group %s was in progress when the service stopped: %s", gid,
                        row["error"] if row["state"] == "pending" else f"failed: {row['error']}")
            self.products.upsert_group(group_id=gid, status=row["state"], error=row["error"])
        # what start-up made (modules, tables, the calibrator list) never becomes garbage: keep it
        # out of the collector's full passes, which stop every thread while they walk the heap
        gc.collect()
        gc.freeze()
        if self._gc_timer not in gc.callbacks:
            gc.callbacks.append(self._gc_timer)

    def _gc_timer(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started:
            took = time.perf_counter() - self._gc_started
            self.gc_max_s = max(self.gc_max_s, took)
            self._gc_window_max = max(self._gc_window_max, took)

    def close(self) -> None:
        if self._gc_timer in gc.callbacks:
            gc.callbacks.remove(self._gc_timer)
        for db in (self.ingest, self.products, self.calreg):
            if db is not None:
                db.close()
        self.ingest = self.products = self.calreg = None
        self._lock.release()

    def register_folder(self, folder: Path) -> int:
        """Register every complete subband file in ``folder`` now (batch mode)."""
        n = 0
        for f in sorted(scan_folder(folder)):
            st = f.path.stat()
            if self._on_file(f.path, st):
                n += 1
        return n

    def _on_file(self, path: Path, st: os.stat_result) -> bool:
        gid = self.ingest.register_file(path, size=st.st_size, mtime=st.st_mtime)
        if gid is None:
            return False
        row = self.ingest.row(gid)
        log.debug("registered %s in group %s (%d/%d, %s)", path.name, gid, row["present_subbands"],
                  row["expected_subbands"], row["state"])
        if row["state"] == "pending":
            self.bus.publish(GroupState(gid, "pending"))
            self._wake.set()
        return True

    # ---- the tasks ----------------------------------------------------------------------------
    async def _get(self, q: asyncio.Queue, *, drain: bool = False):
        """The next item, or None once stopping (``drain``: not before ``q`` is empty)."""
        while True:
            if self.stopping.is_set() and not (drain and not q.empty()):
                return None
            getter = asyncio.ensure_future(q.get())
            stopper = asyncio.ensure_future(self.stopping.wait())
            done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if getter in done:
                return getter.result()
            getter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await getter

    async def _put(self, q: asyncio.Queue, work: GroupWork) -> bool:
        """Hand ``work`` on; if the service stops first, put the group back and return False."""
        putter = asyncio.ensure_future(q.put(work))
        stopper = asyncio.ensure_future(self.stopping.wait())
        done, _ = await asyncio.wait({putter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if putter in done:
            return True
        putter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await putter
        self._put_back(work)
        return False

    async def _sleep(self, seconds: float, event: asyncio.Event | None = None) -> None:
        """Sleep ``seconds`` or until ``event`` (default: stopping) is set."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for((event or self.stopping).wait(), seconds)

    async def _watcher_task(self) -> None:
        self._watcher = FolderWatcher(self.watch_dir, settle_s=self.sc.settle_s,
                                      poll_interval_s=self.sc.poll_interval_s, use_inotify=self.sc.use_inotify)
        log.info("watching %s (%s)", self.watch_dir, "inotify + polling" if self.sc.use_inotify else "polling")
        await self._watcher.run(self._on_file, self.stopping)

    async def _take_slot(self) -> bool:
        """Wait for a free memory slot; False if the service stops first."""
        taker = asyncio.ensure_future(self.mem_slots.acquire())
        stopper = asyncio.ensure_future(self.stopping.wait())
        await asyncio.wait({taker, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not taker.done():
            taker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await taker
            return False
        if self.stopping.is_set():
            self.mem_slots.release()
            return False
        return True

    async def _scheduler_task(self) -> None:
        """Claim the next group only when a memory slot is free, so that a claimed group is read
        at once and the choice (calibrator groups first) is made as late as possible."""
        while not self.stopping.is_set():
            self._close_timed_out()
            if self.disk_state == "critical":
                await self._sleep(self.sc.poll_interval_s)
                continue
            await self._prioritise()
            if not await self._take_slot():
                break
            row = self.ingest.claim_next()
            if row is None:
                self.mem_slots.release()
                self._wake.clear()
                wait = self.sc.poll_interval_s
                nxt = self.ingest.next_retry_at()
                if nxt:
                    wait = min(wait, max(0.05, nxt - time.time()))
                await self._sleep(wait, self._wake)
                continue
            gid = row["group_id"]
            work = GroupWork(group=self.ingest.group(gid), root=self.root)
            self._slot_holders.add(gid)
            work.checkpoint = usable_checkpoint(work.out_dir, row["checkpoint"])
            if work.checkpoint != (row["checkpoint"] or "") and row["checkpoint"] != "write":
                log.warning("group %s: checkpoint %r incomplete on disk; resuming from %r", gid, row["checkpoint"],
                            work.checkpoint)
            if row["checkpoint"] == "write":  # a reprocess of everything after the images
                work.checkpoint = usable_checkpoint(work.out_dir, "image")
            work.attempt = row["retry_count"] + 1
            work.calibrator_group = bool(row.get("priority"))
            work.catalogue = self.catalogue
            beams = self.products.recent_beams(10)
            if beams:
                work.reference_beam_arcsec = tuple(float(x) for x in np.median(np.array(beams), axis=0))
            self.in_hand[gid] = work
            self.products.upsert_group(group_id=gid, status="in_progress", stage="read", error="")
            self.bus.publish(GroupState(gid, "in_progress", "read"))
            log.info("group %s: claimed (%d files, attempt %d, resume from %s)", gid, len(work.group.files),
                     work.attempt, work.checkpoint or "the start")
            await self._put(self.q_claim, work)

    async def _prioritise(self) -> None:
        """Calibrator groups first: a target group then finds a fresh solution."""
        for row in self.ingest.db.query("SELECT group_id FROM ingest_queue WHERE state = 'pending' "
                                        "AND priority IS NULL"):
            group = self.ingest.group(row["group_id"])
            has_cal = await self.workers['misc'].run(group_has_calibrator, group, self.cfg)
            self.ingest.set_priority(row["group_id"], int(has_cal))

    def _close_timed_out(self, *, input_exhausted: bool = False) -> None:
        older = 0.0 if input_exhausted else self.sc.collecting_timeout_s / self.timeout_scale
        for gid in self.ingest.close_collecting(older_than_s=older, on_incomplete=self.sc.on_incomplete,
                                                reason="no more input" if input_exhausted else ""):
            row = self.ingest.row(gid)
            log.warning("%s", json.loads(row["problems"])[-1])
            self.bus.publish(GroupState(gid, row["state"], error=row["error"]))
            if row["state"] == "failed":
                self.products.upsert_group(group_id=gid, status="failed", stage="collect", error=row["error"])
                self.outcomes[gid] = {"group_id": gid, "status": "failed", "stage": "collect", "error": row["error"]}
            self._wake.set()

    async def _reader_task(self) -> None:
        while (work := await self._get(self.q_claim)) is not None:
            self._current["reader"] = work
            ok = await self._run_stage(work, "read", self.workers["read"].run)
            self._current["reader"] = None
            if not ok:
                continue
            if work.chunk is not None:  # raw amplitudes, before the processor changes the data
                await self._publish_waterfall(work)
            if self.stopping.is_set():
                self._put_back(work)
                continue
            await self._put(self.q_read, work)

    def watch_waterfall(self, key: tuple[str, str], delta: int) -> None:
        """A web client starts (+1) or stops (-1) watching a waterfall selection."""
        self.waterfall_watch[key] += delta
        if self.waterfall_watch[key] <= 0:
            del self.waterfall_watch[key]

    async def _publish_waterfall(self, work: GroupWork) -> None:
        keys = {("avg", "XX"), ("avg", "YY"), *self.waterfall_watch}
        try:
            rows = await self.workers["read"].run(waterfall_events, work.chunk, sorted(keys), self.cfg.web.waterfall_bins)
        except Exception:  # noqa: BLE001 - a display aid: never fails a group
            log.exception("group %s: waterfall rows failed", work.group_id)
            return
        for event in rows:
            self.last_waterfall[(event.selection, event.pol)] = event
            self.bus.publish(event)

    def wake(self) -> None:
        """New work may be waiting (a reprocess request)."""
        self._wake.set()

    def reprocess(self, group_id: str, from_stage: str) -> None:
        """Queue a finished or failed group again from ``from_stage`` (the web's request);
        `ReprocessRefused` (404, 409) when it cannot be."""
        row = self.ingest.row(group_id)
        if row is None:
            raise ReprocessRefused(404, f"no group {group_id}")
        if row["state"] in ("in_progress", "collecting"):
            raise ReprocessRefused(409, f"group {group_id} is {row['state']}; try again when it is done")
        try:
            checkpoint = reprocess_checkpoint(self.root / "products" / group_id, from_stage)
        except FileNotFoundError as exc:
            raise ReprocessRefused(409, str(exc)) from None
        self.ingest.request_reprocess(group_id, checkpoint=checkpoint)
        self.wake()

    def web_context(self) -> WebContext:
        """What the web view may see and do of this service."""
        return WebContext(root=self.root, cfg=self.cfg.web, bus=self.bus, ingest=self.ingest, products=self.products,
                          calreg=self.calreg, stages=STAGES, health_doc=self.health_doc,
                          task_health=lambda: dict(self.health), run_blocking=self.workers["misc"].run,
                          watch_waterfall=self.watch_waterfall, last_waterfall=self.last_waterfall.get,
                          reprocess=self.reprocess)

    async def _web_task(self) -> None:
        import uvicorn

        from contimg.web.app import create_app

        self.web = self.web_context()
        app = create_app(self.web)
        server = uvicorn.Server(uvicorn.Config(app, host=self.cfg.web.host, port=self.cfg.web.port, log_level="warning",
                                               lifespan="off", ws_ping_interval=20))
        server.install_signal_handlers = lambda: None  # ours stop the service; it stops the server
        stopper = asyncio.ensure_future(self._stop_server_when_stopping(server))
        try:
            serving = asyncio.ensure_future(server.serve())
            while not server.started and not serving.done():
                await asyncio.sleep(0.05)
            if server.started:
                sock = server.servers[0].sockets[0].getsockname()
                self.web_port = sock[1]
                log.info("web view on http://%s:%d/", self.cfg.web.host, self.web_port)
            try:
                await serving
            except SystemExit:  # uvicorn exits the process when it cannot bind: make it a task failure
                raise RuntimeError(f"web view cannot listen on {self.cfg.web.host}:{self.cfg.web.port} "
                                   f"(in use? set web.port)") from None
        finally:
            stopper.cancel()
            self.web_port = None

    async def _stop_server_when_stopping(self, server) -> None:
        await self.stopping.wait()
        server.should_exit = True

    async def _cluster_task(self) -> None:
        """Cluster mode: each claimed group becomes a Dask task (`contimg.pipeline.cluster.run_group`);
        the memory slots bound how many are in flight. A group without a calibrator waits until
        the calibrator groups in flight are done, so it finds their solutions as in batch."""
        running: set[asyncio.Task] = set()
        try:
            while (work := await self._get(self.q_claim)) is not None:
                while not work.calibrator_group and any(w.calibrator_group for w in self._remote.values()):
                    self._remote_done.clear()
                    await self._remote_done.wait()
                self._remote[work.group_id] = work
                task = asyncio.create_task(self._run_remote(work), name=f"remote-{work.group_id}")
                running.add(task)
                task.add_done_callback(running.discard)
            if running:
                await asyncio.gather(*running)
        except asyncio.CancelledError:
            for task in running:
                task.cancel()
            raise

    async def _run_remote(self, work: GroupWork) -> None:
        gid = work.group_id
        self.bus.publish(StageTiming(gid, "read", "started"))
        t0 = time.perf_counter()
        try:
            self._hand_calibration(work)
            try:
                outcome = await self.cluster.run(work)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker: recorded, retried per max_retries
                self._record_failed(work, "cluster", exc, time.perf_counter() - t0)
                return
            done = outcome.work
            self.in_hand[gid] = done
            for stage, seconds in done.timings_s.items():
                self.ingest.record_metric(gid, stage, seconds, attempt=done.attempt)
                self.bus.publish(StageTiming(gid, stage, "finished", seconds))
            self._register_calibration(done)
            self.qa.record_stage(done)
            log.info("group %s: back from worker %s (pid %d)", gid, outcome.worker, outcome.pid)
            if outcome.failed_stage:
                if not outcome.read_error:
                    log.error("group %s failed in stage %s on worker %s:\n%s", gid, outcome.failed_stage,
                              outcome.worker, outcome.traceback)
                self._record_failure(done, outcome.failed_stage, outcome.error, permanent=outcome.read_error,
                                     seconds=0.0)
                return
            done.checkpoint = "image"
            self.ingest.set_checkpoint(gid, "image")
            self._record_completed(done)
            self.outcomes[gid]["worker"] = f"{outcome.worker} (pid {outcome.pid})"
            self.cluster.completed_times.append(time.time())
            self._release_slot(done)
        finally:
            self._remote.pop(gid, None)
            self._remote_done.set()

    async def _processor_task(self) -> None:
        while (work := await self._get(self.q_read)) is not None:
            self._current["processor"] = work
            ok = True
            for stage in PROCESSOR_STAGES:
                if self.stopping.is_set():
                    ok = False
                    self._put_back(work)
                    break
                ok = await self._run_stage(work, stage, self.workers["device"].run)
                if not ok:
                    break
            work.chunk = None
            self._release_slot(work)
            self._current["processor"] = None
            if ok:
                await self._put(self.q_write, work)

    async def _writer_task(self) -> None:
        while (work := await self._get(self.q_write, drain=True)) is not None:
            self._current["writer"] = work
            if await self._run_stage(work, "write", self.workers["write"].run):
                self._record_completed(work)
            self._current["writer"] = None

    async def _run_stage(self, work: GroupWork, stage: str, runner) -> bool:
        gid = work.group_id
        self.ingest.set_stage(gid, stage)
        self.products.upsert_group(group_id=gid, stage=stage)
        self.bus.publish(StageTiming(gid, stage, "started"))
        replayed = work.done("image" if stage == "read" else stage) and stage != "write"
        if stage == "calibrate":
            self._hand_calibration(work)
        t0 = time.perf_counter()
        try:
            await runner(run_stage, stage, work, self.cfg)
        except Exception as exc:  # noqa: BLE001 - a group's failure is recorded, never fatal
            self._record_failed(work, stage, exc, time.perf_counter() - t0)
            return False
        dt = time.perf_counter() - t0
        work.timings_s[stage] = round(dt, 3)
        self._register_calibration(work)
        self.qa.record_stage(work)
        self.ingest.record_metric(gid, stage, dt, attempt=work.attempt, replayed=replayed)
        if stage in CHECKPOINT_FILES and not work.done(stage):
            work.checkpoint = stage
            self.ingest.set_checkpoint(gid, stage)
        self.bus.publish(StageTiming(gid, stage, "finished", round(dt, 3)))
        return True

    def _hand_calibration(self, work: GroupWork) -> None:
        """Before a group's calibrate stage: the active registry rows near its time."""
        start_mjd = (work.group.start - datetime(1858, 11, 17)).total_seconds() / 86400.0
        work.cal_candidates = self.calreg.candidates(mjd=start_mjd)

    def _register_calibration(self, work: GroupWork) -> None:
        """After it: the rows its solve left (before the checkpoint is recorded, so a crash in
        between re-runs or replays the stage and registers again: upserted, no duplicate)."""
        for row in work.cal_registrations:
            self.calreg.register(row)
        work.cal_registrations = []

    def _record_alert(self, alert: Alert) -> None:
        if self.products is not None:
            self.products.record_alert(severity=alert.severity, category=alert.category, message=alert.message,
                                       at=alert.at)

    def _record_completed(self, work: GroupWork) -> None:
        gid = work.group_id
        for row in work.image_rows:
            self.products.upsert_image(**row)
        imgs, meta = work.imgs, work.meta
        problems = list(meta.get("problems", [])) + json.loads(self.ingest.row(gid)["problems"] or "[]")
        self.products.upsert_group(
            group_id=gid, status="completed", stage="done", error="", start_mjd=meta.get("start_mjd"),
            end_mjd=meta.get("end_mjd"), mid_mjd=meta.get("mid_mjd"), cal_applied=int(work.cal_applied),
            calibrator=work.calibrator, image_name=str(work.out_dir / f"{gid}.restored.fits"),
            flag_fraction=None if not np.isfinite(work.flag_fraction) else work.flag_fraction,
            ra_deg=float(np.degrees(imgs.ra_rad)), dec_deg=float(np.degrees(imgs.dec_rad)),
            n_subbands=meta.get("n_subbands"), problems=json.dumps(problems),
            qa_passed=int(all(g.passed for g in work.gates.values())) if work.gates else None)
        self.ingest.complete(gid)
        self.qa.record_completed(work)
        if self._lag_window:  # the event loop's timer lag while this group was worked on
            self.ingest.record_metric(gid, "loop_lag_max", max(self._lag_window), attempt=work.attempt)
            self.ingest.record_metric(gid, "loop_lag_p99", float(np.percentile(self._lag_window, 99)),
                                      attempt=work.attempt)
            self._lag_window = []
        self.ingest.record_metric(gid, "gc_max", self._gc_window_max, attempt=work.attempt)
        self._gc_window_max = 0.0
        self.in_hand.pop(gid, None)
        stats = {"noise_jy": imgs.noise_jy, "peak_jy": imgs.peak_jy, "dynamic_range": imgs.dynamic_range,
                 "beam_arcsec": [float(np.degrees(b) * 3600) for b in imgs.beam_rad[:2]],
                 "clean_iterations": imgs.clean_iterations}
        gates = {stage: gate.to_dict() for stage, gate in work.gates.items()}
        qa_passed = all(g.passed for g in work.gates.values())
        self.outcomes[gid] = {"group_id": gid, "status": "completed", "stage": "done", "error": "",
                              "files": [str(p) for p in work.group.files.values()], "problems": problems,
                              "calibrator": work.calibrator, "cal_applied": work.cal_applied,
                              "products": work.products, "timings_s": dict(work.timings_s), "image_stats": stats,
                              "qa_passed": qa_passed, "gates": gates}
        self.bus.publish(GroupState(gid, "completed", "done"))
        self.bus.publish(QAResult(gid, {**stats, "gates": gates}, qa_passed))
        log.info("group %s: completed (%s) in %.1f s", gid, ", ".join(f"{k} {v:.1f}" for k, v in
                                                                      work.timings_s.items()),
                 sum(work.timings_s.values()))

    def _record_failed(self, work: GroupWork, stage: str, exc: Exception, seconds: float) -> None:
        """A stage raised ``exc`` here (called from its except clause: the traceback is logged)."""
        permanent = isinstance(exc, ReadError)
        if not permanent:
            log.exception("group %s failed in stage %s", work.group_id, stage)
        self._record_failure(work, stage, f"{type(exc).__name__}: {exc}", permanent=permanent, seconds=seconds)

    def _record_failure(self, work: GroupWork, stage: str, error: str, *, permanent: bool, seconds: float) -> None:
        """The group failed in ``stage``: retried later (unless ``permanent``: bad input) or failed."""
        gid = work.group_id
        if permanent:
            log.error("group %s failed in stage %s: %s", gid, stage, error)
        state = self.ingest.fail(gid, error, retry=not permanent, max_retries=self.sc.max_retries,
                                 backoff_s=self.sc.retry_backoff_s)
        self.ingest.record_metric(gid, f"{stage}_failed", seconds, attempt=work.attempt)
        self.products.upsert_group(group_id=gid, status=state, stage=stage, error=error)
        work.chunk = None
        self._release_slot(work)
        self.in_hand.pop(gid, None)
        self.bus.publish(StageTiming(gid, stage, "failed", round(seconds, 3)))
        self.bus.publish(GroupState(gid, state, stage, error))
        if state == "failed":
            self.outcomes[gid] = {"group_id": gid, "status": "failed", "stage": stage, "error": error,
                                  "files": [str(p) for p in work.group.files.values()],
                                  "timings_s": dict(work.timings_s)}
            self.alerts.raise_alert("warning", "group_failed", f"group {gid} failed in {stage}: {error}")
        else:
            log.warning("group %s: retry %d of %d in %.0f s", gid, self.ingest.row(gid)["retry_count"],
                        self.sc.max_retries, self.sc.retry_backoff_s)
        self._wake.set()

    def _release_slot(self, work: GroupWork) -> None:
        if work.group_id in self._slot_holders:
            self._slot_holders.discard(work.group_id)
            self.mem_slots.release()

    def _put_back(self, work: GroupWork) -> None:
        """An unfinished group goes back to pending at its checkpoint (shutdown, task restart)."""
        gid = work.group_id
        work.chunk = None
        self._release_slot(work)
        if self.in_hand.pop(gid, None) is not None and self.ingest is not None:
            self.ingest.release(gid)
            self.products.upsert_group(group_id=gid, status="pending", stage=work.checkpoint or "")
            self.bus.publish(GroupState(gid, "pending", work.checkpoint))
            log.info("group %s: back to pending at checkpoint %r", gid, work.checkpoint or "none")

    async def _housekeeping_task(self) -> None:
        while not self.stopping.is_set():
            for gid in self.ingest.requeue_stuck(older_than_s=self.sc.stuck_timeout_s, exclude=set(self.in_hand)):
                log.warning("group %s was stuck in progress: back to pending", gid)
                self.alerts.raise_alert("warning", "stuck_group", f"group {gid} stuck in_progress: requeued")
                self._wake.set()
            # file-system calls go to a worker thread: on a busy disk even statvfs can block for
            # a third of a second, which the event loop (and the web page) must not feel
            self._set_disk_state(await self.workers["misc"].run(shutil.disk_usage, self.root))
            if self.cluster is not None and self.cluster.client is not None:
                with contextlib.suppress(Exception):  # the scheduler's view, for the page and health.json
                    await self.cluster.refresh()
            pending = self.ingest.db.execute("SELECT COUNT(*) FROM ingest_queue WHERE state = 'pending'").fetchone()[0]
            if pending > self.cfg.alerts.queue_depth_warning:
                self.alerts.raise_alert("warning", "queue_depth",
                                        f"{pending} groups pending (> {self.cfg.alerts.queue_depth_warning}): "
                                        "the pipeline is falling behind", key="queue_depth")
            await self.workers["misc"].run(write_json, self.state_dir / "health.json", self.health_doc())
            await self._sleep(min(self.sc.housekeeping_interval_s, 2.0))

    def _set_disk_state(self, usage) -> None:
        """From ``shutil.disk_usage`` of the root: ok, warning or critical, alerting on changes."""
        free = usage.free / usage.total
        state = ("critical" if free < self.sc.disk_critical_fraction else
                 "warning" if free < self.sc.disk_warning_fraction else "ok")
        if state != self.disk_state:
            text = f"{self.root}: {free:.1%} of the disk free ({usage.free / 2**30:.1f} GiB)"
            if state == "ok":
                log.info("disk space ok again: %s", text)
            else:
                log.warning("disk space %s: %s%s", state, text, "; no new group starts" if state == "critical" else "")
                self.alerts.raise_alert(state, "disk_space", text, key=state)
            self.disk_state = state

    async def _lag_task(self) -> None:
        """The event loop's timer lag every 50 ms; with ``stall_trace_ms`` set, a C watchdog
        (faulthandler) writes every thread's traceback when the loop stalls that long."""
        loop = asyncio.get_running_loop()
        period = 0.05
        trace = self.sc.stall_trace_ms / 1e3
        fh = open(self.state_dir / "stalls.log", "a") if trace > 0 else None
        try:
            while True:
                if fh is not None:
                    faulthandler.dump_traceback_later(period + trace, file=fh)
                t0 = loop.time()
                await asyncio.sleep(period)
                lag = loop.time() - t0 - period
                self.lag_s.append(lag)
                self._lag_window.append(lag)
        finally:
            if fh is not None:
                faulthandler.cancel_dump_traceback_later()
                fh.close()

    async def _drain_task(self) -> None:
        """Drain mode: stop when the input is done and no group is waiting or in hand."""
        while not self.stopping.is_set():
            await self._sleep(0.2)
            if self.input_done.is_set():
                self._close_timed_out(input_exhausted=True)
                if not self.ingest.busy() and not self.in_hand:
                    log.info("queue empty: stopping")
                    self.stopping.set()

    # ---- supervision --------------------------------------------------------------------------
    def _set_health(self, task: str, state: str, detail: str = "") -> None:
        if self.health.get(task) != state:
            self.health[task] = state
            self.bus.publish(Health(task, state, detail))

    async def _supervise(self, name: str, factory: Callable[[], Awaitable]) -> None:
        restarts: deque[float] = deque()
        delay = self.sc.restart_backoff_s
        while True:
            self._set_health(name, "ok")
            try:
                await factory()
                self._set_health(name, "stopped")
                return
            except asyncio.CancelledError:
                self._set_health(name, "stopped")
                raise
            except Exception as exc:  # noqa: BLE001 - logged, published, restarted
                log.exception("task %s crashed", name)
                work = self._current.pop(name, None)
                if work is not None:
                    self._put_back(work)
                now = time.time()
                restarts.append(now)
                while restarts and restarts[0] < now - 600:
                    restarts.popleft()
                if len(restarts) > self.sc.max_task_restarts:
                    self._set_health(name, "failed", f"{type(exc).__name__}: {exc}")
                    self.alerts.raise_alert("critical", "task_failed",
                                            f"task {name} crashed {len(restarts)} times in 10 min: {exc}")
                    if name in ESSENTIAL or name == "cluster":
                        log.critical("essential task %s failed: stopping the service", name)
                        self.exit_code = 1
                        self.stopping.set()
                    return
                self._set_health(name, "degraded", f"{type(exc).__name__}: {exc}")
                self.alerts.raise_alert("warning", "task_restarted", f"task {name} crashed ({exc}); restart in "
                                        f"{delay:.1f} s")
                await self._sleep(delay)
                if self.stopping.is_set():
                    return
                delay = min(2 * delay, 60.0)

    def health_doc(self) -> dict:
        """What ``state/health.json`` holds, and `contimg status` shows, about the running service."""
        rss = psutil.Process().memory_info().rss
        lags = sorted(self.lag_s)
        doc = {
            "pid": os.getpid(), "started_at": self.started_at, "updated_at": time.time(), "mode": self.mode,
            "stopping": self.stopping.is_set(), "health": self.health, "backend": "cpu",
            "queues": {"claim": self.q_claim.qsize(), "read": self.q_read.qsize(), "write": self.q_write.qsize()},
            "in_hand": {gid: self.ingest.row(gid)["processing_stage"] if self.ingest else "" for gid in self.in_hand},
            "loop_lag_ms": {"p99": 1e3 * lags[int(0.99 * (len(lags) - 1))] if lags else 0.0,
                            "max": 1e3 * lags[-1] if lags else 0.0},
            "rss_bytes": rss, "disk": self.disk_state, "gc_max_ms": round(1e3 * self.gc_max_s, 1),
            "watcher": self._watcher.backend if self._watcher else None,
            "device": "cpu", "web_port": self.web_port,
            "cluster": self.cluster.status() if self.cluster is not None and self.cluster.client is not None else None,
        }
        return doc

    # ---- the whole ----------------------------------------------------------------------------
    def request_stop(self, why: str = "") -> None:
        if not self.stopping.is_set():
            log.info("stopping%s: no new work; finishing or checkpointing the group in hand",
                     f" ({why})" if why else "")
            self.stopping.set()

    async def run(self, *extra: Callable[[], Awaitable]) -> int:
        """Run until stopped (serve) or drained; returns the exit code. ``extra`` coroutine
        factories (a replay feeder) run beside the tasks, supervised too."""
        loop = asyncio.get_running_loop()
        self.bus.bind(loop)
        prefetch = self.sc.prefetch
        self.q_claim: asyncio.Queue = asyncio.Queue(1)
        self.q_read: asyncio.Queue = asyncio.Queue(max(prefetch, 1))
        self.q_write: asyncio.Queue = asyncio.Queue(1)
        self.mem_slots = asyncio.Semaphore(prefetch + 1)
        if self.cluster is not None:  # the groups in flight on the cluster: workers × max(prefetch, 1)
            try:
                await self.cluster.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await self.cluster.close()
                self.close()
                raise
            self.mem_slots = asyncio.Semaphore(self.cluster.capacity())
        # flagging, calibration and imaging one group at a time in the device thread; reading and
        # writing beside it; header look-ups (calibrator priority) and the replay feeder apart
        self.workers = {name: Worker(f"contimg-{name}", nice=self.sc.worker_nice)
                        for name in ("device", "read", "write", "misc")}
        if self.ingest is None:
            self.open()
        if self.install_signal_handlers:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop, signal.Signals(sig).name)
        lag = asyncio.create_task(self._lag_task(), name="loop-lag")
        tasks = {"scheduler": self._scheduler_task, "reader": self._reader_task,
                 "processor": self._processor_task, "writer": self._writer_task,
                 "housekeeping": self._housekeeping_task}
        if self.cluster is not None:
            for name in ("reader", "processor", "writer"):
                del tasks[name]
            tasks["cluster"] = self._cluster_task
        if self.watch_dir is not None:
            tasks["watcher"] = self._watcher_task
        if self.web_enabled:
            tasks["web"] = self._web_task
        if self.mode == "drain":
            tasks["drain"] = self._drain_task
        for i, factory in enumerate(extra):
            tasks[f"extra{i}"] = factory
        self._tasks = [asyncio.create_task(self._supervise(name, f), name=name) for name, f in tasks.items()]
        self._wake.set()
        try:
            await self.stopping.wait()
            _, pending = await asyncio.wait(self._tasks, timeout=self.sc.shutdown_grace_s)
            if pending:
                log.warning("shutdown grace (%.0f s) over with %s still busy: leaving groups at their checkpoints",
                            self.sc.shutdown_grace_s, ", ".join(t.get_name() for t in pending))
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        finally:
            lag.cancel()
            for gid in list(self.in_hand):
                self._put_back(self.in_hand[gid])
            if self.install_signal_handlers:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            if self.cluster is not None and self.cluster.client is not None:
                with contextlib.suppress(Exception):
                    await self.cluster.refresh()
            if self.ingest is not None:
                write_json(self.state_dir / "health.json", self.health_doc())
            for worker in self.workers.values():
                worker.close()
            if self.cluster is not None:
                with contextlib.suppress(Exception):
                    await self.cluster.close()
            self.close()
        return self.exit_code
