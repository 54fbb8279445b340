"""Gain calibration on a transiting calibrator (CPU): model, StEFCal-type solve, apply.

Measurement equation per channel c and polarization p (XX, YY), baseline (i, j) = (ant1, ant2):
``V_ij(t) = g_i conj(g_j) M_ij(t)``, with ``M`` the calibrator (a point source from the VLA list,
seen through the Airy beam). One complex gain per antenna, channel and polarization (a bandpass
with the gain folded in) is solved over the whole group with the alternating least-squares
update of StEFCal (Salvini & Wijnholds 2014), each channel and polarization on its own (in
parallel, numba), each stopping when its own update is below the tolerance:

``g_i <- sum_j g_j C_ij / sum_j |g_j|^2 P_ij``, ``C_ij = sum_t w conj(M_ij) V_ij``,
``P_ij = sum_t w |M_ij|^2``; every second update is averaged with the previous one.

Phases are referred to a reference antenna (with fallbacks); solutions with SNR below a
threshold are flagged. Applying divides ``V_ij`` by ``g_i conj(g_j)``; a flagged gain flags its
baselines.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numba
import numpy as np

from contimg.calibrators import Calibrator
from contimg.chunk import VisChunk
from contimg.skymodel import PointSources, sky_visibilities

log = logging.getLogger(__name__)

__all__ = ["GainSolution", "calibrator_model", "solve_gains", "apply_gains"]


@dataclass
class GainSolution:
    """Per-antenna complex gains (bandpass and gain in one) for one group."""

    antenna_numbers: np.ndarray  # (nant,) int
    freq_hz: np.ndarray  # (nchan,) ascending
    gains: np.ndarray  # (nant, nchan, npol) complex64
    flags: np.ndarray  # (nant, nchan, npol) bool
    snr: np.ndarray  # (nant, nchan, npol) float32
    refant: str
    mid_jd: float
    calibrator: str
    group_id: str
    iterations: int = 0
    meta: dict = field(default_factory=dict)


def calibrator_model(*, chunk: VisChunk, calibrators: list[Calibrator],
                     field_sources: PointSources | None = None, baselines: np.ndarray | None = None) -> np.ndarray:
    """Model visibilities (ntime, nbl, nchan) complex64 (XX = YY) of listed calibrators — the
    transiting one and any other bright listed source in the beam — plus the field's sources
    of the sky catalogue (``field_sources``), each through the primary beam.

    ``baselines`` (nbl,) bool: predict only these, the others are 0 (`solve_gains` reads only
    the baselines it selects, e.g. ``baseline_m >= min_baseline_m``, and the prediction costs
    the same per baseline)."""
    src = PointSources.from_calibrators(calibrators)
    if field_sources is not None and len(field_sources):
        src = PointSources.concat([src, field_sources])
    b_enu = chunk.antenna_enu_m[chunk.ant2] - chunk.antenna_enu_m[chunk.ant1]
    if baselines is None:
        return sky_visibilities(sources=src, time_jd=chunk.time_jd, freq_hz=chunk.freq_hz, b_enu_m=b_enu,
                                pointing_dec_rad=chunk.pointing_dec_rad)
    baselines = np.asarray(baselines, bool)
    out = np.zeros((chunk.time_jd.size, b_enu.shape[0], chunk.freq_hz.size), np.complex64)
    out[:, baselines] = sky_visibilities(sources=src, time_jd=chunk.time_jd, freq_hz=chunk.freq_hz,
                                         b_enu_m=b_enu[baselines], pointing_dec_rad=chunk.pointing_dec_rad)
    return out


# channels per parallel task of the accumulations: the (time, baseline) loop then reads whole
# cache lines of vis (4 channels x 2 pols of complex64 per 64 bytes) instead of one value each
_CHAN_BLOCK = 8


@numba.njit(parallel=True, cache=True, nogil=True)
def _accumulate(vis, model, flags, sel, k1, k2, nant, C, P):
    """C[c, p, i, j] += w conj(M) V and P[c, p, i, j] += w |M|^2 over times and the selected
    baselines (both orientations), per block of channels in parallel (each sum in the order
    time, then baseline)."""
    ntime, nbl, nchan, npol = vis.shape
    bls = np.flatnonzero(sel)
    for blk in numba.prange((nchan + _CHAN_BLOCK - 1) // _CHAN_BLOCK):
        c0 = blk * _CHAN_BLOCK
        c1 = min(c0 + _CHAN_BLOCK, nchan)
        for t in range(ntime):
            for b in bls:
                i, j = k1[b], k2[b]
                for c in range(c0, c1):
                    m = model[t, b, c]
                    mm = m.real * m.real + m.imag * m.imag
                    for p in range(npol):
                        if flags[t, b, c, p]:
                            continue
                        x = np.conj(m) * vis[t, b, c, p]
                        C[c, p, i, j] += x
                        C[c, p, j, i] += np.conj(x)
                        P[c, p, i, j] += mm
                        P[c, p, j, i] += mm


@numba.njit(parallel=True, cache=True, nogil=True)
def _residual_power(vis, model, flags, sel, k1, k2, g, out_sum, out_n):
    """Sum over times and selected baselines of |V - g_i conj(g_j) M|^2, and the count, per
    (channel, pol). g: (nchan, npol, nant). Blocks of channels in parallel, as `_accumulate`."""
    ntime, nbl, nchan, npol = vis.shape
    bls = np.flatnonzero(sel)
    for blk in numba.prange((nchan + _CHAN_BLOCK - 1) // _CHAN_BLOCK):
        c0 = blk * _CHAN_BLOCK
        c1 = min(c0 + _CHAN_BLOCK, nchan)
        for t in range(ntime):
            for b in bls:
                for c in range(c0, c1):
                    for p in range(npol):
                        if flags[t, b, c, p]:
                            continue
                        r = vis[t, b, c, p] - g[c, p, k1[b]] * np.conj(g[c, p, k2[b]]) * model[t, b, c]
                        out_sum[c, p] += r.real * r.real + r.imag * r.imag
                        out_n[c, p] += 1.0


@numba.njit(parallel=True, cache=True, nogil=True)
def _stefcal(C, P, pi, pj, max_iter, tolerance, g, change, iters):
    """StEFCal for each (channel, polarization) independently, in parallel; each stops when its
    own ||g_new - g|| / ||g_new|| is below ``tolerance`` (or after ``max_iter``).

    ``g_i <- sum_j C_ij g_j / sum_j P_ij |g_j|^2`` (0 where the denominator is 0), every second
    update averaged with the previous one. C: (nchan, npol, nant, nant) complex128, P: same
    float64, both zero except at the antenna pairs (pi[e], pj[e]) and (pj[e], pi[e]) (each pair
    once, pi != pj): the sums run over those only (the selected baselines are a fraction of all
    pairs); g: (nchan, npol, nant) complex128, the start in, the solution out; change: (nchan,
    npol) the last relative change; iters: (nchan, npol) the iterations run."""
    nchan, npol, nant, _ = C.shape
    for cp in numba.prange(nchan * npol):
        c, p = cp // npol, cp % npol
        Cc, Pc = C[c, p], P[c, p]
        cur = g[c, p].copy()
        new = np.empty(nant, np.complex128)
        amp2 = np.empty(nant)
        num = np.empty(nant, np.complex128)
        den = np.empty(nant)
        it = 0
        ch = 0.0
        for it in range(1, max_iter + 1):
            for j in range(nant):
                amp2[j] = cur[j].real * cur[j].real + cur[j].imag * cur[j].imag
            num[:] = 0j
            den[:] = 0.0
            for e in range(pi.size):
                i, j = pi[e], pj[e]
                num[i] += Cc[i, j] * cur[j]
                den[i] += Pc[i, j] * amp2[j]
                num[j] += Cc[j, i] * cur[i]
                den[j] += Pc[j, i] * amp2[i]
            dn, nn = 0.0, 0.0
            for i in range(nant):
                x = num[i] / den[i] if den[i] > 0 else 0j
                if it % 2 == 0:
                    x = 0.5 * (x + cur[i])
                d = x - cur[i]
                dn += d.real * d.real + d.imag * d.imag
                nn += x.real * x.real + x.imag * x.imag
                new[i] = x
            cur[:] = new
            ch = np.sqrt(dn) / max(np.sqrt(nn), 1e-30)
            if ch < tolerance:
                break
        g[c, p] = cur
        change[c, p] = ch
        iters[c, p] = it


def _antenna_index(ant1: np.ndarray, ant2: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    numbers = np.unique(np.concatenate([ant1, ant2]))
    lookup = {a: k for k, a in enumerate(numbers)}
    return numbers, np.array([lookup[a] for a in ant1]), np.array([lookup[a] for a in ant2])


def solve_gains(*, vis: np.ndarray, model: np.ndarray, flags: np.ndarray, ant1: np.ndarray, ant2: np.ndarray,
                antenna_names: np.ndarray, refants: list[str], max_iter: int = 200, tolerance: float = 1e-6,
                min_snr: float = 5.0, baseline_m: np.ndarray | None = None, min_baseline_m: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str, int]:
    """Solve one gain per antenna, channel and polarization over all times.

    vis: (ntime, nbl, nchan, npol) complex64; model: (ntime, nbl, nchan) complex (same for each
    pol); flags: like vis (True = bad; autocorrelations are ignored). antenna_names indexed by
    antenna number; refants: names in order of preference. Baselines shorter than
    ``min_baseline_m`` (lengths ``baseline_m`` (nbl,)) are left out: there the unmodelled sky is
    least averaged out by the fringes and biases the solution.
    Returns (antenna_numbers (nant,), gains (nant, nchan, npol) complex64, gain_flags bool,
    snr float32, the reference antenna used, iterations).
    """
    numbers, k1, k2 = _antenna_index(ant1, ant2)
    nant, (_, _, nchan, npol) = numbers.size, vis.shape
    sel = k1 != k2
    if baseline_m is not None and min_baseline_m > 0:
        sel &= baseline_m >= min_baseline_m
    C = np.zeros((nchan, npol, nant, nant), np.complex128)
    P = np.zeros((nchan, npol, nant, nant), np.float64)
    _accumulate(vis, np.ascontiguousarray(model, np.complex64), flags, sel, k1, k2, nant, C, P)
    g = np.ones((nchan, npol, nant), np.complex128)
    change = np.zeros((nchan, npol))
    iters = np.zeros((nchan, npol), np.int64)
    pairs = np.unique(np.stack([np.minimum(k1, k2), np.maximum(k1, k2)], axis=1)[sel], axis=0)
    _stefcal(C, P, pairs[:, 0].copy(), pairs[:, 1].copy(), max_iter, tolerance, g, change, iters)
    it = int(iters.max())
    # a channel/polarization still moving by more than 1e-3 after max_iter is ill-constrained
    # (mostly flagged): its solutions are not trusted
    unconverged = change > max(1e3 * tolerance, 1e-3)  # (c, p)
    if unconverged.any():
        log.warning("gains of %d channel/polarization pairs did not converge in %d iterations: flagged",
                    int(unconverged.sum()), it)
    alive = (np.abs(g) > 0) & ~unconverged[:, :, None]
    # reference antenna: the first of refants that has solutions in most channels
    refant, ref_k = None, None
    for name in refants + [str(n) for n in antenna_names[numbers]]:
        hits = np.flatnonzero(antenna_names[numbers] == name)
        if hits.size and alive[:, :, hits[0]].mean() > 0.9:
            refant, ref_k = name, hits[0]
            break
    if ref_k is not None:
        ref = g[:, :, ref_k]
        g = g * np.where(np.abs(ref) > 0, np.conj(ref) / np.where(np.abs(ref) > 0, np.abs(ref), 1), 1)[:, :, None]
    # noise from the residual, SNR per gain
    resid2 = np.zeros((nchan, npol))
    count = np.zeros((nchan, npol))
    _residual_power(vis, np.ascontiguousarray(model, np.complex64), flags, sel, k1, k2, g, resid2, count)
    var = resid2 / np.maximum(count - nant, 1)  # per visibility (complex) variance
    info = np.einsum("cpij,cpj->cpi", P, np.abs(g) ** 2)  # sum_j |g_j|^2 P_ij
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.abs(g) / np.sqrt(var[:, :, None] / np.where(info > 0, info, np.inf))
    snr = np.nan_to_num(snr, nan=0.0, posinf=0.0)
    gflags = (~alive) | (snr < min_snr)
    return (numbers, g.transpose(2, 0, 1).astype(np.complex64), gflags.transpose(2, 0, 1),
            snr.transpose(2, 0, 1).astype(np.float32), refant or "", it)


def smooth_over_channels(*, gains: np.ndarray, flags: np.ndarray, window: int) -> np.ndarray:
    """Running mean of complex gains over ``window`` channels (odd), ignoring flagged ones.

    gains, flags: (nant, nchan, npol). A bandpass is smooth across a few channels while the
    noise, and the unmodelled sky's contribution to a per-channel solution, are not.
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


def apply_gains(*, vis: np.ndarray, flags: np.ndarray, ant1: np.ndarray, ant2: np.ndarray,
                antenna_numbers: np.ndarray, gains: np.ndarray, gain_flags: np.ndarray) -> None:
    """In place: ``vis /= g_i conj(g_j)``; flags where either gain is flagged or missing.

    vis, flags: (ntime, nbl, nchan, npol); gains, gain_flags: (nant, nchan, npol) for
    ``antenna_numbers``.
    """
    lookup = {a: k for k, a in enumerate(antenna_numbers)}
    missing = np.array([a not in lookup or b not in lookup for a, b in zip(ant1, ant2)])
    k1 = np.array([lookup.get(a, 0) for a in ant1])
    k2 = np.array([lookup.get(b, 0) for b in ant2])
    gg = gains[k1] * np.conj(gains[k2])  # (nbl, nchan, npol)
    bad = gain_flags[k1] | gain_flags[k2] | (np.abs(gg) == 0) | missing[:, None, None]
    inv = np.where(bad, 0, 1.0 / np.where(bad, 1, gg)).astype(np.complex64)
    vis *= inv[None]
    flags |= bad[None]
