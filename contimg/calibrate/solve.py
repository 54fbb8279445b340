"""Solvers: the bandpass (one gain per antenna, channel and polarization over the group) and
time-dependent gains (one per solution interval, antenna and polarization over the band, the
bandpass divided out), both by StEFCal (Salvini & Wijnholds 2014) on sums over the data:

``g_i <- sum_j g_j C_ij / sum_j |g_j|^2 P_ij``, ``C_ij = sum w conj(M_ij) V_ij``,
``P_ij = sum w |M_ij|^2``, every second update averaged with the previous one; each slot
(channel, or integration interval) and polarization is its own problem and stops at its own
convergence. The sums and the iteration run in numba on the CPU (`contimg.calibrate.cpu`) or
as array code on the GPU (`contimg.calibrate.xp`, cupy); the tests hold the two equal.

Phases are referred to a reference antenna (the first of a list with solutions in > 90 % of
the slots); a gain with an SNR below the threshold (from the residual's variance and the
information ``sum_j |g_j|^2 P_ij``) is flagged, never extrapolated.
"""

from __future__ import annotations

import logging

import numpy as np

from contimg.device.backend import array_module, to_host
from contimg.calibrate import cpu as _cpu
from contimg.calibrate import xp as _xp

log = logging.getLogger(__name__)

__all__ = ["solve_gains", "solve_time_gains", "solution_intervals", "prune_antennas", "fit_delays", "remove_delays",
           "smooth_over_channels"]


