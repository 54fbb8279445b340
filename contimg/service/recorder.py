"""The service's side of QA: what the stages left in a `GroupWork` (gates, plots, detections,
photometry) goes into ``products.sqlite3``, failed gates and new variability candidates become
alerts. Runs on the event loop's thread (SQLite writes and small queries only)."""

from __future__ import annotations

import logging

import numpy as np

from contimg.config import Config
from contimg.state.products import ProductsDB
from contimg.qa.alerts import AlertManager
from contimg.qa.photometry import variability

log = logging.getLogger(__name__)

__all__ = ["QARecorder"]


class QARecorder:
    def __init__(self, *, products: ProductsDB, alerts: AlertManager, cfg: Config):
        self.products = products
        self.alerts = alerts
        self.cfg = cfg

    def record_stage(self, work) -> None:
        """Store the gates and plots a stage left (each gate once); one alert per failed gate."""
        gates = [g for stage, g in work.gates.items() if stage not in work.gates_recorded]
        if not gates and not work.artifacts:
            return
        self.products.record_qa(group_id=work.group_id, gates=gates, artifacts=work.artifacts)
        work.artifacts = []
        for gate in gates:
            work.gates_recorded.add(gate.stage)
            if gate.stage == "calibrate":
                self._staleness_alert(work.group_id, gate)
            if gate.passed:
                continue
            reasons = "; ".join(gate.reasons)
            log.warning("group %s: %s gate failed: %s", work.group_id, gate.stage, reasons)
            self.alerts.raise_alert("warning", f"qa_{gate.stage}",
                                    f"group {work.group_id}: {gate.stage} gate failed: {reasons}")

    def _staleness_alert(self, group_id: str, gate) -> None:
        """``stale_calibration``: a warning when the applied solution is stale, critical when it
        is critical or nothing was applied; none when fresh or aging."""
        level = gate.metrics.get("staleness")
        if level not in ("stale", "critical"):
            return
        if gate.metrics.get("applied"):
            what = f"the calibration applied is {gate.metrics.get('solution_age_hours', 0):.1f} h old"
        else:
            what = "no calibration applied"
        self.alerts.raise_alert("warning" if level == "stale" else "critical", "stale_calibration",
                                f"group {group_id}: {what} ({level})", key="stale")

    def record_completed(self, work) -> None:
        """Detections and forced photometry of a completed group; the variability statistics of
        every source it measured, with one alert when a source becomes a candidate."""
        if not self.cfg.qa.enabled:
            return
        imgs, pc = work.imgs, self.cfg.photometry
        self.products.record_sources(group_id=work.group_id, mid_mjd=float(imgs.time_mid_jd - 2400000.5),
                                     freq_hz=float(imgs.freq_hz), detections=work.detections,
                                     photometry=work.photometry)
        for row in work.photometry:
            curve = self.products.lightcurve(row["source"])
            stats = variability(flux_jy=np.array([r["flux_jy"] for r in curve]),
                                err_jy=np.array([r["err_jy"] for r in curve]))
            candidate = bool(stats["n"] >= pc.min_points and stats["eta"] > pc.eta_threshold
                             and stats["v"] > pc.v_threshold)
            was = bool((self.products.variable(row["source"]) or {}).get("candidate"))
            self.products.upsert_variable(source=row["source"], candidate=int(candidate),
                                          **{k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                                             for k, v in stats.items()})
            if candidate and not was:
                self.alerts.raise_alert("info", "variability",
                                        f"{row['source']} is a variability candidate: eta {stats['eta']:.1f}, "
                                        f"V {stats['v']:.2f} over {stats['n']} groups", key=row["source"])
