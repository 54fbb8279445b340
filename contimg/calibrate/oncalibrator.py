"""One group's solve on a transiting calibrator: the sky model (the calibrator, the other bright
sources in the beam, optionally the catalogue's field sources), the bandpass per antenna,
channel and polarization (with an optional delay taken out before smoothing over channels),
then the time-dependent gains over the band with the bandpass divided out. Arrays in,
solutions out: storing, quality and registration are the pipeline's (`contimg.pipeline.calibration`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contimg.calibrate.model import calibrator_model
from contimg.calibrate.solution import GainSolution, TimeGains
from contimg.calibrate.solve import (fit_delays, remove_delays, smooth_over_channels, solution_intervals, solve_gains,
                                     solve_time_gains)
from contimg.config import CalibrateConfig
from contimg.io.chunk import VisChunk
from contimg.sky.calibrators import Calibrator
from contimg.sky.skymodel import PointSources

__all__ = ["CalibratorSolve", "solved_baselines", "solve_on_calibrator"]


@dataclass
class CalibratorSolve:
    """What a solve on a calibrator found: the bandpass, the time gains (None for
    ``gain_calmode = "none"``) and the solver parameters used (for the registry)."""

    bandpass: GainSolution
    time_gains: TimeGains | None
    params: dict


def solved_baselines(*, chunk: VisChunk, cc: CalibrateConfig) -> tuple[np.ndarray, np.ndarray]:
    """(mask (nbl,) bool of the cross-correlations the solvers read, baseline length (nbl,) m)."""
    baseline_m = np.linalg.norm(chunk.antenna_enu_m[chunk.ant2] - chunk.antenna_enu_m[chunk.ant1], axis=1)
    solved = (chunk.ant1 != chunk.ant2) & (baseline_m >= cc.min_baseline_m)
    if cc.max_baseline_m > 0:
        solved &= baseline_m <= cc.max_baseline_m
    return solved, baseline_m


def solve_on_calibrator(*, chunk: VisChunk, calibrator: Calibrator, others: list[Calibrator],
                        field_sources: PointSources | None, cc: CalibrateConfig, group_id: str) -> CalibratorSolve:
    """Bandpass and (``cc.gain_calmode``) time gains of ``chunk`` on ``calibrator``, the
    ``others`` and ``field_sources`` in the model. ``chunk`` is not modified."""
    mid = float(np.mean(chunk.time_jd))
    solved, baseline_m = solved_baselines(chunk=chunk, cc=cc)
    model = calibrator_model(chunk=chunk, calibrators=[calibrator, *others], field_sources=field_sources,
                             baselines=solved, compact=True, backend=cc.backend)
    common = dict(vis=chunk.vis, model=model, flags=chunk.flags, ant1=chunk.ant1, ant2=chunk.ant2,
                  antenna_names=chunk.antenna_names, refants=[cc.refant, *cc.refant_fallbacks], max_iter=cc.max_iter,
                  tolerance=cc.tolerance, min_snr=cc.min_snr, baseline_m=baseline_m, min_baseline_m=cc.min_baseline_m,
                  max_baseline_m=cc.max_baseline_m, min_baselines=cc.min_baselines_per_antenna, backend=cc.backend)
    nums, gains, gflags, snr, refant, iters = solve_gains(**common)
    extra = {}
    if cc.solve_delay:
        delay_s = fit_delays(gains=gains, flags=gflags, snr=snr, freq_hz=chunk.freq_hz)
        gains = remove_delays(gains=gains, delay_s=delay_s, freq_hz=chunk.freq_hz, sign=-1)
        extra["delay_ns"] = np.round(np.nan_to_num(delay_s) * 1e9, 4).tolist()
    gains = smooth_over_channels(gains=gains, flags=gflags, window=cc.smooth_channels)
    if cc.solve_delay:
        gains = np.where(gflags, 0, remove_delays(gains=gains, delay_s=delay_s, freq_hz=chunk.freq_hz, sign=+1))
    n_field = 0 if field_sources is None else len(field_sources)
    sol = GainSolution(nums, chunk.freq_hz, gains, gflags, snr, refant, mid, calibrator.name, group_id, iters,
                       {"flux_jy": calibrator.flux_jy, "median_snr": float(np.median(snr)), "field_sources": n_field,
                        **extra})
    params = {"refant": refant, "refants": [cc.refant, *cc.refant_fallbacks], "max_iter": cc.max_iter,
              "iterations": iters, "tolerance": cc.tolerance, "min_snr": cc.min_snr,
              "min_baseline_m": cc.min_baseline_m, "max_baseline_m": cc.max_baseline_m,
              "min_baselines_per_antenna": cc.min_baselines_per_antenna, "smooth_channels": cc.smooth_channels,
              "solve_delay": cc.solve_delay, "calibrator_flux_jy": calibrator.flux_jy,
              "model_sources": 1 + len(others) + n_field}
    if cc.gain_calmode == "none":
        return CalibratorSolve(sol, None, params)
    interval = solution_intervals(time_jd=chunk.time_jd, interval_s=cc.gain_interval_s)
    tnums, tgains, tflags, tsnr, trefant, titers = solve_time_gains(
        **common, bandpass=gains, bandpass_flags=gflags, bandpass_antennas=nums, interval=interval,
        calmode=cc.gain_calmode)
    del model
    centres = np.array([chunk.time_jd[interval == k].mean() for k in range(int(interval.max()) + 1)])
    tg = TimeGains(tnums, centres, tgains, tflags, tsnr, trefant, calibrator.name, group_id, cc.gain_calmode,
                   cc.gain_interval_s, titers, {"median_snr": float(np.median(tsnr))})
    return CalibratorSolve(sol, tg, params)
