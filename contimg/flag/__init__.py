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

Every step that touches the whole group has two implementations with the same arithmetic
(`contimg.flag.steps`): array code on ``xp`` (`ArraySteps`, the CuPy path; `contimg.flag.xp`)
and its numba twin (`HostSteps`; `contimg.flag.cpu`). `flag_group` is one straight path over
either; the rest (windows, thresholds, the baseline-averaged plane) is array code for both. The group is the unit:
nothing crosses group boundaries, and the frequency background never crosses a subband edge.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from contimg.device.backend import array_module, to_host
from contimg.device.transfer import TransferCounter, download, download_flags
from contimg.flag import cpu as _cpu
from contimg.flag import xp as _xp
from contimg.flag.steps import AVERAGE_CLIP, ArraySteps, HostSteps

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
    per_time_channel: np.ndarray  # (ntime, nchan): the waterfall of flags the QA plot and the web page show
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
    flags_xp: object = None  # the same flags where the data are (a device array, or ``flags`` itself)


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
               cfg, backend: str | None = None, array_code: bool | None = None,
               transfers: TransferCounter | None = None) -> FlagResult:
    """Flag one group.

    vis: (ntime, nbl, nchan, npol) complex64 (host or device); flags: same shape bool (the
    files' flags). ant1, ant2: (nbl,) antenna numbers. chans_per_subband: channels of one
    subband file (the frequency background stops at their edges). cfg: `FlagConfig`.
    backend: "cpu", "gpu" or "auto" (default ``cfg.backend``). array_code: run the device path's
    array code for every step (default: exactly on the GPU); True on the CPU runs the device
    algorithm on numpy, which the tests compare with the numba twin.
    Returns the new flags on the host (from a device bit-packed, counted in ``transfers``), the
    same where the data are (``flags_xp``: they need not go up again) and their statistics.
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
    auto_idx = np.flatnonzero(~cross_h)
    cross_d, auto_d = xp.asarray(cross_idx), xp.asarray(auto_idx)  # the same indices where the data live
    v = xp.asarray(vis)
    reasons: dict[str, int] = {}
    steps = (ArraySteps(xp=xp, cross_d=cross_d, auto_d=auto_d) if use_xp
             else HostSteps(cross=cross_h, cross_idx=cross_idx))

    # 1. input flags, invalid values, autocorrelations
    base, reasons["input"], reasons["invalid"] = steps.initial_flags(vis=v, flags=flags, keep=cfg.keep_input_flags)
    if cfg.flag_autocorrelations and auto_idx.size:
        reasons["autocorrelation"] = int((~base[:, auto_d]).sum())
        base[:, auto_d] = True

    # 2. background + SumThreshold per plane
    lo_t, hi_t = _windows(chans_per_subband=ntime, nchan=ntime, half=cfg.background_box_time // 2, respect=False)
    lo_f, hi_f = _windows(chans_per_subband=chans_per_subband, nchan=nchan, half=cfg.background_box_chan // 2,
                          respect=cfg.respect_subbands and chans_per_subband >= 2 * cfg.background_box_chan)
    chis_t = _xp.window_thresholds(chi1=cfg.first_threshold_sigma, rho=cfg.threshold_rho, n=ntime,
                                   max_window=cfg.max_window)
    chis_f = _xp.window_thresholds(chi1=cfg.first_threshold_sigma, rho=cfg.threshold_rho, n=nchan,
                                   max_window=cfg.max_window)
    det, mean, count = steps.detect(vis=v, base=base, lo_t=lo_t, hi_t=hi_t, lo_f=lo_f, hi_f=hi_f, chis_t=chis_t,
                                    chis_f=chis_f, n_iter=cfg.iterations, factor_step=cfg.iteration_factor,
                                    clip=AVERAGE_CLIP)
    reasons["sumthreshold"] = int(xp.count_nonzero(det))

    # 3. polarizations together, then dilation; fx: the cross-correlations' flags from here on
    fx, added = steps.combine_and_dilate(det=det, base=base, combine=cfg.combine_polarizations, eta=cfg.sir_eta)
    del det
    reasons["dilation"] = added - reasons["sumthreshold"]

    # 4. the baseline-averaged plane
    if cfg.baseline_average and fx.shape[1] > 1:
        avg_hits = baseline_average_hits(xp=xp, mean=mean, count=count, chi1=cfg.average_threshold_sigma,
                                         min_excess=cfg.average_min_excess, rho=cfg.threshold_rho,
                                         max_window=cfg.average_max_window, lo_t=lo_t, hi_t=hi_t, lo_f=lo_f, hi_f=hi_f)
        if cfg.combine_polarizations:
            avg_hits = xp.broadcast_to(avg_hits.any(axis=2, keepdims=True), avg_hits.shape)
        reasons["baseline_average"] = steps.or_broadcast(fx, tcp=avg_hits)
    del mean, count

    # 5. dead antennas and channels, extension (counted on the cross-correlations)
    tbp, bcp = steps.count_axes(fx)
    per_bl = to_host(tbp.sum(axis=(0, 2))) / float(ntime * nchan * npol)
    ant_frac = _per_antenna_cross(per_bl=per_bl, ant1=ant1[cross_idx], ant2=ant2[cross_idx], n_antennas=n_antennas)
    dead = np.flatnonzero(np.nan_to_num(ant_frac) > cfg.dead_antenna_fraction)
    bl_dead = np.isin(ant1, dead) | np.isin(ant2, dead)  # (nbl,) host
    reasons["dead_antenna"] = steps.or_broadcast(
        fx, tbp=xp.broadcast_to(xp.asarray(bl_dead[cross_idx])[None, :, None], tbp.shape))
    if reasons["dead_antenna"]:
        tbp, bcp = steps.count_axes(fx)
    chan_dead = bcp.sum(axis=(0, 2)) / float(ntime * cross_idx.size * npol) > cfg.dead_channel_fraction
    reasons["dead_channel"] = steps.or_broadcast(fx, c=chan_dead)
    if reasons["dead_channel"]:
        tbp, bcp = steps.count_axes(fx)
    ef = cfg.extend_fraction
    n_ext = steps.or_broadcast(fx, tbp=tbp / float(nchan) > ef, bcp=bcp / float(ntime) > ef)
    if n_ext:
        tbp, bcp = steps.count_axes(fx)
    n_ext += steps.or_broadcast(fx, t=tbp.sum(axis=(1, 2)) / float(cross_idx.size * nchan * npol) > ef,
                                c=bcp.sum(axis=(0, 2)) / float(ntime * cross_idx.size * npol) > ef)
    reasons["extension"] = n_ext

    out = base
    out[:, cross_d] = fx
    if auto_idx.size and not cfg.flag_autocorrelations:  # dead antennas and channels flag their autos too
        autos = out[:, auto_d]
        autos |= xp.asarray(bl_dead[auto_idx])[None, :, None, None] | xp.asarray(chan_dead)[None, None, :, None]
        out[:, auto_d] = autos
    per_row, per_tc = steps.cross_counts(fx)  # the statistics are counted where the flags are: little comes back
    stats = _stats_from_counts(per_cross=download(per_row, xp=xp, counter=transfers, label="flag statistics"),
                               per_time_channel=download(per_tc, xp=xp, counter=transfers, label="flag statistics"),
                               shape=(ntime, nbl, nchan, npol), ant1=ant1, ant2=ant2, n_antennas=n_antennas,
                               reasons=reasons)
    flags_h = download_flags(out, xp=xp, counter=transfers, label="flags (flag_group)")
    return FlagResult(flags=flags_h, stats=stats, backend="gpu" if on_gpu else "cpu", flags_xp=out)


def baseline_average_hits(*, xp, mean, count, chi1: float, min_excess: float, rho: float, max_window: int,
                          lo_t, hi_t, lo_f, hi_f):
    """SumThreshold on the baseline-averaged residual plane.

    mean: (ntime, nchan, npol) float64, the mean over baselines of the residuals in robust
    sigmas, each clipped to ±3 (strong RFI on one baseline counts no more than a 3-sigma sample;
    RFI below the noise counts whole), leaving out samples bad on input; count: (ntime, nchan,
    npol) the samples in each mean. Per polarization, the plane less its own smooth background
    (the boxes of the per-baseline search: lo_t, hi_t, lo_f, hi_f on the host) is put in units
    of its robust sigma (1.4826 MAD over the plane) and searched along time and frequency for
    excesses (RFI adds amplitude; a deficit is what a background leaves beside it); every
    window's mean must also exceed the median by ``min_excess`` of one baseline's sigma.
    Returns (ntime, nchan, npol) bool: samples to flag on every cross-correlation.
    """
    planes = xp.ascontiguousarray(xp.asarray(mean).transpose(2, 0, 1))  # (npol, ntime, nchan)
    valid = xp.ascontiguousarray((xp.asarray(count) > 0).transpose(2, 0, 1))
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


def _per_antenna_cross(*, per_bl: np.ndarray, ant1: np.ndarray, ant2: np.ndarray, n_antennas: int) -> np.ndarray:
    """Mean of a per-baseline fraction over each antenna's cross-correlations; NaN for antennas
    in none."""
    pb, a1, a2 = per_bl, ant1, ant2
    tot = np.bincount(a1, pb, n_antennas) + np.bincount(a2, pb, n_antennas)
    cnt = np.bincount(a1, None, n_antennas) + np.bincount(a2, None, n_antennas)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, tot / cnt, np.nan)


def flag_stats(*, flags: np.ndarray, ant1: np.ndarray, ant2: np.ndarray, n_antennas: int,
               reasons: dict[str, int] | None = None) -> FlagStats:
    """Flag fractions over cross-correlations: overall, per antenna (by number), baseline,
    channel, time, and (time, channel). flags: (ntime, nbl, nchan, npol) bool (host), read in
    place in one pass."""
    per_cross, per_time_channel = _cpu.cross_counts(np.ascontiguousarray(flags, bool), np.flatnonzero(ant1 != ant2))
    return _stats_from_counts(per_cross=per_cross, per_time_channel=per_time_channel, shape=flags.shape, ant1=ant1,
                              ant2=ant2, n_antennas=n_antennas, reasons=reasons)


def _stats_from_counts(*, per_cross: np.ndarray, per_time_channel: np.ndarray, shape: tuple[int, ...],
                       ant1: np.ndarray, ant2: np.ndarray, n_antennas: int,
                       reasons: dict[str, int] | None) -> FlagStats:
    """`FlagStats` from flagged-sample counts of the cross-correlations: per cross-correlation
    (nx,), in the order of ``ant1 != ant2``, and per (time, channel) summed over them and the
    polarizations (ntime, nchan). shape: the group's (ntime, nbl, nchan, npol)."""
    ntime, nbl, nchan, npol = shape
    cross = np.asarray(ant1) != np.asarray(ant2)
    nx = max(int(cross.sum()), 1)
    frac_cross = np.asarray(per_cross) / float(ntime * nchan * npol)
    per_bl = np.full(nbl, np.nan)
    per_bl[cross] = frac_cross
    tc = np.asarray(per_time_channel, np.int64)
    return FlagStats(fraction=float(np.sum(per_cross) / float(ntime * nx * nchan * npol)),
                     per_antenna=_per_antenna_cross(per_bl=frac_cross, ant1=np.asarray(ant1)[cross],
                                                    ant2=np.asarray(ant2)[cross], n_antennas=n_antennas),
                     per_baseline=per_bl, per_channel=tc.sum(axis=0) / float(ntime * nx * npol),
                     per_time=tc.sum(axis=1) / float(nx * nchan * npol), per_time_channel=tc / float(nx * npol),
                     reasons=dict(reasons or {}))
