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

The class is composed by responsibility: `TaskFlow` (scheduler, reader, processor, writer, queues;
`contimg.service.flow`), `Recording` (what is recorded of a group; `.recording`), `Supervision`
(supervisor, health, housekeeping, loop lag; `.health`), `WebServing` (the web view and what it
is handed; `.webserver`), `ClusterMode` (groups as Dask tasks; `.clustermode`); here are set-up,
start-up and shutdown.

The same class runs `contimg serve` (watching a folder, forever), `contimg replay` (watching,
fed by a replay task, until the input is done) and `contimg run` (files registered up front,
until the queue is empty).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import shutil
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from pathlib import Path

from contimg.bus import GroupState, StatusBus, Waterfall
from contimg.config import Config, ConfigError
from contimg.io.naming import scan_folder
from contimg.offline import load_earth_orientation
from contimg.pipeline.calibration import adopt_unregistered
from contimg.imaging.selfcheck import choose_backends
from contimg.pipeline.stages import GroupWork
from contimg.qa.alerts import AlertManager
from contimg.service.clustermode import ClusterMode
from contimg.service.flow import TaskFlow
from contimg.service.health import Supervision
from contimg.service.recorder import QARecorder
from contimg.service.recording import Recording
from contimg.service.runtime import Worker, fix_malloc_mmap_threshold, write_json
from contimg.service.watch import FolderWatcher
from contimg.service.webserver import WebServing
from contimg.sky.calibrators import vla_calibrators
from contimg.sky.catalogue import load_catalogue, resolve_catalogue
from contimg.state.calregistry import CalRegistry
from contimg.state.ingest import IngestDB
from contimg.state.lock import RootLock, ServiceLockError, service_running
from contimg.state.products import ProductsDB
from contimg.web.context import WebContext

log = logging.getLogger(__name__)

__all__ = ["Service", "ServiceLockError", "Worker", "service_running"]


class Service(TaskFlow, Recording, Supervision, WebServing, ClusterMode):
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
        self.disk_text = ""  # the root's free space when the state last changed, in words
        self.stop_reason = ""  # why a drain stopped before its groups were done (left pending)
        self.started_at = time.time()
        self._wake = asyncio.Event()
        self._current: dict[str, GroupWork | None] = {}
        self._slot_holders: set[str] = set()
        self._vis_holders: set[str] = set()
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
        self._post_group: set[str] = set()  # groups whose catalogue/mosaic update runs (drain waits)
        self._plot_tasks: set[asyncio.Task] = set()  # diagnostic PNGs being drawn (`_draw_plots_later`; drain waits)
        self.backends: dict[str, dict] = {}  # stage → its chosen backend and self-check (made at open)

    # ---- set-up -------------------------------------------------------------------------------
    def open(self) -> None:
        self._choose_backends()  # before anything is locked or opened: a refusal leaves nothing behind
        self._lock.acquire()
        if fix_malloc_mmap_threshold(self.sc.malloc_mmap_threshold_mib):
            log.info("malloc: blocks of %g MiB and more are mapped and given back when freed",
                     self.sc.malloc_mmap_threshold_mib)
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
        self._set_disk_state(shutil.disk_usage(self.root))  # known before the scheduler claims a group
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

    def _choose_backends(self) -> None:
        """Each stage's backend, once: the configured ``backend`` ("auto", "cpu", "gpu") after a
        self-check of the stage's device path against its CPU twin on a small simulated group
        (`contimg.imaging.selfcheck.choose_backends`; "auto" falls back to the CPU with the reason
        logged, "gpu" refuses to start). The stages then run on the chosen one: this process's
        configuration carries it. ``self.backends``: the choices, for health.json and the web."""
        cfg = self.cfg
        try:
            choices = choose_backends(flag=cfg.flag.backend, calibrate=cfg.calibrate.backend, image=cfg.image.backend)
        except RuntimeError as exc:  # "gpu" configured: no device, or its self-check disagreed
            raise ConfigError(f"{exc} (set it to auto or cpu)") from exc
        self.backends = {stage: c.as_dict() for stage, c in choices.items()}
        self.cfg = cfg.model_copy(update={
            stage: getattr(cfg, stage).model_copy(update={"backend": choices[stage].backend})
            for stage in ("flag", "calibrate", "image")})
        log.info("stage backends: %s", ", ".join(f"{s} {c.backend} ({c.reason})" for s, c in choices.items()))

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

    # ---- the whole ----------------------------------------------------------------------------
    def request_stop(self, why: str = "") -> None:
        if not self.stopping.is_set():
            log.info("stopping%s: no new work; finishing or checkpointing the group in hand",
                     f" ({why})" if why else "")
            self.stopping.set()

    async def run(self, *extra: Callable[[], Awaitable], **named: Callable[[], Awaitable]) -> int:
        """Run until stopped (serve) or drained; returns the exit code. ``extra`` coroutine
        factories run beside the tasks, supervised too, as tasks ``extra0``, ``extra1``...;
        ``named`` ones under their keyword (``replay_feeder=...``: what status and the page show)."""
        loop = asyncio.get_running_loop()
        self.bus.bind(loop)
        prefetch = self.sc.prefetch
        self.q_claim: asyncio.Queue = asyncio.Queue(1)
        self.q_read: asyncio.Queue = asyncio.Queue(max(prefetch, 1))
        self.q_write: asyncio.Queue = asyncio.Queue(1)
        self.mem_slots = asyncio.Semaphore(prefetch + 1)
        # at most max(prefetch, 1) groups' visibilities at once: the next group is read when the one
        # before it has formed its Stokes I visibilities for imaging and dropped the rest
        self.vis_slots = asyncio.Semaphore(max(prefetch, 1) if self.sc.read_beside_imaging else prefetch + 1)
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
        for name, factory in named.items():
            if name in tasks:
                raise ValueError(f"task name {name!r} is taken by the service's own task")
            tasks[name] = factory
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
            await asyncio.gather(*self._plot_tasks, return_exceptions=True)  # a plot or two: seconds at most
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
