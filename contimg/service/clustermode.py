"""Cluster mode: each claimed group runs as a Dask task on a worker (`contimg.pipeline.cluster`); the service
records what comes back, so the databases keep one writer.

A part of `contimg.service.core.Service` (a mixin: it works on the service's own attributes)."""

from __future__ import annotations

import asyncio
import logging
import time


from contimg.bus import StageTiming
from contimg.pipeline.stages import (GroupWork)

log = logging.getLogger("contimg.service.core")


class ClusterMode:
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
            await self._after_group(done)
        finally:
            self._remote.pop(gid, None)
            self._remote_done.set()
