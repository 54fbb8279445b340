"""Quality gates, one per stage: pure functions of the stage's arrays returning a `Gate` —
``passed``, the ``metrics`` measured (JSON-ready) and the ``reasons`` it failed for.

A failed gate never discards data: the group's products are kept, the gate is stored in
``products.sqlite3`` (``qa``), the group is marked, and the service raises one alert per
failing stage (rate-limited, see `contimg.qa.alerts`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numba
import numpy as np

from contimg.config import QAConfig

__all__ = ["Gate", "read_gate", "flag_gate", "solution_quality", "calibrate_gate", "image_gate", "zero_fraction",
           "phase_scatter_deg", "bandpass_roughness"]


@dataclass
class Gate:
    stage: str
    passed: bool
    metrics: dict = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"stage": self.stage, "passed": self.passed, "metrics": self.metrics, "reasons": self.reasons}


def _finish(stage: str, metrics: dict, reasons: list[str]) -> Gate:
    clean = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in metrics.items()}
    return Gate(stage, not reasons, clean, reasons)


@numba.njit(nogil=True, cache=True)
def _zero_nonfinite_counts(vis, cross):  # pragma: no cover - numba
    zeros = 0
    nonfinite = 0
    for t in range(vis.shape[0]):
        for b in range(vis.shape[1]):
            if not cross[b]:
                continue
            for c in range(vis.shape[2]):
                for p in range(vis.shape[3]):
                    v = vis[t, b, c, p]
                    if not (np.isfinite(v.real) and np.isfinite(v.imag)):
                        nonfinite += 1
                    elif v.real == 0 and v.imag == 0:
                        zeros += 1
    return zeros, nonfinite


def zero_fraction(*, vis: np.ndarray, cross: np.ndarray) -> tuple[float, float]:
    """(zero fraction, non-finite fraction) of the cross-correlations: a sample is zero when it
    equals 0 (numpy's ``v == 0``), non-finite when either part is NaN or infinite.

    vis: (ntime, nbl, nchan, npol) complex; cross: (nbl,) bool. One pass, no temporaries, the
    GIL released (the reader thread runs it beside the processor)."""
    n = vis.shape[0] * int(np.count_nonzero(cross)) * vis.shape[2] * vis.shape[3]
    if not n:
        return 0.0, 0.0
    zeros, nonfinite = _zero_nonfinite_counts(vis, np.ascontiguousarray(cross, dtype=np.bool_))
    return zeros / n, nonfinite / n


def read_gate(*, subbands_present: np.ndarray, vis: np.ndarray, cross: np.ndarray, cfg: QAConfig) -> Gate:
    """After reading: the subbands that arrived whole, and how much of the data is zero or NaN.

    subbands_present: (n_subbands,) bool; vis: (ntime, nbl, nchan, npol); cross: (nbl,) bool."""
    present = np.asarray(subbands_present, bool)
    frac_sb = float(present.mean()) if present.size else 0.0
    zero, nonfinite = zero_fraction(vis=vis, cross=cross)
    reasons = []
    if frac_sb < cfg.min_subband_fraction:
        missing = [f"sb{k:02d}" for k in np.flatnonzero(~present)]
        reasons.append(f"{present.sum()} of {present.size} subbands usable (missing {', '.join(missing)})")
    if zero + nonfinite > cfg.max_zero_fraction:
        reasons.append(f"{zero + nonfinite:.1%} of the samples are zero or not finite (> {cfg.max_zero_fraction:.1%})")
    return _finish("read", {"n_subbands": int(present.sum()), "subband_fraction": frac_sb, "zero_fraction": zero,
                            "nonfinite_fraction": nonfinite}, reasons)


def flag_gate(*, fraction: float, per_antenna: np.ndarray, reasons: dict[str, int], cfg: QAConfig) -> Gate:
    """After flagging. per_antenna: (nant_telescope,) flagged fraction, NaN for absent antennas;
    reasons: cross-correlation samples each flagging rule added (`contimg.flag.REASONS`)."""
    per_ant = np.asarray(per_antenna, float)
    present = np.isfinite(per_ant)
    dead = np.flatnonzero(present & (per_ant > cfg.dead_antenna_fraction))
    out_reasons = []
    if fraction > cfg.max_flag_fraction:
        out_reasons.append(f"{fraction:.1%} of the data flagged (> {cfg.max_flag_fraction:.0%})")
    if dead.size > cfg.max_dead_antennas:
        out_reasons.append(f"{dead.size} dead antennas (> {cfg.max_dead_antennas}): {', '.join(map(str, dead[:20]))}")
    worst = float(np.max(per_ant[present])) if present.any() else float("nan")
    return _finish("flag", {"flag_fraction": float(fraction), "n_dead_antennas": int(dead.size),
                            "dead_antennas": [int(a) for a in dead], "max_antenna_fraction": worst,
                            "flagged_by": {k: int(v) for k, v in reasons.items()}}, out_reasons)


def phase_scatter_deg(*, gains: np.ndarray, flags: np.ndarray, freq_hz: np.ndarray) -> np.ndarray:
    """Per antenna and polarization: RMS (deg) of the gain phase across channels about a fitted
    delay (a straight line in unwrapped phase). gains/flags: (nant, nchan, npol); → (nant, npol),
    NaN where fewer than 3 channels are unflagged."""
    nant, nchan, npol = gains.shape
    out = np.full((nant, npol), np.nan)
    x = (np.asarray(freq_hz, float) - np.mean(freq_hz)) / 1e6
    for a in range(nant):
        for p in range(npol):
            ok = ~flags[a, :, p] & np.isfinite(gains[a, :, p]) & (np.abs(gains[a, :, p]) > 0)
            if ok.sum() < 3:
                continue
            phase = np.unwrap(np.angle(gains[a, ok, p]))
            coef = np.polyfit(x[ok], phase, 1)
            out[a, p] = np.degrees(np.sqrt(np.mean((phase - np.polyval(coef, x[ok])) ** 2)))
    return out


def bandpass_roughness(*, gains: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """Per antenna and polarization: RMS of the amplitude's channel-to-channel difference over
    √2 × median amplitude (≈ the fractional noise of the solutions; a smooth bandpass gives ~0).
    gains/flags: (nant, nchan, npol); → (nant, npol), NaN with fewer than 3 good channels."""
    amp = np.where(flags, np.nan, np.abs(gains)).astype(float)
    diff = np.diff(amp, axis=1)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-flagged antennas: NaN, as documented
        n_ok = np.sum(np.isfinite(diff), axis=1)
        rough = np.sqrt(np.nanmean(diff**2, axis=1)) / np.sqrt(2.0) / np.nanmedian(amp, axis=1)
    return np.where(n_ok >= 2, rough, np.nan)


def solution_quality(*, gains: np.ndarray, flags: np.ndarray, snr: np.ndarray, freq_hz: np.ndarray,
                     cfg: QAConfig) -> tuple[dict, list[str]]:
    """The quality of one gain solution: (metrics, reasons it fails). A solution that fails is
    registered as ``rejected`` and never applied (`contimg.state.calregistry`).

    gains/flags/snr: (nant, nchan, npol). Median SNR of the unflagged gains, the flagged
    fraction (overall and of the worst antenna), the phase scatter about a delay fit and the
    bandpass roughness (medians over antennas and polarizations)."""
    good = ~flags
    med_snr = float(np.median(snr[good])) if good.any() else 0.0
    flagged = float(np.mean(flags))
    per_antenna = np.mean(flags, axis=(1, 2)) if flags.size else np.zeros(0)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # every antenna flagged: NaN fails the gate
        scatter = float(np.nanmedian(phase_scatter_deg(gains=gains, flags=flags, freq_hz=freq_hz)))
        rough = float(np.nanmedian(bandpass_roughness(gains=gains, flags=flags)))
    reasons = []
    if med_snr < cfg.min_median_snr:
        reasons.append(f"median solution SNR {med_snr:.1f} < {cfg.min_median_snr}")
    if flagged > cfg.max_solution_flag_fraction:
        reasons.append(f"{flagged:.1%} of the solutions flagged (> {cfg.max_solution_flag_fraction:.0%})")
    if not scatter <= cfg.max_phase_scatter_deg:
        reasons.append(f"gain phase scatter {scatter:.1f} deg about a delay fit (> {cfg.max_phase_scatter_deg})")
    if not rough <= cfg.max_bandpass_roughness:
        reasons.append(f"bandpass roughness {rough:.3f} (> {cfg.max_bandpass_roughness})")
    metrics = {"median_snr": med_snr, "flagged_fraction": flagged,
               "max_antenna_flagged_fraction": float(per_antenna.max()) if per_antenna.size else float("nan"),
               "phase_scatter_deg": scatter, "bandpass_roughness": rough}
    return metrics, reasons


def time_gain_quality(*, gains: np.ndarray, flags: np.ndarray, snr: np.ndarray, cfg: QAConfig) -> tuple[dict, list[str]]:
    """The quality of one table of time-dependent gains: (metrics, reasons it fails).

    gains/flags/snr: (nint, nant, npol). Median SNR of the unflagged gains, the flagged
    fraction, and the smoothness in time: the median over antennas and polarizations of the
    RMS phase step between consecutive intervals (both unflagged)."""
    good = ~flags
    med_snr = float(np.median(snr[good])) if good.any() else 0.0
    flagged = float(np.mean(flags)) if flags.size else 1.0
    step = np.angle(gains[1:] * np.conj(gains[:-1]))
    both = good[1:] & good[:-1]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        n = both.sum(axis=0)
        rms = np.sqrt(np.where(both, step**2, 0).sum(axis=0) / n)
        jump = float(np.degrees(np.nanmedian(np.where(n > 0, rms, np.nan)))) if gains.shape[0] > 1 else 0.0
    reasons = []
    if med_snr < cfg.min_median_snr:
        reasons.append(f"median time-gain SNR {med_snr:.1f} < {cfg.min_median_snr}")
    if flagged > cfg.max_solution_flag_fraction:
        reasons.append(f"{flagged:.1%} of the time gains flagged (> {cfg.max_solution_flag_fraction:.0%})")
    if not jump <= cfg.max_gain_phase_step_deg:
        reasons.append(f"time-gain phase steps {jump:.1f} deg RMS between intervals (> {cfg.max_gain_phase_step_deg})")
    return {"median_snr": med_snr, "flagged_fraction": flagged, "phase_step_deg": jump}, reasons


def calibrate_gate(*, gains: np.ndarray | None, flags: np.ndarray | None, snr: np.ndarray | None,
                   freq_hz: np.ndarray, solution_age_hours: float, solved_here: bool, cfg: QAConfig,
                   rejected_reasons: list[str] | None = None) -> Gate:
    """After calibration, on the solution applied (None: nothing was applied).

    gains/flags/snr: (nant, nchan, npol); solution_age_hours: |group mid − solution mid|, which
    gives the staleness level (`contimg.calibrate.registry.staleness_level`: fresh / aging / stale /
    critical; nothing applied is critical). Fails on the solution's quality
    (`solution_quality`), on a critical level, and when this group's own solve was rejected
    (``rejected_reasons``: why; the group then got an older solution, or none)."""
    from contimg.calibrate.registry import staleness_level

    rejected = [f"the solution solved on this group was rejected ({'; '.join(rejected_reasons)})"] \
        if rejected_reasons else []
    if gains is None:
        return _finish("calibrate", {"applied": False, "staleness": "critical", "solution_rejected": bool(rejected)},
                       ["no calibration applied (no calibrator, no valid solution)"] + rejected)
    metrics, reasons = solution_quality(gains=gains, flags=flags, snr=snr, freq_hz=freq_hz, cfg=cfg)
    level = staleness_level(age_hours=solution_age_hours, aging_hours=cfg.solution_aging_hours,
                            stale_hours=cfg.solution_stale_hours, critical_hours=cfg.solution_critical_hours)
    if level == "critical":
        reasons.append(f"solution is {solution_age_hours:.1f} h old (> {cfg.solution_critical_hours} h): critical")
    return _finish("calibrate", {"applied": True, "solved_here": solved_here, **metrics,
                                 "solution_age_hours": float(solution_age_hours), "staleness": level,
                                 "solution_rejected": bool(rejected)}, reasons + rejected)


def image_gate(*, noise_jy: float, peak_jy: float, beam_arcsec: tuple[float, float, float],
               reference_beam_arcsec: tuple[float, float] | None, crossmatch: dict, cfg: QAConfig) -> Gate:
    """After imaging: noise, dynamic range, beam against the reference, and the cross-match
    summary (the summary `contimg.qa.sources.crossmatch` returns)."""
    dr = peak_jy / noise_jy if noise_jy > 0 else float("inf")
    reasons = []
    if not noise_jy <= cfg.max_noise_jy:
        reasons.append(f"RMS {noise_jy * 1e3:.2f} mJy/beam (> {cfg.max_noise_jy * 1e3:.1f})")
    if dr < cfg.min_dynamic_range:
        reasons.append(f"dynamic range {dr:.1f} (< {cfg.min_dynamic_range})")
    metrics = {"noise_jy": float(noise_jy), "peak_jy": float(peak_jy), "dynamic_range": float(dr),
               "bmaj_arcsec": float(beam_arcsec[0]), "bmin_arcsec": float(beam_arcsec[1]),
               "bpa_deg": float(beam_arcsec[2])}
    if reference_beam_arcsec:
        ratio = (beam_arcsec[0] / reference_beam_arcsec[0], beam_arcsec[1] / reference_beam_arcsec[1])
        metrics.update(reference_bmaj_arcsec=float(reference_beam_arcsec[0]),
                       reference_bmin_arcsec=float(reference_beam_arcsec[1]),
                       beam_ratio=[float(ratio[0]), float(ratio[1])])
        if max(abs(ratio[0] - 1), abs(ratio[1] - 1)) > cfg.beam_tolerance:
            reasons.append(f"beam {beam_arcsec[0]:.1f}\"x{beam_arcsec[1]:.1f}\" differs from the reference "
                           f"{reference_beam_arcsec[0]:.1f}\"x{reference_beam_arcsec[1]:.1f}\" by more than "
                           f"{cfg.beam_tolerance:.0%}")
    metrics.update(crossmatch)
    expected = crossmatch.get("n_catalogue_detectable", 0)
    if expected >= cfg.min_matches and crossmatch.get("n_matched", 0) < cfg.min_matches:
        reasons.append(f"{crossmatch.get('n_matched', 0)} of {expected} detectable catalogue sources found")
    offset = crossmatch.get("systematic_offset_beam")
    if offset is not None and offset > cfg.max_offset_beam:
        reasons.append(f"systematic position offset {offset:.2f} beam (> {cfg.max_offset_beam})")
    ratio = crossmatch.get("flux_ratio")
    if ratio is not None and abs(ratio - 1) > cfg.max_flux_ratio_error:
        reasons.append(f"flux ratio to the catalogue {ratio:.3f} (off by > {cfg.max_flux_ratio_error:.0%})")
    return _finish("image", metrics, reasons)
