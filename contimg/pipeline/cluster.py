"""Reprocessing on a Dask distributed cluster: each group is one task that runs the same stage
code (`contimg.pipeline.stages`) on a worker, writing its intermediates and FITS files into the shared
root; the service that owns the SQLite databases submits the tasks, keeps their number bounded
and records what comes back, so the databases keep one writer.

A worker that dies mid-group loses nothing recorded: Dask reschedules the task on another worker
(up to ``cluster.allowed_failures`` times); the service records a group only when its task
returns, so each group completes exactly once. Files are written by renames, so a half-written
product is never referenced.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import traceback
from dataclasses import dataclass

from contimg.config import Config
from contimg.io.reader import ReadError
from contimg.pipeline.stages import STAGES, GroupWork, run_stage

log = logging.getLogger(__name__)

__all__ = ["ClusterError", "RemoteOutcome", "run_group", "ClusterBackend"]


class ClusterError(RuntimeError):
    """The cluster cannot run the groups (no scheduler, no worker, missing resources)."""


@dataclass
class RemoteOutcome:
    """What a worker sends back: the group's work without its visibilities and image arrays
    (the files are on the shared disk), and the stage it failed in, if it did."""

    work: GroupWork
    failed_stage: str = ""
    error: str = ""
    read_error: bool = False
    traceback: str = ""
    worker: str = ""
    pid: int = 0


_WORKER_READY = False


def prepare_worker(cfg: Config) -> None:
    """Once per process: the Earth orientation the service uses (offline; `cfg.astropy`)."""
    global _WORKER_READY
    if not _WORKER_READY:
        from contimg.offline import load_earth_orientation, use_iers_a_file

        if cfg.astropy.iers_a_file:  # the same Earth orientation as the service (a path on shared storage)
            use_iers_a_file(cfg.astropy.iers_a_file)
        load_earth_orientation()
        _WORKER_READY = True


def run_group(work: GroupWork, cfg: Config) -> RemoteOutcome:
    """Every stage of one group, on a Dask worker (or anywhere): the same functions the
    single-machine service runs, in order, resuming from ``work.checkpoint``."""
    prepare_worker(cfg)
    worker = ""
    try:
        from distributed import get_worker

        worker = get_worker().name
    except (ImportError, ValueError):
        pass
    out = RemoteOutcome(work, worker=str(worker), pid=os.getpid())
    # one thread runs every stage here: intermediates are stored and plots drawn at once (nothing
    # deferred travels back: a deferred one is a closure)
    work.defer_intermediates = frozenset()
    work.defer_plots = False
    for stage in STAGES:
        t0 = time.perf_counter()
        try:
            run_stage(stage, work, cfg)
        except Exception as exc:  # noqa: BLE001 - sent back and recorded by the service
            out.failed_stage, out.error = stage, f"{type(exc).__name__}: {exc}"
            out.read_error = isinstance(exc, ReadError)
            out.traceback = traceback.format_exc()
            break
        work.timings_s[stage] = round(time.perf_counter() - t0, 3)
    work.chunk = None
    if work.imgs is not None:  # the images are in image.zarr and the FITS files
        work.imgs = dataclasses.replace(work.imgs, images={})
    return out


class ClusterBackend:
    """A Dask client on the service's event loop: a local cluster of ``n_workers`` processes
    (one thread each) or the scheduler at ``address``."""

    def __init__(self, *, address: str | None = None, n_workers: int | None = None, cfg: Config):
        if not address and not n_workers:
            raise ValueError("a cluster needs a scheduler address or a number of local workers")
        self.address = address
        self.n_workers = n_workers
        self.cfg = cfg
        self.client = None
        self.cluster = None
        self.in_flight: dict[str, dict] = {}  # group → {"submitted": t, "key": ...}
        self._workers: dict[str, dict] = {}  # the scheduler's last word on its workers
        self.completed_times: list[float] = []
        self.max_in_flight = 0  # the most groups in flight at once (back-pressure, for checks)

    async def start(self) -> None:
        import dask
        from distributed import Client, LocalCluster

        cc = self.cfg.cluster
        dask.config.set({"distributed.scheduler.allowed-failures": cc.allowed_failures})
        if self.address:
            try:
                self.client = await Client(self.address, asynchronous=True, timeout=cc.connect_timeout_s)
            except OSError as exc:
                raise ClusterError(f"cannot reach the Dask scheduler at {self.address}: {exc}") from exc
        else:
            self.cluster = await LocalCluster(n_workers=self.n_workers, threads_per_worker=1, processes=True,
                                              asynchronous=True, dashboard_address=None,
                                              resources=dict(cc.worker_resources) or None)
            self.client = await Client(self.cluster, asynchronous=True)
        try:
            await self.client.wait_for_workers(1, timeout=cc.connect_timeout_s)
        except TimeoutError as exc:
            raise ClusterError(f"no Dask worker joined {self.client.scheduler.address} within "
                               f"{cc.connect_timeout_s:.0f} s (cluster.connect_timeout_s)") from exc
        await self.refresh()
        need = dict(cc.worker_resources)
        if need and not any(all(w["resources"].get(k, 0) >= v for k, v in need.items())
                            for w in self._workers.values()):
            raise ClusterError(f"cluster.worker_resources {need}: no worker offers them (start workers with "
                               f"--resources, e.g. dask worker ADDRESS --resources GPU=1); groups would wait forever")
        log.info("dask cluster at %s: %d workers", self.client.scheduler.address, len(self.workers()))

    async def refresh(self) -> None:
        """Ask the scheduler for its workers (an asynchronous client's cached view goes stale)."""
        info = await self.client.scheduler.identity()
        self._workers = {addr: {"name": str(w.get("name", addr)), "host": w.get("host", ""),
                                "nthreads": w.get("nthreads", 0), "memory_limit": w.get("memory_limit", 0),
                                "resources": w.get("resources", {})}
                         for addr, w in info.get("workers", {}).items()}

    def workers(self) -> dict[str, dict]:
        """The workers (name, host, threads, memory limit, resources) at the last `refresh`."""
        return self._workers

    def capacity(self) -> int:
        """Groups allowed in flight: workers × max(prefetch, 1)."""
        return max(1, len(self.workers())) * max(1, self.cfg.service.prefetch)

    async def run(self, work: GroupWork) -> RemoteOutcome:
        """Submit one group and wait for its outcome (retried by Dask if a worker dies)."""
        cc = self.cfg.cluster
        self.in_flight[work.group_id] = {"submitted": time.time()}
        self.max_in_flight = max(self.max_in_flight, len(self.in_flight))
        try:
            future = self.client.submit(run_group, work, self.cfg, pure=False, retries=0,
                                        key=f"group-{work.group_id}-{work.attempt}-{time.time_ns()}",
                                        resources=dict(cc.worker_resources) or None)
            self.in_flight[work.group_id]["key"] = future.key
            try:
                return await future
            except BaseException:
                future.cancel()
                raise
        finally:
            self.in_flight.pop(work.group_id, None)

    def status(self) -> dict:
        now = time.time()
        self.completed_times = [t for t in self.completed_times if now - t < 3600]
        return {"scheduler": self.client.scheduler.address if self.client is not None else self.address,
                "workers": list(self.workers().values()),
                "in_flight": {g: round(now - v["submitted"], 1) for g, v in self.in_flight.items()},
                "capacity": self.capacity(), "max_in_flight": self.max_in_flight,
                "completed_last_hour": len(self.completed_times)}

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
        if self.cluster is not None:
            await self.cluster.close()
