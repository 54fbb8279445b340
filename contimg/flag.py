"""Basic flagging (CPU): zeros and non-finite values, autocorrelations, a robust MAD clip, and
flag extension. The full SumThreshold flagger with its GPU twin is a later stage.

All functions take and return numpy arrays; ``flags`` is True for bad data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

__all__ = ["FlagStats", "flag_basic", "flag_stats"]


@dataclass(frozen=True)
class FlagStats:
    fraction: float  # over cross-correlations
    per_antenna: np.ndarray  # (nant_telescope,) fraction, NaN for antennas not in the data
    per_channel: np.ndarray  # (nchan,)
    per_time: np.ndarray  # (ntime,)
    new_by_mad: int  # samples the MAD clip flagged


@numba.njit(parallel=True, cache=True, nogil=True)
def _flag_kernel(vis, flags, autos, flag_autos, threshold, extend_fraction, out, n_mad):
    """Everything per (baseline, polarization) slab of (time, channel), in parallel:
    keep flags; flag zeros and non-finite values (and autocorrelations); MAD clip of |V|;
    extend flags over a time or a channel mostly flagged."""
    ntime, nbl, nchan, npol = vis.shape
    for bp in numba.prange(nbl * npol):
        b = bp // npol
        p = bp % npol
        if autos[b] and flag_autos:
            for t in range(ntime):
                for c in range(nchan):
                    out[t, b, c, p] = True
            continue
        buf = np.empty(ntime * nchan, np.float64)
        n = 0
        for t in range(ntime):
            for c in range(nchan):
                v = vis[t, b, c, p]
                bad = flags[t, b, c, p] or (v.real == 0 and v.imag == 0) or not (
                    np.isfinite(v.real) and np.isfinite(v.imag))
                out[t, b, c, p] = bad
                if not bad:
                    buf[n] = abs(v)
                    n += 1
        if autos[b]:
            continue
        if n >= 3:
            med = np.median(buf[:n])
            sigma = 1.4826 * np.median(np.abs(buf[:n] - med))
            if sigma > 0:
                limit = threshold * sigma
                for t in range(ntime):
                    for c in range(nchan):
                        if not out[t, b, c, p] and abs(abs(vis[t, b, c, p]) - med) > limit:
                            out[t, b, c, p] = True
                            n_mad[bp] += 1
        row = np.zeros(ntime, np.bool_)
        col = np.zeros(nchan, np.bool_)
        for t in range(ntime):
            k = 0
            for c in range(nchan):
                k += out[t, b, c, p]
            row[t] = k > extend_fraction * nchan
        for c in range(nchan):
            k = 0
            for t in range(ntime):
                k += out[t, b, c, p]
            col[c] = k > extend_fraction * ntime
        for t in range(ntime):
            for c in range(nchan):
                if row[t] or col[c]:
                    out[t, b, c, p] = True


def flag_basic(*, vis: np.ndarray, flags: np.ndarray, ant1: np.ndarray, ant2: np.ndarray,
               flag_autocorrelations: bool, mad_threshold_sigma: float,
               extend_fraction: float) -> tuple[np.ndarray, int]:
    """New flags (ntime, nbl, nchan, npol) bool and the count the MAD clip added.

    vis: (ntime, nbl, nchan, npol) complex64; flags: same shape bool (kept: a flag is never
    cleared). ant1, ant2: (nbl,). Per baseline and polarization: zeros and non-finite values
    are flagged; |V| further than ``mad_threshold_sigma`` robust sigmas (1.4826 MAD over time
    and channel) from its median is clipped; a time or a channel with more than
    ``extend_fraction`` of its samples flagged is flagged whole.
    """
    out = np.empty(vis.shape, bool)
    n_mad = np.zeros(vis.shape[1] * vis.shape[3], np.int64)
    _flag_kernel(vis, flags, ant1 == ant2, bool(flag_autocorrelations), float(mad_threshold_sigma),
                 float(extend_fraction), out, n_mad)
    return out, int(n_mad.sum())


def flag_stats(*, flags: np.ndarray, ant1: np.ndarray, ant2: np.ndarray, n_antennas: int,
               new_by_mad: int = 0) -> FlagStats:
    """Flag fractions over cross-correlations, per antenna (by number), channel and time."""
    cross = ant1 != ant2
    f = flags[:, cross]
    per_bl = f.mean(axis=(0, 2, 3))
    a1, a2 = ant1[cross], ant2[cross]
    tot = np.bincount(a1, per_bl, n_antennas) + np.bincount(a2, per_bl, n_antennas)
    cnt = np.bincount(a1, None, n_antennas) + np.bincount(a2, None, n_antennas)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_ant = np.where(cnt > 0, tot / cnt, np.nan)
    return FlagStats(fraction=float(f.mean()), per_antenna=per_ant, per_channel=f.mean(axis=(0, 1, 3)),
                     per_time=f.mean(axis=(1, 2, 3)), new_by_mad=new_by_mad)
