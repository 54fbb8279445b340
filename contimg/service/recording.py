"""What the service records of a group: its calibration rows handed and registered, its completion or
failure (ingest and products databases, outcomes, bus events, alerts), its memory slot given back, a group
put back to pending at its checkpoint.

A part of `contimg.service.core.Service` (a mixin: it works on the service's own attributes)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import datetime
from functools import partial

import numpy as np

from contimg.bus import Alert, GroupState, QAResult, StageTiming
from contimg.io.reader import ReadError
from contimg.pipeline.stages import (GroupWork)

log = logging.getLogger("contimg.service.core")


class Recording:
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

    def _draw_plots_later(self, work: GroupWork) -> None:
        """The diagnostic PNGs a stage left to draw (`GroupWork.add_plot`) are drawn in the ``misc``
        worker, off the processor's thread, and recorded when drawn; drain mode waits for them."""
        if not work.plot_draws:
            return
        draws, work.plot_draws = work.plot_draws, []
        task = asyncio.create_task(self._draw_plots(work.group_id, draws), name=f"plots {work.group_id}")
        self._plot_tasks.add(task)
        task.add_done_callback(self._plot_tasks.discard)

    async def _draw_plots(self, gid: str, draws: list) -> None:
        artifacts = []
        for kind, draw in draws:
            try:
                path = await self.workers["misc"].run(draw)
            except Exception:  # noqa: BLE001 - a diagnostic plot never fails its group
                log.exception("group %s: the %s plot failed", gid, kind)
                continue
            if path is not None:
                artifacts.append((kind, str(path)))
        if artifacts:
            self.products.record_qa(group_id=gid, gates=[], artifacts=artifacts)

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
            calibrator=work.calibrator,
            image_name=next((r["path"] for r in work.image_rows if r["type"] == "restored"), ""),
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

    async def _after_group(self, work: GroupWork) -> None:
        """After a DSA-110 group completed: the pipeline's own catalogue (forced photometry,
        transient and variability candidates) and the running strip mosaic
        (`contimg.pipeline.mosaic.after_group`, in the write thread); its alerts sent. A failure
        here is logged and the group's products stand. A file group (any array, tracked fields)
        has no place in the drift-scan strip and is left out."""
        from contimg.pipeline.mosaic import after_group

        gid = work.group_id
        if work.kind == "file" or not (self.cfg.mosaic.enabled or self.cfg.catalogue.enabled):
            return
        self._post_group.add(gid)  # drain mode waits for it
        t0 = time.perf_counter()
        try:
            out = await self.workers["write"].run(partial(after_group, cfg=self.cfg), self.root, gid)
        except Exception:  # noqa: BLE001 - the group is done; its catalogue/mosaic update is not vital
            log.exception("group %s: catalogue and mosaic update failed (the group's products stand)", gid)
            return
        finally:
            self._post_group.discard(gid)
        dt = time.perf_counter() - t0
        self.ingest.record_metric(gid, "catalogue_mosaic", dt, attempt=work.attempt)
        for a in out["alerts"]:
            self.alerts.raise_alert(a["severity"], a["category"], a["message"])
        log.info("group %s: catalogue and mosaic updated in %.1f s (%s)", gid, dt,
                 ", ".join(f"{r['name']} {r['status']}" for r in out["mosaics"]) or "no mosaic")

    def _record_failed(self, work: GroupWork, stage: str, exc: Exception, seconds: float) -> None:
        """A stage raised ``exc`` here (called from its except clause: the traceback is logged)."""
        permanent = isinstance(exc, ReadError)
        if not permanent:
            log.exception("group %s failed in stage %s", work.group_id, stage)
        self._record_failure(work, stage, f"{type(exc).__name__}: {exc}", permanent=permanent, seconds=seconds)

    def _record_failure(self, work: GroupWork, stage: str, error: str, *, permanent: bool, seconds: float) -> None:
        """The group failed in ``stage``: retried later (unless ``permanent``: bad input) or failed."""
        gid = work.group_id
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
            # the alert logs the error once; only when it is rate-limited does the log say it here
            sent = self.alerts.raise_alert("warning", "group_failed", f"group {gid} failed in {stage}: {error}")
            if permanent and not sent:
                log.error("group %s failed in stage %s: %s", gid, stage, error)
        else:
            log.warning("group %s: retry %d of %d in %.0f s", gid, self.ingest.row(gid)["retry_count"],
                        self.sc.max_retries, self.sc.retry_backoff_s)
        self._wake.set()

    def _release_slot(self, work: GroupWork) -> None:
        self._release_vis(work.group_id)
        if work.group_id in self._slot_holders:
            self._slot_holders.discard(work.group_id)
            self.mem_slots.release()

    def _release_vis(self, gid: str) -> None:
        """The group's visibilities are gone (imaging formed its Stokes I, or it ended): the next
        group may be read. Once per read; in the event loop."""
        if gid in self._vis_holders:
            self._vis_holders.discard(gid)
            self.vis_slots.release()

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
