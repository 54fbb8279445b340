"""The group's way through the service: the scheduler claims a group when a memory slot is free (calibrator
groups first), the reader reads it, the processor flags, calibrates and images it in the device thread,
the writer writes it and runs the after-group update; bounded queues between them; the waterfall rows as a
group is read; drain mode. A group holds its memory slot (``service.prefetch + 1`` of them) from its
claim until its products are written and its after-group update is done, so that at most
``prefetch + 1`` groups' arrays are alive at once (the writer's images and update included); and
a visibility slot (``max(prefetch, 1)``) from its read until imaging has formed its Stokes I
visibilities and dropped the rest, so that the next group is read beside imaging, not beside
flagging and calibration, which hold a group's full visibilities and their largest temporaries.

A part of `contimg.service.core.Service` (a mixin: it works on the service's own attributes)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time

import numpy as np

from contimg.bus import GroupState, StageTiming
from contimg.pipeline.stages import (DEFERRED_INTERMEDIATES, GroupWork, group_has_calibrator, run_stage,
                                     usable_checkpoint)
from contimg.qa.waterfall import waterfall_events
from contimg.service.watch import FolderWatcher

log = logging.getLogger("contimg.service.core")

PROCESSOR_STAGES = ("flag", "calibrate", "image")


class TaskFlow:
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

    async def _take_slot(self, slots: asyncio.Semaphore | None = None) -> bool:
        """Wait for a free memory slot (of ``slots``, default ``mem_slots``); False if the
        service stops first."""
        slots = slots or self.mem_slots
        taker = asyncio.ensure_future(slots.acquire())
        stopper = asyncio.ensure_future(self.stopping.wait())
        await asyncio.wait({taker, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not taker.done():
            taker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await taker
            return False
        if self.stopping.is_set():
            slots.release()
            return False
        return True

    async def _scheduler_task(self) -> None:
        """Claim the next group only when a memory slot is free, so that a claimed group is read
        at once and the choice (calibrator groups first) is made as late as possible."""
        while not self.stopping.is_set():
            self._close_timed_out()
            if self.disk_state == "critical":
                if self.mode == "drain" and not self.in_hand and not self._post_group and not self._plot_tasks:
                    self._stop_drain_for_disk()
                    break
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
            group = self.ingest.group(gid)
            # a DSA-110 group's image.zarr is stored by the writer, off the processor's thread
            work = GroupWork(group=group, root=self.root,
                             defer_intermediates=DEFERRED_INTERMEDIATES if group.kind != "file" else frozenset(),
                             defer_plots=True)
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
        for gid in self.ingest.pending_without_priority():
            group = self.ingest.group(gid)
            has_cal = await self.workers["misc"].run(group_has_calibrator, group, self.cfg)
            self.ingest.set_priority(gid, int(has_cal))

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

    # Each task's loop body is its own coroutine: a loop variable (``while (work := await ...)``)
    # would hold the last group, images and all, while the task waits for the next one — through
    # the whole of the next group's processing, in the writer's case (0.45 GiB at real size).
    async def _reader_task(self) -> None:
        while await self._read_next():
            pass

    async def _read_next(self) -> bool:
        """Read the next claimed group and queue it for the processor; False once stopping."""
        if (work := await self._get(self.q_claim)) is None:
            return False
        if not await self._take_slot(self.vis_slots):
            self._put_back(work)
            return True
        self._vis_holders.add(work.group_id)
        # (the group's id, not the work itself: a work holding a callable that holds it is a
        # reference cycle, and its images would wait for the cyclic garbage collector)
        work.on_chunk_freed = functools.partial(self._chunk_freed, loop=asyncio.get_running_loop(),
                                                gid=work.group_id)
        self._current["reader"] = work
        ok = await self._run_stage(work, "read", self.workers["read"].run)
        self._current["reader"] = None
        if not ok:
            return True
        if work.chunk is None:  # resumed past imaging: nothing read into memory
            self._release_vis(work.group_id)
        if work.chunk is not None:  # raw amplitudes, before the processor changes the data
            await self._publish_waterfall(work)
        if self.stopping.is_set():
            self._put_back(work)
            return True
        await self._put(self.q_read, work)
        return True

    def _chunk_freed(self, *, loop: asyncio.AbstractEventLoop, gid: str) -> None:
        """`GroupWork.on_chunk_freed` (called in the device thread): the visibility slot is given
        back in the event loop (not at all if it has closed: the service is gone)."""
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._release_vis, gid)

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

    async def _processor_task(self) -> None:
        while await self._process_next():
            pass

    async def _process_next(self) -> bool:
        """Flag, calibrate and image the next read group and queue it for the writer; False
        once stopping."""
        if (work := await self._get(self.q_read)) is None:
            return False
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
        self._release_vis(work.group_id)  # (imaging gave it back already)
        if not ok:
            self._release_slot(work)  # (a failed or put-back group has released it already)
        self._current["processor"] = None
        if ok:  # the slot goes with it: its images and the after-group update still hold memory
            await self._put(self.q_write, work)
        return True

    async def _writer_task(self) -> None:
        while await self._write_next():
            pass

    async def _write_next(self) -> bool:
        """Write the next imaged group and run its after-group update; False once stopping."""
        if (work := await self._get(self.q_write, drain=True)) is None:
            return False
        self._current["writer"] = work
        if await self._run_stage(work, "write", self.workers["write"].run):
            self._record_completed(work)
            await self._after_group(work)
        self._release_slot(work)  # only now may the next group be read into memory
        self._current["writer"] = None
        return True

    async def _run_stage(self, work: GroupWork, stage: str, runner) -> bool:
        gid = work.group_id
        self.ingest.set_stage(gid, stage)
        self.products.upsert_group(group_id=gid, stage=stage)
        self.bus.publish(StageTiming(gid, stage, "started"))
        replayed = work.done("image" if stage == "read" else stage) and stage != "write"
        if stage == "calibrate":
            self._hand_calibration(work)
        t0, stored = time.perf_counter(), work.checkpoint
        try:
            await runner(run_stage, stage, work, self.cfg)
        except Exception as exc:  # noqa: BLE001 - a group's failure is recorded, never fatal
            if work.checkpoint != stored:  # a write stage that stored some deferred intermediates first
                self.ingest.set_checkpoint(gid, work.checkpoint)
            self._record_failed(work, stage, exc, time.perf_counter() - t0)
            self._draw_plots_later(work)  # (what the stage plotted before it failed helps to see why)
            return False
        dt = time.perf_counter() - t0
        work.timings_s[stage] = round(dt, 3)
        self._draw_plots_later(work)
        self._register_calibration(work)
        self.qa.record_stage(work)
        self.ingest.record_metric(gid, stage, dt, attempt=work.attempt, replayed=replayed)
        if work.checkpoint != stored:  # the stage stored its intermediate, or (deferred) the write stage did
            self.ingest.set_checkpoint(gid, work.checkpoint)
        self.bus.publish(StageTiming(gid, stage, "finished", round(dt, 3)))
        return True

    def _stop_drain_for_disk(self) -> None:
        """Drain mode with the disk below ``service.disk_critical_fraction`` free and nothing in
        hand: stop (exit code 1) instead of waiting for space nobody frees; the groups not
        started stay pending, each reported with this reason, for a later run."""
        left = self.ingest.counts()["pending"]
        self.stop_reason = (f"not started: disk critical ({self.disk_text}, below "
                            f"{self.sc.disk_critical_fraction:.0%} free): free space and run again")
        log.error("stopping with %d group(s) not started: disk critical (%s, below %.0f%% free); free space "
                  "and run again", left, self.disk_text, 100 * self.sc.disk_critical_fraction)
        self.exit_code = 1
        self.stopping.set()

    async def _drain_task(self) -> None:
        """Drain mode: stop when the input is done and no group is waiting or in hand."""
        while not self.stopping.is_set():
            await self._sleep(0.2)
            if self.input_done.is_set():
                self._close_timed_out(input_exhausted=True)
                if not self.ingest.busy() and not self.in_hand and not self._post_group and not self._plot_tasks:
                    log.info("queue empty: stopping")
                    self.stopping.set()
