"""Flux-density scale for a classic (VLA-style) calibration: a flux calibrator's bandpass, per-scan
gains on it and on a secondary calibrator, and the transfer of the flux scale to the secondary.

The same steps as CASA's ``setjy`` / ``bandpass`` / ``gaincal`` / ``fluxscale``, built on
:func:`contimg.calibrate.solve_gains` (one complex gain per antenna, channel and polarization
over all the times given, ``V_ij = g_i conj(g_j) M_ij``):

- :func:`perley_butler_2017_3c286`: the flux calibrator's model (Perley & Butler 2017).
- :func:`solve_bandpass`: ``solve_gains`` over all of the flux calibrator's times, per channel,
  with a point-source model at the phase centre. Not normalised (CASA's ``solnorm=False``): the
  bandpass carries each antenna's amplitude and phase during that scan too.
- :func:`solve_scan_gain`: one gain per antenna and polarization per scan, the bandpass applied,
  on the data and model averaged over a channel range first (what ``gaincal`` does with one
  solution over a channel range: it averages the channels, then solves).
- :func:`flux_transfer`: CASA's ``fluxscale``: per antenna and polarization, the mean gain
  amplitude over the secondary's solutions over that over the flux calibrator's; the flux density
  is the median of those ratios, squared.
- :func:`split_scans`: scans from field changes and time gaps (pyuvdata does not keep the
  scan numbers of a UVFITS file).

Units: frequencies in Hz, flux densities in Jy, times in seconds. Antenna axes follow
``solve_gains``: the sorted antenna numbers present in ``ant1``/``ant2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contimg.calibrate import apply_gains, solve_gains

__all__ = ["PB2017_3C286", "perley_butler_2017_3c286", "split_scans", "solve_bandpass", "solve_scan_gain",
           "channel_average", "FluxTransfer", "flux_transfer"]

# Perley & Butler 2017 (ApJS 230, 7), table 6, 3C286: log10(S / Jy) = sum_k a_k log10(nu / GHz)^k
PB2017_3C286 = (1.2481, -0.4507, -0.1798, 0.0357)


def perley_butler_2017_3c286(*, freq_hz: np.ndarray | float) -> np.ndarray:
    """3C286's Stokes I flux density (Jy, float64, shape of ``freq_hz``) on the Perley-Butler 2017
    scale (valid 50 MHz - 50 GHz)."""
    x = np.log10(np.asarray(freq_hz, np.float64) / 1e9)
    return 10.0 ** sum(a * x**k for k, a in enumerate(PB2017_3C286))


def split_scans(*, time_s: np.ndarray, field: np.ndarray, max_gap_s: float) -> np.ndarray:
    """Scan number (int64, from 1) of each row: a new scan starts where the field changes or the
    time steps forward by more than ``max_gap_s`` between consecutive distinct times.

    time_s: (nrow,) seconds, any order; field: (nrow,) field ids. Rows of one time must share a
    field.
    """
    time_s = np.asarray(time_s, np.float64)
    ut, inv = np.unique(time_s, return_inverse=True)
    first = np.zeros(ut.size, np.int64)
    first[inv[::-1]] = np.arange(time_s.size)[::-1]  # a row of each distinct time
    f = np.asarray(field)[first]
    new = np.ones(ut.size, bool)
    new[1:] = (np.diff(ut) > max_gap_s) | (f[1:] != f[:-1])
    return np.cumsum(new)[inv]


def solve_bandpass(*, vis: np.ndarray, flags: np.ndarray, ant1: np.ndarray, ant2: np.ndarray,
                   model_jy: np.ndarray, antenna_names: np.ndarray, refant: str, min_snr: float = 3.0,
                   tolerance: float = 1e-8, max_iter: int = 500) -> dict:
    """Bandpass on a point source at the phase centre: one complex gain per antenna, channel and
    polarization over all the times given (``solve_gains`` with model ``M_ij(t, c) = model_jy[c]``).

    vis, flags: (ntime, nbl, nchan, npol) complex64 / bool (True = bad); ant1, ant2: (nbl,)
    antenna numbers; model_jy: (nchan,) the source's flux density per channel (Jy);
    antenna_names indexed by antenna number; refant: its name (phases referred to it per channel).
    Returns dict: antenna_numbers (nant,), gains (nant, nchan, npol) complex64, flags, snr,
    refant, iterations.
    """
    ntime, nbl, nchan, _ = vis.shape
    model = np.broadcast_to(np.asarray(model_jy, np.complex64)[None, None, :], (ntime, nbl, nchan))
    numbers, g, gf, snr, ref, it = solve_gains(vis=vis, model=np.ascontiguousarray(model), flags=flags, ant1=ant1,
                                                ant2=ant2, antenna_names=antenna_names, refants=[refant],
                                                max_iter=max_iter, tolerance=tolerance, min_snr=min_snr)
    return {"antenna_numbers": numbers, "gains": g, "flags": gf, "snr": snr, "refant": ref, "iterations": it}


def channel_average(*, vis: np.ndarray, flags: np.ndarray, model_jy: np.ndarray,
                    chan_lo: int, chan_hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unflagged mean over channels ``chan_lo..chan_hi`` (inclusive) of data and model.

    vis, flags: (ntime, nbl, nchan, npol); model_jy: (nchan,). The model is averaged with the
    weights of the data's unflagged samples (both polarizations together), so that it matches the
    averaged data. Returns vis (ntime, nbl, 1, npol) complex64, flags (ntime, nbl, 1, npol) bool
    (no unflagged channel), model (ntime, nbl, 1) complex64.
    """
    sl = slice(chan_lo, chan_hi + 1)
    v, f = vis[:, :, sl, :], flags[:, :, sl, :]
    good = ~f
    n = good.sum(axis=2)  # (ntime, nbl, npol)
    avg = np.where(good, v, 0).sum(axis=2) / np.maximum(n, 1)
    m = np.asarray(model_jy, np.float64)[sl]
    w = good.sum(axis=3).astype(np.float64)  # (ntime, nbl, nchan_sel)
    mavg = (w * m).sum(axis=2) / np.maximum(w.sum(axis=2), 1)
    return (avg[:, :, None, :].astype(np.complex64), (n == 0)[:, :, None, :],
            mavg[:, :, None].astype(np.complex64))


