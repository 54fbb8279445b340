"""Applying solutions: ``V_ij / (g_i conj(g_j))`` with the bandpass and, per integration, the
time-dependent gains; a flagged or missing gain flags its baselines."""

from __future__ import annotations

import numpy as np

from contimg.calibrate import cpu as _cpu
from contimg.calibrate.solution import GainSolution, TimeGains

__all__ = ["apply_gains", "apply_gains_xp", "time_gains_at", "fold_time_gains"]

_BLOCK_BYTES = 256 * 2**20  # temporaries per block of integrations (the device path)


def _interp_index(t: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each time, the bracketing interval indices (left, right; clamped at the ends) and
    the weight of the right one."""
    n = centres.size
    r = np.clip(np.searchsorted(centres, t, side="right"), 0, n - 1)
    left = np.clip(r - 1, 0, n - 1)
    right = np.where(t <= centres[0], 0, r)
    span = centres[right] - centres[left]
    w = np.where(span > 0, (t - centres[left]) / np.where(span > 0, span, 1), 0.0)
    return left, right, np.clip(w, 0.0, 1.0)


def time_gains_at(tg: TimeGains, time_jd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The gains of ``tg`` at each of ``time_jd`` (ntime,): amplitude and phase interpolated
    linearly between the interval centres (the phase step taken in (-π, π]), held at the first
    and last centre beyond them; where one of the two bracketing solutions is flagged, the
    other is used; both flagged → flagged. Returns (gains (ntime, nant, npol) complex64,
    flags bool)."""
    t = np.asarray(time_jd, float)
    left, right, w = _interp_index(t, np.asarray(tg.time_jd, float))
    g0, g1 = tg.gains[left].astype(np.complex128), tg.gains[right].astype(np.complex128)
    f0, f1 = tg.flags[left], tg.flags[right]
    w = np.broadcast_to(w[:, None, None], g0.shape)
    w = np.where(f0 & ~f1, 1.0, np.where(f1 & ~f0, 0.0, w))
    amp = (1 - w) * np.abs(g0) + w * np.abs(g1)
    phase = np.angle(g0) + w * np.angle(g1 * np.conj(g0))
    flags = f0 & f1
    return np.where(flags, 0, amp * np.exp(1j * phase)).astype(np.complex64), flags


def fold_time_gains(sol: GainSolution, tg: TimeGains, *, mid_jd: float) -> GainSolution:
    """The bandpass times the time gain of the interval nearest ``mid_jd`` (a group with no
    calibrator of its own gets one gain per antenna, channel and polarization); the result's
    ``mid_jd`` is that interval's time, so its age and any interpolation count from when the
    gain was measured. ``tg`` must be solved after ``sol`` (same set, same antennas)."""
    if not np.array_equal(sol.antenna_numbers, tg.antenna_numbers):
        raise ValueError(f"time gains of {tg.group_id} and bandpass of {sol.group_id} have different antennas")
    k = int(np.argmin(np.abs(np.asarray(tg.time_jd) - mid_jd)))
    g = tg.gains[k]  # (nant, npol)
    gains = (sol.gains * g[:, None, :]).astype(np.complex64)
    flags = sol.flags | tg.flags[k][:, None, :]
    return GainSolution(sol.antenna_numbers, sol.freq_hz, np.where(flags, 0, gains), flags, sol.snr, sol.refant,
                        float(tg.time_jd[k]), sol.calibrator, sol.group_id, sol.iterations,
                        {**sol.meta, "time_gain_jd": float(tg.time_jd[k])})


def apply_gains(*, vis: np.ndarray, flags: np.ndarray, ant1: np.ndarray, ant2: np.ndarray,
                antenna_numbers: np.ndarray, gains: np.ndarray, gain_flags: np.ndarray,
                time_gains: np.ndarray | None = None, time_gain_flags: np.ndarray | None = None,
                xp=None) -> None:
    """In place: ``vis /= g_i conj(g_j)``; flags where either gain is flagged or missing.

    vis, flags: (ntime, nbl, nchan, npol); gains, gain_flags: (nant, nchan, npol) for
    ``antenna_numbers`` (the bandpass); time_gains, time_gain_flags: (ntime, nant, npol) for
    the same antennas, one per integration (`time_gains_at`), or None.
    ``xp``: None or numpy, the numba twin (the CPU path); cupy (or the twin module), the device
    path's array code (`apply_gains_xp`) on ``vis``/``flags`` where they live.
    """
    if xp is not None and xp is not np:
        apply_gains_xp(xp=xp, vis=vis, flags=flags, ant1=ant1, ant2=ant2, antenna_numbers=antenna_numbers,
                       gains=gains, gain_flags=gain_flags, time_gains=time_gains, time_gain_flags=time_gain_flags)
        return
    lookup = {a: k for k, a in enumerate(antenna_numbers)}
    missing = np.array([a not in lookup or b not in lookup for a, b in zip(ant1, ant2)])
    k1 = np.array([lookup.get(a, 0) for a in ant1])
    k2 = np.array([lookup.get(b, 0) for b in ant2])
    gg = gains[k1] * np.conj(gains[k2])  # (nbl, nchan, npol)
    bad = gain_flags[k1] | gain_flags[k2] | (np.abs(gg) == 0) | missing[:, None, None]
    inv = np.where(bad, 0, 1.0 / np.where(bad, 1, gg)).astype(np.complex64)
    if time_gains is None:
        inv_t = np.ones((1, k1.size, gains.shape[2]), np.complex64)
        bad_t = np.zeros(inv_t.shape, bool)
    else:
        if time_gains.shape[0] != vis.shape[0]:
            raise ValueError(f"time gains for {time_gains.shape[0]} integrations, data have {vis.shape[0]}")
        gt = time_gains[:, k1] * np.conj(time_gains[:, k2])  # (ntime, nbl, npol)
        bad_t = time_gain_flags[:, k1] | time_gain_flags[:, k2] | (np.abs(gt) == 0) | missing[None, :, None]
        inv_t = np.where(bad_t, 0, 1.0 / np.where(bad_t, 1, gt)).astype(np.complex64)
    _cpu.apply_inverse(vis, flags, inv, bad, inv_t, bad_t)


def _gain_indices(ant1, ant2, antenna_numbers):
    """(k1, k2, missing) on the host: each baseline's antennas' rows in the solution (0 when
    missing) and whether either has none."""
    lookup = {a: k for k, a in enumerate(antenna_numbers)}
    missing = np.array([a not in lookup or b not in lookup for a, b in zip(ant1, ant2)], bool)
    k1 = np.array([lookup.get(a, 0) for a in ant1], np.int64)
    k2 = np.array([lookup.get(b, 0) for b in ant2], np.int64)
    return k1, k2, missing


def _inverse_products(xp, g, gf, k1, k2, missing, axis: int):
    """``1 / (g_i conj(g_j))`` per baseline (0 where bad) and ``bad``: either gain flagged,
    missing or their product 0. ``axis``: the antenna axis of ``g`` (0 bandpass, 1 time gains)."""
    gi, gj = xp.take(g, k1, axis=axis), xp.take(g, k2, axis=axis)
    gg = gi * xp.conj(gj)
    shape = [1] * gg.ndim
    shape[axis] = missing.size
    bad = xp.take(gf, k1, axis=axis) | xp.take(gf, k2, axis=axis) | (xp.abs(gg) == 0) | missing.reshape(shape)
    return xp.where(bad, 0, 1.0 / xp.where(bad, 1, gg)).astype(np.complex64), bad


def apply_gains_xp(*, xp, vis, flags, ant1: np.ndarray, ant2: np.ndarray, antenna_numbers: np.ndarray,
                   gains: np.ndarray, gain_flags: np.ndarray, time_gains: np.ndarray | None = None,
                   time_gain_flags: np.ndarray | None = None) -> None:
    """`apply_gains` as array code on ``xp`` (the device path), in place on ``vis`` and
    ``flags`` (arrays of ``xp``): the same inverse products (complex64) as the numba twin, the
    same order of the multiplications (``vis * (inv * inv_t)``), in blocks of integrations.
    Only the solutions (small) are uploaded."""
    k1, k2, missing = _gain_indices(ant1, ant2, antenna_numbers)
    k1d, k2d, miss_d = xp.asarray(k1), xp.asarray(k2), xp.asarray(missing)
    inv, bad = _inverse_products(xp, xp.asarray(gains), xp.asarray(gain_flags), k1d, k2d, miss_d, 0)
    if time_gains is not None:
        if time_gains.shape[0] != vis.shape[0]:
            raise ValueError(f"time gains for {time_gains.shape[0]} integrations, data have {vis.shape[0]}")
        inv_t, bad_t = _inverse_products(xp, xp.asarray(time_gains), xp.asarray(time_gain_flags), k1d, k2d, miss_d, 1)
    ntime, nbl, nchan, npol = vis.shape
    step = max(1, _BLOCK_BYTES // max(nbl * nchan * npol * 8, 1))
    for t0 in range(0, ntime, step):
        ts = slice(t0, min(t0 + step, ntime))
        if time_gains is None:
            vis[ts] *= inv[None]
            flags[ts] |= bad[None]
        else:
            vis[ts] *= inv[None] * inv_t[ts][:, :, None, :]
            flags[ts] |= bad[None] | bad_t[ts][:, :, None, :]
