"""RFI flagging of one group: the rules, in order, and their statistics.

1. Keep (or reset) the files' flags; flag zeros and non-finite values; flag autocorrelations
   (their data stay in the chunk for QA; imaging never uses them).
2. On every cross-correlation time-frequency plane (per baseline and polarization): iterate a
   smooth background fit (masked boxes, the frequency boxes stopping at subband edges) and
   AOFlagger's SumThreshold on the residual in robust sigmas, along time and frequency, with
   thresholds falling from ``iteration_factor^(iterations-1)`` × chi to chi.
3. A sample flagged in one polarization is flagged in all; scale-invariant rank dilation along
   time and frequency.
4. The baseline-averaged residual plane (per time, channel, polarization; noise √nbl lower than
   one baseline's) is searched with SumThreshold in its own robust sigmas: RFI below one
   baseline's noise is flagged on every baseline.
5. Dead antennas and dead channels (flagged above a fraction) are flagged whole; a time or a
   channel flagged above ``extend_fraction`` (per baseline-polarization plane, or over all
   cross-correlations) is flagged whole.

Step 2 runs as CuPy array code (`contimg.flag.xp`) on a GPU or as its numba twin
(`contimg.flag.cpu`); steps 1 and 3–5 are array code on ``xp`` for both. The group is the unit:
nothing crosses group boundaries, and the frequency background never crosses a subband edge.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from contimg.backend import array_module, to_host
from contimg.flag import cpu as _cpu
from contimg.flag import xp as _xp

__all__ = ["FlagStats", "FlagResult", "flag_group", "flag_stats", "REASONS"]

REASONS = ("input", "invalid", "autocorrelation", "sumthreshold", "dilation", "baseline_average",
           "dead_antenna", "dead_channel", "extension")


@dataclass(frozen=True)
class FlagStats:
    fraction: float  # over cross-correlations
    per_antenna: np.ndarray  # (nant_telescope,) fraction, NaN for antennas not in the data
    per_baseline: np.ndarray  # (nbl,) fraction, NaN for autocorrelations
    per_channel: np.ndarray  # (nchan,)
    per_time: np.ndarray  # (ntime,)
    reasons: dict[str, int] = field(default_factory=dict)  # cross-correlation samples each rule added

    @property
    def detected(self) -> int:
        """Samples the RFI search (SumThreshold, dilation, baseline average) flagged."""
        return int(sum(self.reasons.get(k, 0) for k in ("sumthreshold", "dilation", "baseline_average")))


@dataclass(frozen=True)
class FlagResult:
    flags: np.ndarray  # (ntime, nbl, nchan, npol) bool, host
    stats: FlagStats
    backend: str  # "cpu" or "gpu"


def _windows(*, chans_per_subband: int, nchan: int, half: int, respect: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per channel, the inclusive [lo, hi] of its background box, clipped to its subband."""
    c = np.arange(nchan)
    if respect and chans_per_subband > 0:
        start = (c // chans_per_subband) * chans_per_subband
        stop = np.minimum(start + chans_per_subband, nchan) - 1
    else:
        start, stop = np.zeros(nchan, int), np.full(nchan, nchan - 1)
    return np.maximum(c - half, start).astype(np.int64), np.minimum(c + half, stop).astype(np.int64)


def flag_group(*, vis, flags, ant1: np.ndarray, ant2: np.ndarray, n_antennas: int, chans_per_subband: int,
               cfg, backend: str | None = None, array_code: bool | None = None) -> FlagResult:
    """Flag one group.

    vis: (ntime, nbl, nchan, npol) complex64 (host or device); flags: same shape bool (the
    files' flags). ant1, ant2: (nbl,) antenna numbers. chans_per_subband: channels of one
    subband file (the frequency background stops at their edges). cfg: `FlagConfig`.
    backend: "cpu", "gpu" or "auto" (default ``cfg.backend``). array_code: run the device path's
    array code for every step (default: exactly on the GPU); True on the CPU runs the device
    algorithm on numpy, which the tests compare with the numba twin.
    Returns the new flags (host) and their statistics.
    """
    if vis.ndim != 4 or tuple(flags.shape) != tuple(vis.shape) or len(ant1) != vis.shape[1] or len(ant2) != vis.shape[1]:
        raise ValueError(f"flag_group: vis {tuple(vis.shape)}, flags {tuple(flags.shape)}, ant1/ant2 "
                         f"({len(ant1)}, {len(ant2)}) do not describe one (ntime, nbl, nchan, npol) group")
    xp = array_module(backend or cfg.backend)
    on_gpu = xp is not np
    use_xp = on_gpu if array_code is None else bool(array_code)
    ntime, nbl, nchan, npol = vis.shape
    ant1 = np.asarray(ant1)
    ant2 = np.asarray(ant2)
    cross_h = ant1 != ant2
    cross_idx = np.flatnonzero(cross_h)
    cross = xp.asarray(cross_h)
    v = xp.asarray(vis)
    reasons: dict[str, int] = {}

    def count_new(new, old, name: str) -> None:
        reasons[name] = reasons.get(name, 0) + int((new & ~old)[:, cross].sum())

    base = xp.asarray(flags).copy() if cfg.keep_input_flags else xp.zeros(v.shape, bool)
    reasons["input"] = int(base[:, cross].sum())
    invalid = (v.real == 0) & (v.imag == 0) | ~xp.isfinite(v.real) | ~xp.isfinite(v.imag)
    count_new(invalid, base, "invalid")
    base |= invalid
    autos = ~cross
    if cfg.flag_autocorrelations and bool(autos.any()):
        reasons["autocorrelation"] = int((~base[:, autos]).sum())
        base[:, autos] = True

    # 2. background + SumThreshold per plane
    lo_t, hi_t = _windows(chans_per_subband=ntime, nchan=ntime, half=cfg.background_box_time // 2, respect=False)
    lo_f, hi_f = _windows(chans_per_subband=chans_per_subband, nchan=nchan, half=cfg.background_box_chan // 2,
                          respect=cfg.respect_subbands and chans_per_subband >= 2 * cfg.background_box_chan)
    chis_t = _xp.window_thresholds(chi1=cfg.first_threshold_sigma, rho=cfg.threshold_rho, n=ntime,
                                   max_window=cfg.max_window)
    chis_f = _xp.window_thresholds(chi1=cfg.first_threshold_sigma, rho=cfg.threshold_rho, n=nchan,
                                   max_window=cfg.max_window)
    if use_xp:
        det, z = _detect_xp(xp=xp, vis=v[:, cross], base=base[:, cross], lo_t=lo_t, hi_t=hi_t, lo_f=lo_f,
                            hi_f=hi_f, chis_t=chis_t, chis_f=chis_f, cfg=cfg)
    else:
        det, z = _cpu.detect(vis=v, base=base, cross_idx=cross_idx, lo_t=lo_t, hi_t=hi_t, lo_f=lo_f, hi_f=hi_f,
                             chis_t=chis_t, chis_f=chis_f, n_iter=cfg.iterations, factor_step=cfg.iteration_factor)
    base_x = base[:, cross]
    reasons["sumthreshold"] = int(det.sum())

    # 3. polarizations together, then dilation
    if cfg.combine_polarizations:
        det = xp.broadcast_to(det.any(axis=3, keepdims=True), det.shape).copy()
    if cfg.sir_eta > 0:
        if use_xp:
            det = _dilate_xp(xp=xp, mask=det, eta=cfg.sir_eta)
        else:
            det = _cpu.sir_dilate(mask=det, eta_time=cfg.sir_eta, eta_freq=cfg.sir_eta)
    det &= ~base_x
    reasons["dilation"] = int(det.sum()) - reasons["sumthreshold"]
    fx = base_x | det

    # 4. the baseline-averaged plane
    if cfg.baseline_average and fx.shape[1] > 1:
        avg_hits = baseline_average_hits(xp=xp, z=z, flags=base_x, chi1=cfg.average_threshold_sigma,
                                         min_excess=cfg.average_min_excess, rho=cfg.threshold_rho,
                                         max_window=cfg.average_max_window, lo_t=lo_t, hi_t=hi_t, lo_f=lo_f, hi_f=hi_f)  # (ntime, nchan, npol)
        if cfg.combine_polarizations:
            avg_hits = xp.broadcast_to(avg_hits.any(axis=2, keepdims=True), avg_hits.shape)
        new = avg_hits[:, None, :, :] & ~fx
        reasons["baseline_average"] = int(new.sum())
        fx |= new
    del z

    # 5. dead antennas and channels, extension
    out = base
    out[:, cross] = fx
    before = out.copy()
    per_bl = out.mean(axis=(0, 2, 3))
    ant_frac = _per_antenna(per_bl=per_bl, ant1=ant1, ant2=ant2, cross=cross_h, n_antennas=n_antennas)
    dead = xp.asarray(np.flatnonzero(np.nan_to_num(to_host(ant_frac)) > cfg.dead_antenna_fraction))
    if dead.size:
        bl_dead = xp.isin(xp.asarray(ant1), dead) | xp.isin(xp.asarray(ant2), dead)
        out[:, bl_dead] = True
    count_new(out, before, "dead_antenna")
    before = out.copy()
    chan_dead = out[:, cross].mean(axis=(0, 1, 3)) > cfg.dead_channel_fraction
    out[:, :, chan_dead] = True
    count_new(out, before, "dead_channel")
    before = out.copy()
    ox = out[:, cross]
    ef = cfg.extend_fraction
    ox |= (ox.mean(axis=2, keepdims=True) > ef) | (ox.mean(axis=0, keepdims=True) > ef)
    ox |= (ox.mean(axis=(1, 2, 3), keepdims=True) > ef) | (ox.mean(axis=(0, 1, 3), keepdims=True) > ef)
    out[:, cross] = ox
    count_new(out, before, "extension")

    flags_h = to_host(out)
    stats = flag_stats(flags=flags_h, ant1=ant1, ant2=ant2, n_antennas=n_antennas, reasons=reasons)
    return FlagResult(flags=flags_h, stats=stats, backend="gpu" if on_gpu else "cpu")


def _detect_xp(*, xp, vis, base, lo_t, hi_t, lo_f, hi_f, chis_t, chis_f, cfg):
    """`contimg.flag.xp.detect_slabs` on (ntime, nx, nchan, npol) data, in that layout."""
    ntime, nx, nchan, npol = vis.shape
    planes = xp.ascontiguousarray(vis.transpose(1, 3, 0, 2)).reshape(nx * npol, ntime, nchan)
    amp = xp.sqrt(planes.real.astype(xp.float64) ** 2 + planes.imag.astype(xp.float64) ** 2)
    del planes
    valid = ~xp.ascontiguousarray(base.transpose(1, 3, 0, 2)).reshape(nx * npol, ntime, nchan)
    det, z = _xp.detect_slabs(xp=xp, amp=amp, valid=valid, lo_t=xp.asarray(lo_t), hi_t=xp.asarray(hi_t),
                              lo_f=xp.asarray(lo_f), hi_f=xp.asarray(hi_f), chis_t=chis_t, chis_f=chis_f,
                              n_iter=cfg.iterations, factor_step=cfg.iteration_factor)

    def back(a):
        return xp.ascontiguousarray(a.reshape(nx, npol, ntime, nchan).transpose(2, 0, 3, 1))

    return back(det), back(z)


def _dilate_xp(*, xp, mask, eta: float):
    ntime, nx, nchan, npol = mask.shape
    planes = xp.ascontiguousarray(mask.transpose(1, 3, 0, 2)).reshape(nx * npol, ntime, nchan)
    out = _xp.sir_dilate(xp=xp, mask=planes, eta=eta, axis=1) | _xp.sir_dilate(xp=xp, mask=planes, eta=eta, axis=2)
    return xp.ascontiguousarray(out.reshape(nx, npol, ntime, nchan).transpose(2, 0, 3, 1))


def baseline_average_hits(*, xp, z, flags, chi1: float, min_excess: float, rho: float, max_window: int,
                          lo_t, hi_t, lo_f, hi_f, clip: float = 3.0):
    """SumThreshold on the baseline-averaged residual plane.

    z: (ntime, nx, nchan, npol) float32 residuals in robust sigmas; flags: same shape bool, the
    samples to leave out (bad on input). The mean over baselines of z clipped to ±``clip``
    (strong RFI on one baseline counts no more than a 3-sigma sample; RFI below the noise counts
    whole) per (time, channel, polarization), less its own smooth background (the boxes of the
    per-baseline search: lo_t, hi_t, lo_f, hi_f on the host), is put in units of its robust
    sigma (1.4826 MAD over the plane) and searched along time and frequency for excesses (RFI
    adds amplitude; a deficit is what a background leaves beside it); every
    window's mean must also exceed the median by ``min_excess`` of one baseline's sigma.
    Returns (ntime, nchan, npol) bool: samples to flag on every cross-correlation.
    """
    ok = ~flags
    n = ok.sum(axis=1)  # (ntime, nchan, npol)
    s = xp.where(ok, xp.clip(z, -clip, clip), 0).sum(axis=1, dtype=xp.float64)
    mean = xp.where(n > 0, s / xp.maximum(n, 1), 0.0)
    planes = xp.ascontiguousarray(mean.transpose(2, 0, 1))  # (npol, ntime, nchan)
    valid = xp.ascontiguousarray((n > 0).transpose(2, 0, 1))
    npol, ntime, nchan = planes.shape
    hits = xp.zeros(planes.shape, bool)
    for _ in range(2):  # a smooth background of the plane (a bright source's common residual), refit without hits
        good = valid & ~hits
        hits = xp.zeros(planes.shape, bool)
        bg = _xp.masked_background(xp=xp, amp=planes, valid=good, lo_t=xp.asarray(lo_t), hi_t=xp.asarray(hi_t),
                                   lo_f=xp.asarray(lo_f), hi_f=xp.asarray(hi_f))
        resid = planes - bg
        sigma = _xp.robust_sigma(xp=xp, resid=resid, valid=good)
        for p in range(npol):
            sig = float(sigma[p])
            if sig <= 0:
                continue
            zz = xp.where(valid[p:p + 1], xp.maximum(resid[p:p + 1] / sig, 0.0), 0.0)  # RFI adds amplitude
            floor = min_excess / sig  # every window's mean must also exceed min_excess
            chis_t = np.maximum(_xp.window_thresholds(chi1=chi1, rho=rho, n=ntime, max_window=max_window), floor)
            chis_f = np.maximum(_xp.window_thresholds(chi1=chi1, rho=rho, n=nchan, max_window=max_window), floor)
            mask = ~valid[p:p + 1]
            hits[p:p + 1] = (_xp.sumthreshold(xp=xp, z=zz, mask=mask, chis=chis_t, axis=1)
                             | _xp.sumthreshold(xp=xp, z=zz, mask=mask, chis=chis_f, axis=2)) & valid[p:p + 1]
    return xp.ascontiguousarray(hits.transpose(1, 2, 0))


def _per_antenna(*, per_bl, ant1, ant2, cross, n_antennas: int) -> np.ndarray:
    pb = to_host(per_bl)[cross]
    a1, a2 = ant1[cross], ant2[cross]
    tot = np.bincount(a1, pb, n_antennas) + np.bincount(a2, pb, n_antennas)
    cnt = np.bincount(a1, None, n_antennas) + np.bincount(a2, None, n_antennas)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, tot / cnt, np.nan)


def flag_stats(*, flags: np.ndarray, ant1: np.ndarray, ant2: np.ndarray, n_antennas: int,
               reasons: dict[str, int] | None = None) -> FlagStats:
    """Flag fractions over cross-correlations: overall, per antenna (by number), baseline,
    channel and time. flags: (ntime, nbl, nchan, npol) bool (host)."""
    cross = ant1 != ant2
    f = flags[:, cross]
    per_bl_x = f.mean(axis=(0, 2, 3))
    per_bl = np.full(ant1.size, np.nan)
    per_bl[cross] = per_bl_x
    per_ant = _per_antenna(per_bl=flags.mean(axis=(0, 2, 3)), ant1=ant1, ant2=ant2, cross=cross,
                           n_antennas=n_antennas)
    return FlagStats(fraction=float(f.mean()), per_antenna=per_ant, per_baseline=per_bl,
                     per_channel=f.mean(axis=(0, 1, 3)), per_time=f.mean(axis=(1, 2, 3)),
                     reasons=dict(reasons or {}))
