"""Calibration policy for a group: solve on a transiting calibrator (`contimg.calibrate.oncalibrator`),
judge the solution (`contimg.qa.gates.solution_quality`, `time_gain_quality`), store it and
leave its registry rows for the shell; without a calibrator, or when the solve is rejected, the
registered solutions for the group's mid-time (`contimg.calibrate.registry.solution_for`).
Tables written before the registry existed are adopted at start-up (`adopt_unregistered`)."""

from __future__ import annotations

import logging
from pathlib import Path
import numpy as np

from contimg.calibrate import GainSolution, TimeGains
from contimg.calibrate.oncalibrator import solve_on_calibrator
from contimg.calibrate.registry import registration_row, solution_for, validity_hours
from contimg.calibrate.storage import load_solution, load_time_gains, save_solution, save_time_gains
from contimg.calibrate.subtract import bright_sources_in_beam
from contimg.config import Config
from contimg.qa.gates import solution_quality, time_gain_quality
from contimg.sky.calibrators import find_transiting_calibrator
from contimg.sky.catalogue import sources_near
from contimg.sky.geometry import hadec_to_icrs
from contimg.sky.skymodel import PointSources
from contimg.pipeline.work import GroupWork
from contimg.state.calregistry import CalRegistry

log = logging.getLogger(__name__)

__all__ = ["registered_solution", "solve_or_look_up", "adopt_unregistered"]


def registered_solution(work: GroupWork) -> GainSolution | None:
    """The registered solution(s) for the group's mid-time, interpolated where two bracket it
    (`contimg.calibrate.registry.solution_for`); never the group's own set."""
    chunk = work.chunk
    rows = [r for r in work.cal_candidates if r["set_name"] != work.group_id]
    return solution_for(rows=rows, mid_jd=float(np.mean(chunk.time_jd)), freq_hz=chunk.freq_hz, load=load_solution,
                        load_gains=load_time_gains)