def _antenna_index(ant1: np.ndarray, ant2: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    numbers = np.unique(np.concatenate([ant1, ant2]))
    lookup = {a: k for k, a in enumerate(numbers)}
    return numbers, np.array([lookup[a] for a in ant1]), np.array([lookup[a] for a in ant2])


def _selection(*, k1, k2, baseline_m, min_baseline_m, max_baseline_m) -> tuple[np.ndarray, np.ndarray]:
    """(sel (nbl,) bool: the baselines solved on, pairs (npair, 2): their antenna index pairs)."""
    sel = k1 != k2
    if baseline_m is not None and min_baseline_m > 0:
        sel &= np.asarray(baseline_m) >= min_baseline_m
    if baseline_m is not None and max_baseline_m > 0:
        sel &= np.asarray(baseline_m) <= max_baseline_m
    lo, hi = np.minimum(k1, k2)[sel], np.maximum(k1, k2)[sel]
    pairs = np.unique(np.stack([lo, hi], axis=1), axis=0)
    if pairs.shape[0] != int(sel.sum()):
        raise ValueError("the baselines to solve on repeat an antenna pair: one visibility per pair expected")
    return sel, pairs


def _pick_refant(*, alive: np.ndarray, names: np.ndarray, refants: list[str]) -> tuple[str, int | None]:
    """The first of ``refants`` (then every antenna in order) alive in > 90 % of the slots.
    alive: (nslot, npol, nant) bool; names (nant,) str."""
    for name in list(refants) + [str(n) for n in names]:
        hits = np.flatnonzero(names == name)
        if hits.size and alive[:, :, hits[0]].mean() > 0.9:
            return name, int(hits[0])
    return "", None


def _finish(*, g, change, P, resid2, count, names, refants, tolerance, min_snr, what):
    """Shared end of both solves (host arrays): unconverged slots flagged, the reference
    antenna's phase removed per slot, SNR and flags. g (nslot, npol, nant) complex128; P
    (nslot, npol, nant, nant); resid2/count (nslot, npol). Returns (g, flags, snr, refant)."""
    nant = g.shape[2]
    # a slot still moving by more than 1e-3 after max_iter is ill-constrained (mostly flagged)
    unconverged = change > max(1e3 * tolerance, 1e-3)
    if unconverged.any():
        log.warning("%s: %d slot/polarization pairs did not converge: flagged", what, int(unconverged.sum()))
    alive = (np.abs(g) > 0) & ~unconverged[:, :, None]
    refant, ref_k = _pick_refant(alive=alive, names=names, refants=refants)
    if ref_k is not None:
        ref = g[:, :, ref_k]
        g = g * np.where(np.abs(ref) > 0, np.conj(ref) / np.where(np.abs(ref) > 0, np.abs(ref), 1), 1)[:, :, None]
    var = resid2 / np.maximum(count - nant, 1)  # per visibility (complex) variance
    info = np.einsum("spij,spj->spi", P, np.abs(g) ** 2)  # sum_j |g_j|^2 P_ij
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.abs(g) / np.sqrt(var[:, :, None] / np.where(info > 0, info, np.inf))
    snr = np.nan_to_num(snr, nan=0.0, posinf=0.0)
    flags = (~alive) | (snr < min_snr)
    return g, flags, snr, refant


def prune_antennas(*, xp, C, P, min_baselines: int):
    """In place: an antenna with fewer than ``min_baselines`` baselines carrying data in a
    (slot, pol) is taken out of that slot's problem (its rows and columns of C and P zeroed:
    it gets no solution there, so it is flagged, and it pulls on no other antenna); repeated
    until every antenna left has enough (taking one out can leave another short).
    C, P: (nslot, npol, nant, nant). Returns the number of (slot, pol, antenna) taken out."""
    removed = 0
    while min_baselines > 1:
        n = (P > 0).sum(axis=-1)  # (nslot, npol, nant)
        low = (n > 0) & (n < min_baselines)
        k = int(low.sum())
        if k == 0:
            break
        removed += k
        keep = ~low
        C *= keep[..., :, None] & keep[..., None, :]
        P *= keep[..., :, None] & keep[..., None, :]
    return removed


def _model_rows(model, sel: np.ndarray) -> np.ndarray:
    """(nbl,) int64: the row of ``model`` (ntime, nbl or nsel, nchan) holding each baseline's
    model — all baselines, or only the selected ones in order (-1 for the others)."""
    nrow = model.shape[1]
    if nrow == sel.size:
        return np.arange(sel.size, dtype=np.int64)
    if nrow == int(sel.sum()):
        rows = np.full(sel.size, -1, np.int64)
        rows[sel] = np.arange(nrow)
        return rows
    raise ValueError(f"the model has {nrow} baselines: expected all {sel.size} or the {int(sel.sum())} solved on")


def _device_inputs(xp, vis, model, flags):
    return xp.asarray(vis), xp.ascontiguousarray(xp.asarray(model), dtype=np.complex64), xp.asarray(flags)


def solve_gains(*, vis: np.ndarray, model: np.ndarray, flags: np.ndarray, ant1: np.ndarray, ant2: np.ndarray,
                antenna_names: np.ndarray, refants: list[str], max_iter: int = 200, tolerance: float = 1e-6,
                min_snr: float = 5.0, baseline_m: np.ndarray | None = None, min_baseline_m: float = 0.0,
                max_baseline_m: float = 0.0, min_baselines: int = 4, backend: str = "cpu",
                array_code: bool | None = None):
    """The bandpass: one gain per antenna, channel and polarization over all times.

    vis: (ntime, nbl, nchan, npol) complex64; model: (ntime, nbl, nchan) complex (the same for
    each pol), or (ntime, nsel, nchan) for the selected baselines only (in order); flags: like vis (True = bad; autocorrelations are ignored). antenna_names indexed
    by antenna number; refants: names in order of preference. Baselines shorter than
    ``min_baseline_m`` (lengths ``baseline_m`` (nbl,)) are left out: there the unmodelled sky is
    least averaged out by the fringes; longer than ``max_baseline_m`` (> 0) too (the uv-range
    cut). An antenna with fewer than ``min_baselines`` baselines with data in a channel gets no
    solution there (`prune_antennas`). backend "cpu", "gpu" or "auto"; array_code: run the
    device path's array code (default: exactly on the GPU; True on the CPU runs it on numpy).
    Returns (antenna_numbers (nant,), gains (nant, nchan, npol) complex64, gain_flags bool,
    snr float32, the reference antenna used, iterations).
    """
    numbers, k1, k2 = _antenna_index(ant1, ant2)
    nant, (_, _, nchan, npol) = numbers.size, vis.shape
    sel, pairs = _selection(k1=k1, k2=k2, baseline_m=baseline_m, min_baseline_m=min_baseline_m,
                            max_baseline_m=max_baseline_m)
    mrow = _model_rows(model, sel)
    xp = array_module(backend)
    g0 = np.ones((nchan, npol, nant), np.complex128)
    if xp is not np or array_code:
        v, m, f = _device_inputs(xp, vis, model, flags)
        bls = np.flatnonzero(sel)
        C, P = _xp.accumulate_per_channel(xp=xp, vis=v, model=m, mrows=mrow[bls], flags=f, bls=bls, k1=k1, k2=k2, nant=nant)
        prune_antennas(xp=xp, C=C, P=P, min_baselines=min_baselines)
        g, change, iters = _xp.stefcal(xp=xp, C=C, P=P, max_iter=max_iter, tolerance=tolerance, phase_only=False,
                                       g=xp.asarray(g0))
        resid2, count = _xp.residual_per_channel(xp=xp, vis=v, model=m, mrows=mrow[bls], flags=f, bls=bls, k1=k1, k2=k2, g=g)
        g, change, iters, P, resid2, count = map(to_host, (g, change, iters, P, resid2, count))
    else:
        model = np.ascontiguousarray(model, np.complex64)
        C = np.zeros((nchan, npol, nant, nant), np.complex128)
        P = np.zeros((nchan, npol, nant, nant), np.float64)
        _cpu.accumulate_per_channel(vis, model, mrow, flags, sel, k1, k2, C, P)
        prune_antennas(xp=np, C=C, P=P, min_baselines=min_baselines)
        g, change = g0, np.zeros((nchan, npol))
        iters = np.zeros((nchan, npol), np.int64)
        _cpu.stefcal(C, P, pairs[:, 0].copy(), pairs[:, 1].copy(), max_iter, tolerance, False, g, change, iters)
        resid2, count = np.zeros((nchan, npol)), np.zeros((nchan, npol))
        # the residual of the referenced gains (the reference phase cancels in g_i conj(g_j))
        _cpu.residual_per_channel(vis, model, mrow, flags, sel, k1, k2, g, resid2, count)
    g, gflags, snr, refant = _finish(g=g, change=change, P=P, resid2=resid2, count=count,
                                     names=np.asarray(antenna_names)[numbers], refants=refants,
                                     tolerance=tolerance, min_snr=min_snr, what="bandpass")
    return (numbers, g.transpose(2, 0, 1).astype(np.complex64), gflags.transpose(2, 0, 1),
            snr.transpose(2, 0, 1).astype(np.float32), refant, int(iters.max()))


def solution_intervals(*, time_jd: np.ndarray, interval_s: float) -> np.ndarray:
    """(ntime,) int: the solution interval of each integration — consecutive runs of
    ``round(interval_s / integration time)`` integrations (at least 1; ``interval_s`` 0 = one
    per integration)."""
    time_jd = np.asarray(time_jd, float)
    if time_jd.size < 2 or interval_s <= 0:
        return np.arange(time_jd.size)
    dt_s = float(np.median(np.diff(time_jd))) * 86400.0
    per = max(1, int(round(interval_s / dt_s)))
    return np.arange(time_jd.size) // per


def solve_time_gains(*, vis: np.ndarray, model: np.ndarray, flags: np.ndarray, ant1: np.ndarray, ant2: np.ndarray,
                     antenna_names: np.ndarray, bandpass: np.ndarray, bandpass_flags: np.ndarray,
                     bandpass_antennas: np.ndarray, interval: np.ndarray, refants: list[str], calmode: str = "ap",
                     max_iter: int = 200, tolerance: float = 1e-6, min_snr: float = 5.0,
                     baseline_m: np.ndarray | None = None, min_baseline_m: float = 0.0, max_baseline_m: float = 0.0,
                     min_baselines: int = 4, backend: str = "cpu", array_code: bool | None = None):
    """Time-dependent gains with the bandpass divided out: one complex gain per solution
    interval, antenna and polarization, over all channels.

    vis/model/flags/ant1/ant2/antenna_names/baselines as `solve_gains`; bandpass,
    bandpass_flags: (nant_b, nchan, npol) for ``bandpass_antennas`` (flagged ones leave their
    samples out); interval: (ntime,) the solution interval of each integration
    (`solution_intervals`); calmode "ap" or "p" (phase only). Returns (antenna_numbers (nant,),
    gains (nint, nant, npol) complex64, flags bool, snr float32, refant, iterations).
    """
    if calmode not in ("ap", "p"):
        raise ValueError(f"calmode must be 'ap' or 'p', got {calmode!r}")
    numbers, k1, k2 = _antenna_index(ant1, ant2)
    nant, (ntime, _, nchan, npol) = numbers.size, vis.shape
    sel, pairs = _selection(k1=k1, k2=k2, baseline_m=baseline_m, min_baseline_m=min_baseline_m,
                            max_baseline_m=max_baseline_m)
    lookup = {a: k for k, a in enumerate(np.asarray(bandpass_antennas))}
    bp = np.zeros((nchan, npol, nant), np.complex64)  # (chan, pol, ant): 0 where flagged or missing
    for k, a in enumerate(numbers):
        if a in lookup:
            b = lookup[a]
            bp[:, :, k] = np.where(bandpass_flags[b], 0, bandpass[b])
    interval = np.asarray(interval)
    starts = np.flatnonzero(np.r_[True, np.diff(interval) != 0])
    nint = starts.size
    mrow = _model_rows(model, sel)
    xp = array_module(backend)
    g0 = np.ones((nint, npol, nant), np.complex128)
    phase_only = calmode == "p"
    if xp is not np or array_code:
        v, m, f = _device_inputs(xp, vis, model, flags)
        bls = np.flatnonzero(sel)
        bp_d = xp.asarray(bp)
        Ct, Pt = _xp.accumulate_per_time(xp=xp, vis=v, model=m, mrows=mrow[bls], flags=f, bls=bls, k1=k1, k2=k2, bp=bp_d, nant=nant)
        st = xp.asarray(starts)
        C, P = xp.add.reduceat(Ct, st, axis=0), xp.add.reduceat(Pt, st, axis=0)
        del Ct, Pt
        prune_antennas(xp=xp, C=C, P=P, min_baselines=min_baselines)
        g, change, iters = _xp.stefcal(xp=xp, C=C, P=P, max_iter=max_iter, tolerance=tolerance,
                                       phase_only=phase_only, g=xp.asarray(g0))
        r_t, n_t = _xp.residual_per_time(xp=xp, vis=v, model=m, mrows=mrow[bls], flags=f, bls=bls, k1=k1, k2=k2, bp=bp_d,
                                         g=g[xp.asarray(interval)])
        resid2, count = xp.add.reduceat(r_t, st, axis=0), xp.add.reduceat(n_t, st, axis=0)
        g, change, iters, P, resid2, count = map(to_host, (g, change, iters, P, resid2, count))
    else:
        model = np.ascontiguousarray(model, np.complex64)
        Ct = np.zeros((ntime, npol, nant, nant), np.complex128)
        Pt = np.zeros((ntime, npol, nant, nant), np.float64)
        _cpu.accumulate_per_time(vis, model, mrow, flags, sel, k1, k2, bp, Ct, Pt)
        C, P = np.add.reduceat(Ct, starts, axis=0), np.add.reduceat(Pt, starts, axis=0)
        del Ct, Pt
        prune_antennas(xp=np, C=C, P=P, min_baselines=min_baselines)
        g, change = g0, np.zeros((nint, npol))
        iters = np.zeros((nint, npol), np.int64)
        _cpu.stefcal(C, P, pairs[:, 0].copy(), pairs[:, 1].copy(), max_iter, tolerance, phase_only, g, change, iters)
        r_t, n_t = np.zeros((ntime, npol)), np.zeros((ntime, npol))
        _cpu.residual_per_time(vis, model, mrow, flags, sel, k1, k2, bp, np.ascontiguousarray(g[interval]), r_t, n_t)
        resid2, count = np.add.reduceat(r_t, starts, axis=0), np.add.reduceat(n_t, starts, axis=0)
    g, gflags, snr, refant = _finish(g=g, change=change, P=P, resid2=resid2, count=count,
                                     names=np.asarray(antenna_names)[numbers], refants=refants,
                                     tolerance=tolerance, min_snr=min_snr, what="time gains")
    return (numbers, g.transpose(0, 2, 1).astype(np.complex64), gflags.transpose(0, 2, 1),
            snr.transpose(0, 2, 1).astype(np.float32), refant, int(iters.max()))


def fit_delays(*, gains: np.ndarray, flags: np.ndarray, snr: np.ndarray, freq_hz: np.ndarray,
               oversample: int = 8) -> np.ndarray:
    """The delay (K) of each antenna and polarization from its bandpass: the peak of the
    zero-padded FFT over channels (flagged channels 0), refined by an SNR²-weighted straight
    line through the phase left after the coarse delay. Phase convention:
    ``arg g(f) = phi0 + 2 pi (f - f_mid) delay``, f_mid the mean frequency.

    gains, flags, snr: (nant, nchan, npol); freq_hz (nchan,) evenly spaced. Returns delay_s
    (nant, npol) float64, NaN where fewer than 3 channels are unflagged."""
    nant, nchan, npol = gains.shape
    f = np.asarray(freq_hz, float)
    df = float(np.median(np.diff(f))) if nchan > 1 else 1.0
    x = f - f.mean()
    ok = ~flags & (np.abs(gains) > 0)
    unit = np.where(ok, gains / np.where(ok, np.abs(gains), 1), 0)
    nfft = int(2 ** np.ceil(np.log2(max(nchan, 2) * oversample)))
    spec = np.abs(np.fft.fft(unit, n=nfft, axis=1))
    coarse = np.fft.fftfreq(nfft, d=df)[np.argmax(spec, axis=1)]  # (nant, npol) seconds
    w = np.where(ok, snr.astype(float) ** 2, 0.0)
    resid = np.angle(unit * np.exp(-2j * np.pi * x[None, :, None] * coarse[:, None, :]))
    sw = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        xm = (w * x[None, :, None]).sum(axis=1) / sw
        ym = (w * resid).sum(axis=1) / sw
        dx = x[None, :, None] - xm[:, None, :]
        slope = (w * dx * (resid - ym[:, None, :])).sum(axis=1) / (w * dx**2).sum(axis=1)
    delay = coarse + slope / (2 * np.pi)
    return np.where(ok.sum(axis=1) >= 3, delay, np.nan)


def remove_delays(*, gains: np.ndarray, delay_s: np.ndarray, freq_hz: np.ndarray, sign: int = -1) -> np.ndarray:
    """``gains * exp(sign 2 pi i (f - f_mid) delay)`` ((nant, nchan, npol) complex64; NaN delays
    count as 0): sign -1 takes the delays out, +1 puts them back."""
    x = np.asarray(freq_hz, float) - np.mean(freq_hz)
    d = np.nan_to_num(delay_s, nan=0.0)
    return (gains * np.exp(sign * 2j * np.pi * x[None, :, None] * d[:, None, :])).astype(np.complex64)


def smooth_over_channels(*, gains: np.ndarray, flags: np.ndarray, window: int) -> np.ndarray:
    """Running mean of complex gains over ``window`` channels (odd), ignoring flagged ones.

    gains, flags: (nant, nchan, npol). A bandpass is smooth across a few channels while the
    noise, and the unmodelled sky's contribution to a per-channel solution, are not (take the
    delays out first, `remove_delays`: a steep phase slope is not smooth).
    Returns (nant, nchan, npol) complex64; flagged channels stay 0.
    """
    if window <= 1:
        return gains
    if window % 2 == 0:
        raise ValueError(f"bandpass smoothing window must be odd, got {window}")
    good = (~flags).astype(np.float64)
    g = np.where(flags, 0, gains).astype(np.complex128)
    kernel = np.ones(window)
    num = np.apply_along_axis(lambda x: np.convolve(x, kernel, mode="same"), 1, g)
    den = np.apply_along_axis(lambda x: np.convolve(x, kernel, mode="same"), 1, good)
    out = np.where((den > 0) & ~flags, num / np.where(den > 0, den, 1), 0)
    return out.astype(np.complex64)