def solve_scan_gain(*, vis: np.ndarray, flags: np.ndarray, ant1: np.ndarray, ant2: np.ndarray,
                    model_jy: np.ndarray, bandpass: dict | None, chan_lo: int, chan_hi: int,
                    antenna_names: np.ndarray, refant: str, min_snr: float = 1.0,
                    tolerance: float = 1e-8, max_iter: int = 500) -> dict:
    """Amplitude-and-phase gain, one per antenna and polarization, over one scan's times.

    The bandpass (a :func:`solve_bandpass` result) is divided out of a copy of the data first;
    then data and model are averaged over channels ``chan_lo..chan_hi`` (:func:`channel_average`)
    and ``solve_gains`` solves the single averaged channel: CASA ``gaincal`` with one solution
    over a channel range does the same (average, then solve).

    vis, flags: (ntime, nbl, nchan, npol); model_jy: (nchan,) Jy (1 for a source of unknown flux
    density: its gains then carry sqrt(S)). Returns dict: antenna_numbers (nant,), gains
    (nant, npol) complex64, flags (nant, npol), snr (nant, npol), refant, iterations.
    """
    v, f = vis.copy(), flags.copy()
    if bandpass is not None:
        apply_gains(vis=v, flags=f, ant1=ant1, ant2=ant2, antenna_numbers=bandpass["antenna_numbers"],
                    gains=bandpass["gains"], gain_flags=bandpass["flags"])
    va, fa, ma = channel_average(vis=v, flags=f, model_jy=model_jy, chan_lo=chan_lo, chan_hi=chan_hi)
    numbers, g, gf, snr, ref, it = solve_gains(vis=va, model=ma, flags=fa, ant1=ant1, ant2=ant2,
                                                antenna_names=antenna_names, refants=[refant], max_iter=max_iter,
                                                tolerance=tolerance, min_snr=min_snr)
    return {"antenna_numbers": numbers, "gains": g[:, 0, :], "flags": gf[:, 0, :], "snr": snr[:, 0, :],
            "refant": ref, "iterations": it}


@dataclass(frozen=True)
class FluxTransfer:
    """Result of :func:`flux_transfer`."""

    flux_jy: float  # the secondary's flux density: median(ratio) ** 2
    flux_err_jy: float  # CASA's: 2 * std(ratio, ddof=1) / sqrt(n - 1)
    n: int  # antenna-polarization ratios used
    ratio: np.ndarray  # (nant, npol) float64 mean-amplitude ratio secondary / flux calibrator; NaN = unused


def flux_transfer(*, ref_amp: np.ndarray, ref_flags: np.ndarray, tran_amp: np.ndarray,
                  tran_flags: np.ndarray) -> FluxTransfer:
    """Flux density of a secondary calibrator from gain amplitudes, as CASA's ``fluxscale``.

    ref_amp, ref_flags: (nsol_ref, nant, npol) gain amplitudes |g| (and flags, True = bad) of the
    flux calibrator's solutions, solved with its true model; tran_amp, tran_flags:
    (nsol_tran, nant, npol) of the secondary's, solved with a 1 Jy model. Same antenna order.
    Per antenna and polarization: the mean of the unflagged amplitudes over each field's
    solutions, and their ratio r = mean_tran / mean_ref (where both exist and mean_ref > 0). The
    flux density is median(r)^2 (the median of an even count: the mean of the two middle values);
    its error, as CASA 6 computes it (``SolvableVisJones::fluxscale``), 2 std(r) / sqrt(n - 1)
    with std's n - 1 denominator (0 for n = 1). Only the amplitudes matter: a bandpass common to
    both fields cancels in r.
    """
    def mean_amp(a, f):
        a = np.where(f, 0.0, np.asarray(a, np.float64))
        n = (~f).sum(axis=0)
        return np.where(n > 0, a.sum(axis=0) / np.maximum(n, 1), np.nan)

    mr = mean_amp(ref_amp, np.asarray(ref_flags, bool))
    mt = mean_amp(tran_amp, np.asarray(tran_flags, bool))
    ok = np.isfinite(mr) & np.isfinite(mt) & (mr > 0)
    ratio = np.where(ok, mt / np.where(ok, mr, 1.0), np.nan)
    r = ratio[ok]
    if r.size == 0:
        raise ValueError("flux_transfer: no antenna-polarization with solutions on both fields")
    med = float(np.median(r))
    err = 0.0 if r.size == 1 else float(2.0 * np.std(r, ddof=1) / np.sqrt(r.size - 1))
    return FluxTransfer(flux_jy=med * med, flux_err_jy=err, n=int(r.size), ratio=ratio)