def solve_or_look_up(work: GroupWork, cfg: Config) -> tuple[GainSolution | None, TimeGains | None]:
    """Solve on a transiting calibrator — the bandpass, then (``calibrate.gain_calmode``) the
    time gains per ``gain_interval_s`` — else the registered solution for the group's mid-time.

    The bandpass is written to ``<root>/cal/<group_id>.zarr``, the time gains to
    ``<root>/cal/gains/<group_id>.zarr``, and their registry rows left in
    ``work.cal_registrations``: ``active`` if they pass `solution_quality` /
    `time_gain_quality`, else ``rejected``. A rejected bandpass is never applied, not even
    here: the group gets the registered solution, as without a calibrator; rejected time gains
    leave the bandpass alone applied."""
    chunk, cc = work.chunk, cfg.calibrate
    mid = float(np.mean(chunk.time_jd))
    cal = find_transiting_calibrator(time_jd=chunk.time_jd, pointing_dec_rad=chunk.pointing_dec_rad,
                                     min_flux_jy=cc.min_calibrator_flux_jy, max_offset_deg=cc.max_calibrator_offset_deg)
    if cal is None:
        return registered_solution(work), None
    others = [c for c in bright_sources_in_beam(time_jd=chunk.time_jd, pointing_dec_rad=chunk.pointing_dec_rad,
                                                min_flux_jy=cc.subtract_min_flux_jy, radius_deg=cc.subtract_radius_deg)
              if c.name != cal.name]
    field_sources = None
    if cc.model_catalogue and work.catalogue is not None:
        ra_c, dec_c = hadec_to_icrs(ha_rad=0.0, dec_rad=chunk.pointing_dec_rad, time_jd=mid)
        field_sources = sources_near(work.catalogue, ra_rad=ra_c, dec_rad=dec_c, radius_deg=cc.model_radius_deg,
                                     min_flux_jy=cc.model_min_flux_jy,
                                     exclude=PointSources.from_calibrators([cal, *others]))
    solved = solve_on_calibrator(chunk=chunk, calibrator=cal, others=others, field_sources=field_sources, cc=cc,
                                 group_id=work.group_id)
    sol, tg, params = solved.bandpass, solved.time_gains, solved.params
    work.cal_dir.mkdir(parents=True, exist_ok=True)
    path = save_solution(work.cal_dir / f"{work.group_id}.zarr", sol)
    metrics, reasons = solution_quality(gains=sol.gains, flags=sol.flags, snr=sol.snr, freq_hz=chunk.freq_hz,
                                        cfg=cfg.qa)
    validity = dict(bandpass_hours=cc.bandpass_validity_hours, gain_hours=cc.gain_validity_hours)
    work.cal_registrations = [registration_row(
        sol=sol, path=path, cal_type="bandpass", validity_h=validity_hours(cal_type="bandpass", **validity),
        passed=not reasons, params=params, quality={"passed": not reasons, "metrics": metrics, "reasons": reasons})]
    if reasons:
        work.cal_rejected = reasons
        log.warning("group %s: the solution on %s is rejected (%s): using the registered solutions instead",
                    work.group_id, cal.name, "; ".join(reasons))
        return registered_solution(work), None
    log.info("group %s: solved the bandpass on %s (refant %s, %d iterations, median SNR %.0f)",
             work.group_id, cal.name, sol.refant, sol.iterations, np.median(sol.snr))
    if tg is None:
        return sol, None
    tmetrics, treasons = time_gain_quality(gains=tg.gains, flags=tg.flags, snr=tg.snr, cfg=cfg.qa)
    if tg.refant != sol.refant:
        treasons.append(f"reference antenna {tg.refant} differs from the bandpass's {sol.refant}")
    tpath = save_time_gains(work.cal_dir / "gains" / f"{work.group_id}.zarr", tg)
    work.cal_registrations.append(registration_row(
        sol=tg, path=tpath, cal_type="gains", validity_h=validity_hours(cal_type="gains", **validity),
        passed=not treasons, params={**params, "calmode": cc.gain_calmode, "interval_s": cc.gain_interval_s,
                                     "iterations": tg.iterations},
        quality={"passed": not treasons, "metrics": tmetrics, "reasons": treasons}))
    if treasons:
        log.warning("group %s: the time gains on %s are rejected (%s): the bandpass alone is applied",
                    work.group_id, cal.name, "; ".join(treasons))
        return sol, None
    log.info("group %s: solved %s time gains in %d intervals (median SNR %.0f)", work.group_id, cc.gain_calmode,
             tg.time_jd.size, np.median(tg.snr))
    return sol, tg


def adopt_unregistered(registry: CalRegistry, cal_dir: Path, *, bandpass_validity_hours: float, qa_cfg) -> list[str]:
    """Register the tables in ``cal_dir`` (``<root>/cal``) that have no row — written before
    the registry existed — as ``bandpass`` tables, active or rejected by their quality
    under today's ``qa_cfg`` thresholds. Returns their set names. Run at service start-up;
    once a root's tables are registered this only lists the folder."""
    known = registry.set_names()
    adopted = []
    for path in sorted(Path(cal_dir).glob("*.zarr")):
        if path.name.endswith(".tmp") or path.stem in known:
            continue
        try:
            sol = load_solution(path)
        except Exception as exc:  # noqa: BLE001 - an unreadable table must not stop the service
            log.warning("%s: not a readable solution table, not registered: %s", path, exc)
            continue
        if sol.group_id in known:
            continue
        metrics, reasons = solution_quality(gains=sol.gains, flags=sol.flags, snr=sol.snr, freq_hz=sol.freq_hz,
                                            cfg=qa_cfg)
        registry.register(registration_row(
            sol=sol, path=path, cal_type="bandpass", validity_h=bandpass_validity_hours, passed=not reasons,
            params={"refant": sol.refant, "iterations": sol.iterations, "adopted": True},
            quality={"passed": not reasons, "metrics": metrics, "reasons": reasons}))
        adopted.append(sol.group_id)
    return adopted
