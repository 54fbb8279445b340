"""Supervision and health: every task under a supervisor (restart with back-off, essential tasks stop the
service), the health document (`state/health.json`, `contimg status`, the web page), housekeeping (stuck
groups, disk space, queue depth), the event loop's lag and garbage-collection pauses.

A part of `contimg.service.core.Service` (a mixin: it works on the service's own attributes)."""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import os
import shutil
import time
from collections import deque
from collections.abc import Awaitable, Callable

import psutil

from contimg.bus import Health
from contimg.service.runtime import write_json

log = logging.getLogger("contimg.service.core")

ESSENTIAL = ("scheduler", "reader", "processor", "writer")  # without one of these nothing moves


class Supervision:
    def _gc_timer(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started:
            took = time.perf_counter() - self._gc_started
            self.gc_max_s = max(self.gc_max_s, took)
            self._gc_window_max = max(self._gc_window_max, took)

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
            pending = self.ingest.counts()["pending"]
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
            self.disk_state, self.disk_text = state, text

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
            "stopping": self.stopping.is_set(), "health": self.health,
            "backend": ", ".join(f"{stage} {c['backend']}" for stage, c in self.backends.items()) or "cpu",
            "backends": self.backends,
            "queues": {"claim": self.q_claim.qsize(), "read": self.q_read.qsize(), "write": self.q_write.qsize()},
            "in_hand": {gid: self.ingest.row(gid)["processing_stage"] if self.ingest else "" for gid in self.in_hand},
            "loop_lag_ms": {"p99": 1e3 * lags[int(0.99 * (len(lags) - 1))] if lags else 0.0,
                            "max": 1e3 * lags[-1] if lags else 0.0},
            "rss_bytes": rss, "disk": self.disk_state, "gc_max_ms": round(1e3 * self.gc_max_s, 1),
            "watcher": self._watcher.backend if self._watcher else None,
            "device": "gpu" if any(c["backend"] == "gpu" for c in self.backends.values()) else "cpu",
            "web_port": self.web_port,
            "cluster": self.cluster.status() if self.cluster is not None and self.cluster.client is not None else None,
        }
        return doc
