"""Basic flagging (CPU): zeros and non-finite values, autocorrelations, a robust MAD clip, and
flag extension. The full SumThreshold flagger with its GPU twin is a later stage.

All functions take and return numpy arrays; ``flags`` is True for bad data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FlagStats", "flag_basic", "flag_stats"]


@dataclass(frozen=True)
class FlagStats:
    fraction: float  # over cross-correlations
    per_antenna: np.ndarray  # (nant_telescope,) fraction, NaN for antennas not in the data
    per_channel: np.ndarray  # (nchan,)
    per_time: np.ndarray  # (ntime,)
    new_by_mad: int  # samples the MAD clip flagged


def _mad_clip(amp: np.ndarray, flags: np.ndarray, threshold_sigma: float) -> np.ndarray:
    """Per (baseline, polarization): flag |amp - median| > threshold * 1.4826 * MAD over
    (time, channel) of the unflagged samples. amp, flags: (ntime, nbl, nchan, npol)."""
    a = np.where(flags, np.nan, amp).transpose(1, 3, 0, 2).reshape(amp.shape[1], amp.shape[3], -1)
    med = np.nanmedian(a, axis=-1, keepdims=True)
    mad = np.nanmedian(np.abs(a - med), axis=-1, keepdims=True)
    sigma = 1.4826 * mad
    with np.errstate(invalid="ignore"):
        bad = np.abs(a - med) > threshold_sigma * np.where(sigma > 0, sigma, np.inf)
    return bad.reshape(amp.shape[1], amp.shape[3], amp.shape[0], amp.shape[2]).transpose(2, 0, 3, 1)


def flag_basic(*, vis: np.ndarray, flags: np.ndarray, ant1: np.ndarray, ant2: np.ndarray,
               flag_autocorrelations: bool, mad_threshold_sigma: float,
               extend_fraction: float) -> tuple[np.ndarray, int]:
    """New flags (ntime, nbl, nchan, npol) bool and the count the MAD clip added.

    vis: (ntime, nbl, nchan, npol) complex64; flags: same shape bool (kept: a flag is never
    cleared). ant1, ant2: (nbl,). A time (per baseline) or a channel (per baseline) with more
    than ``extend_fraction`` of its samples flagged is flagged whole.
    """
    out = flags | (vis == 0) | ~np.isfinite(vis)
    autos = ant1 == ant2
    if flag_autocorrelations:
        out[:, autos] = True
    cross = ~autos
    amp = np.abs(vis[:, cross])
    before = out[:, cross].copy()
    clipped = _mad_clip(amp, before, mad_threshold_sigma)
    new_by_mad = int(np.count_nonzero(clipped & ~before))
    sub = before | clipped
    frac_t = sub.mean(axis=2, keepdims=True)  # per (time, baseline, pol) over channels
    frac_c = sub.mean(axis=0, keepdims=True)  # per (baseline, channel, pol) over time
    sub |= (frac_t > extend_fraction) | (frac_c > extend_fraction)
    out[:, cross] = sub
    return out, new_by_mad


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
