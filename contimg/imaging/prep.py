"""Visibilities ready for gridding: cross-correlations rephased from the drift (HA 0) phase
centre of each integration to one fixed ICRS phase centre, Stokes I = (XX + YY) / 2.

For baseline ``b`` (ENU), drift centre ``s0`` and new centre ``s1(t)`` (ENU unit vectors):
``V1 = V0 * exp(+2 pi i f/c * b . (s0 - s1))`` and ``uvw1 = b . (u_hat, v_hat, w_hat)`` of the
ICRS tangent basis at ``s1`` (see `contimg.sky.geometry`). uvw are recomputed in float64 from the
antenna positions, not taken from the files' float32 values.
"""

from __future__ import annotations

import numba
import numpy as np

from contimg.io.chunk import VisChunk
from contimg.device.memory import empty_resident, mapped_empty, populate_pages, release_pages
from contimg.sky.geometry import C_M_S, hadec_to_enu, icrs_basis

__all__ = ["rephase_stokes_i", "rephase_geometry", "rephase_stokes_i_xp", "average_channels", "channel_frequencies",
           "time_factors", "average_times", "weight_per_time"]

_BLOCK_BYTES = 256 * 2**20  # temporaries per block of integrations (the device path)


_ANCHOR = 32  # channels between exact phase rotations in the kernel's recurrence


@numba.njit(parallel=True, cache=True, nogil=True)
def _rephase_kernel(vis, flags, weights, cross_idx, delay_m, freq_hz, uniform_df_hz, two_pi_over_c, factor, out_vis,
                    out_wgt):
    """Stokes I of the cross-correlations ``cross_idx`` of vis (ntime, nbl, nchan, npol), read in
    place (no copy of the selection); the rotation exp(i k f d) advanced channel to channel by
    one complex multiplication when the channels are evenly spaced (``uniform_df_hz`` > 0),
    recomputed exactly every ``_ANCHOR`` channels (and at every channel otherwise).
    ``factor`` adjacent channels are averaged on the way (`average_channels`' weighted mean, in
    complex128): out_vis and out_wgt are (ntime * ncross, nchan // factor)."""
    ntime, nbl, nchan, npol = vis.shape
    ncross = cross_idx.size
    for tb in numba.prange(ntime * ncross):
        t = tb // ncross
        b = cross_idx[tb % ncross]
        d = delay_m[t, tb % ncross]
        step = np.exp(1j * (two_pi_over_c * uniform_df_hz * d))
        rot = 1.0 + 0j
        sum_wv = 0j
        sum_w = 0.0
        for c in range(nchan):
            if uniform_df_hz <= 0 or c % _ANCHOR == 0:
                ph = two_pi_over_c * freq_hz[c] * d
                rot = np.cos(ph) + 1j * np.sin(ph)
            else:
                rot *= step
            ok = True
            wsum = 0.0
            acc = 0j
            for p in range(npol):
                if flags[t, b, c, p] or weights[t, b, c, p] <= 0:
                    ok = False
                acc += vis[t, b, c, p]
                wsum += weights[t, b, c, p]
            if factor == 1:
                if ok:
                    out_vis[tb, c] = acc / npol * rot
                    out_wgt[tb, c] = wsum
                else:
                    out_vis[tb, c] = 0
                    out_wgt[tb, c] = 0
                continue
            if ok:
                sum_wv += wsum * (acc / npol * rot)
                sum_w += wsum
            if (c + 1) % factor == 0:
                j = c // factor
                out_vis[tb, j] = sum_wv / sum_w if sum_w > 0 else 0j
                out_wgt[tb, j] = sum_w
                sum_wv = 0j
                sum_w = 0.0


def uniform_spacing_hz(freq_hz: np.ndarray) -> float:
    """The channel spacing (Hz) when ``freq_hz`` is evenly spaced to 1e-9 of it, else 0."""
    f = np.asarray(freq_hz, np.float64)
    if f.size < 2:
        return 0.0
    df = np.diff(f)
    return float(df[0]) if np.all(np.abs(df - df[0]) <= 1e-9 * abs(df[0])) else 0.0


def rephase_geometry(*, chunk: VisChunk, ra_rad: float, dec_rad: float) -> tuple[np.ndarray, np.ndarray]:
    """(uvw (ntime, ncross, 3) float64 m towards (ra, dec), delay b . (s0 - s1) (ntime, ncross)
    float64 m), on the host: both paths' geometry (small: no channels)."""
    cross = chunk.cross
    b_enu = chunk.antenna_enu_m[chunk.ant2[cross]] - chunk.antenna_enu_m[chunk.ant1[cross]]
    s0 = hadec_to_enu(ha_rad=0.0, dec_rad=chunk.pointing_dec_rad)
    basis = icrs_basis(ra_rad=ra_rad, dec_rad=dec_rad, time_jd=chunk.time_jd)  # (t, 3, 3)
    uvw = np.einsum("bk,tjk->tbj", b_enu, basis)
    return uvw, b_enu @ s0 - uvw[:, :, 2]


def rephase_stokes_i(*, chunk: VisChunk, ra_rad: float, dec_rad: float, xp=None, release: bool = False,
                     average: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stokes I cross-correlations towards the ICRS direction (ra, dec).

    Returns uvw (nrow, 3) float64 metres, vis (nrow, nchan) complex64 and weights
    (nrow, nchan) float32 (0 where either polarization is flagged), nrow = ntime * ncross,
    time-major. ``average``: ``average`` adjacent channels averaged as `average_channels` does
    (nchan / average channels out; their frequencies are `average_channels`' too); on the CPU
    in the same pass, with no full-resolution array. ``xp``: None or numpy, the numba twin (the
    CPU path); cupy (or the twin module), `rephase_stokes_i_xp` on the chunk's arrays where they
    live (vis and weights come back on ``xp``, uvw on the host), then `average_channels` on
    ``xp``. ``release`` (the CPU path): each integration's visibilities and flags are given back
    to the operating system once read (`contimg.device.memory.release_pages`), so the chunk's and
    the result's memory do not add up; the chunk's vis and flags read as zeros afterwards (the
    caller drops them).
    """
    nchan = chunk.freq_hz.size
    if average < 1 or nchan % average:
        raise ValueError(f"group {chunk.group_id}: image.average_channels = {average} does not divide its "
                         f"{nchan} channels")
    if xp is not None and xp is not np:
        uvw, vis, wgt = rephase_stokes_i_xp(xp=xp, chunk=chunk, ra_rad=ra_rad, dec_rad=dec_rad)
        vis, wgt, _ = average_channels(vis=vis, wgt=wgt, freq_hz=chunk.freq_hz, factor=average, xp=xp)
        return uvw, vis, wgt
    cross = chunk.cross
    uvw, delay = rephase_geometry(chunk=chunk, ra_rad=ra_rad, dec_rad=dec_rad)
    ntime, ncross = chunk.time_jd.size, uvw.shape[1]
    # populated a block at a time as the chunk's pages are given back (``release``): the two
    # forms' memory does not add up, and no page is faulted in alone (`mapped_empty`)
    out_vis = mapped_empty((ntime * ncross, nchan // average), np.complex64, populate=False)
    out_wgt = mapped_empty((ntime * ncross, nchan // average), np.float32, populate=False)
    delay = np.ascontiguousarray(delay)
    args = (np.flatnonzero(cross),)
    rest = (np.asarray(chunk.freq_hz, np.float64), uniform_spacing_hz(chunk.freq_hz), 2 * np.pi / C_M_S, int(average))
    step = ntime if not release else 1
    for t0 in range(0, ntime, step):
        ts, rows = slice(t0, t0 + step), slice(t0 * ncross, (t0 + step) * ncross)
        populate_pages(out_vis[rows])
        populate_pages(out_wgt[rows])
        _rephase_kernel(chunk.vis[ts], chunk.flags[ts], chunk.weights[ts], *args, delay[ts], *rest, out_vis[rows],
                        out_wgt[rows])
        if release:
            release_pages(chunk.vis[ts])
            release_pages(chunk.flags[ts])
    return uvw.reshape(-1, 3), out_vis, out_wgt


def rephase_stokes_i_xp(*, xp, chunk: VisChunk, ra_rad: float, dec_rad: float):
    """`rephase_stokes_i` as array code on ``xp`` (the device path) with the numba twin's
    arithmetic: the phase in float64, the polarizations summed in complex128, the product
    stored as complex64; the weight the float64 sum of the polarizations', 0 (and the
    visibility 0) where any polarization is flagged or has weight <= 0. In blocks of
    integrations; only the delays (ntime, ncross) are uploaded."""
    cross = chunk.cross
    uvw, delay = rephase_geometry(chunk=chunk, ra_rad=ra_rad, dec_rad=dec_rad)
    ntime, ncross, nchan = chunk.time_jd.size, uvw.shape[1], chunk.freq_hz.size
    npol = chunk.vis.shape[3]
    cross_d = xp.asarray(np.flatnonzero(cross))
    delay_d = xp.asarray(np.ascontiguousarray(delay))
    k = xp.asarray(2 * np.pi / C_M_S * np.asarray(chunk.freq_hz, np.float64))  # rad per metre, per channel
    out_vis = xp.empty((ntime, ncross, nchan), np.complex64)
    out_wgt = xp.empty((ntime, ncross, nchan), np.float32)
    step = max(1, _BLOCK_BYTES // max(ncross * nchan * (npol * 16 + 32), 1))
    for t0 in range(0, ntime, step):
        ts = slice(t0, min(t0 + step, ntime))
        v = chunk.vis[ts][:, cross_d]
        w = chunk.weights[ts][:, cross_d]
        ok = ~(chunk.flags[ts][:, cross_d] | (w <= 0)).any(axis=3)
        ph = delay_d[ts][:, :, None] * k[None, None, :]
        rot = xp.cos(ph) + 1j * xp.sin(ph)
        acc = v.astype(np.complex128).sum(axis=3)
        out_vis[ts] = xp.where(ok, acc / npol * rot, 0)
        out_wgt[ts] = xp.where(ok, w.astype(np.float64).sum(axis=3), 0)
    return uvw.reshape(-1, 3), out_vis.reshape(ntime * ncross, nchan), out_wgt.reshape(ntime * ncross, nchan)


def _weighted_mean(*, acc, wsum, xp):
    """``acc / wsum`` (sum w V over sum w), 0 where ``wsum`` is 0: `average_channels` and
    `average_times`."""
    return xp.where(wsum > 0, acc / xp.where(wsum > 0, wsum, 1), 0)


def average_channels(*, vis, wgt, freq_hz: np.ndarray, factor: int, xp=np, rows_per_block: int = 16384):
    """Weighted averages of ``factor`` adjacent channels: (vis (nrow, nchan/factor) complex64 =
    sum w V / sum w (0 where sum w is 0), wgt (nrow, nchan/factor) float32 = sum w, freq_hz
    (nchan/factor,) the mean of each group's frequencies). vis (nrow, nchan) complex64 and wgt
    float32 arrays of ``xp``, in blocks of rows (small temporaries); ValueError when ``factor``
    does not divide nchan."""
    nrow, nchan = vis.shape
    if factor == 1:
        return vis, wgt, np.asarray(freq_hz, np.float64)
    if nchan % factor:
        raise ValueError(f"image.average_channels = {factor} does not divide the {nchan} channels")
    n_out = nchan // factor
    out_vis = xp.empty((nrow, n_out), np.complex64)
    out_wgt = xp.empty((nrow, n_out), np.float32)
    for r0 in range(0, nrow, rows_per_block):
        rows = slice(r0, min(r0 + rows_per_block, nrow))
        w = wgt[rows].reshape(-1, n_out, factor).astype(np.float64)
        wsum = w.sum(axis=2)
        acc = (vis[rows].reshape(-1, n_out, factor) * w).sum(axis=2)
        out_vis[rows] = _weighted_mean(acc=acc, wsum=wsum, xp=xp)
        out_wgt[rows] = wsum
    return out_vis, out_wgt, channel_frequencies(freq_hz=freq_hz, factor=factor)


def channel_frequencies(*, freq_hz: np.ndarray, factor: int) -> np.ndarray:
    """(nchan / factor,) float64 Hz: the mean frequency of each ``factor`` adjacent channels."""
    f = np.asarray(freq_hz, np.float64)
    return f if factor == 1 else f.reshape(-1, factor).mean(axis=1)


def time_factors(*, uvw_m: np.ndarray, max_factor: int, step_fraction: float = 1.0) -> np.ndarray:
    """Per baseline, how many adjacent integrations baseline-dependent averaging joins: the
    largest divisor of ntime that is at most ``max_factor`` and keeps the baseline's step in the
    uvw space over the averaged span (factor x its largest step per integration) at most
    ``step_fraction`` of the fastest baseline's step over one integration. The time smearing of
    an averaged sample (its phase change across the span, for a source anywhere in the field) is
    then at most ``step_fraction`` of the unaveraged fastest baseline's. uvw_m (ntime, ncross, 3)
    float64 towards the phase centre. Returns (ncross,) int64, all 1 for ``max_factor`` 1 or a
    single integration."""
    ntime, ncross = uvw_m.shape[:2]
    if max_factor <= 1 or ntime < 2:
        return np.ones(ncross, np.int64)
    step = np.linalg.norm(np.diff(uvw_m, axis=0), axis=2).max(axis=0)  # (ncross,) m per integration
    fastest = float(step.max())
    if fastest <= 0:
        return np.ones(ncross, np.int64)
    allowed = np.floor(step_fraction * fastest / np.maximum(step, fastest * 1e-12) * (1 + 1e-9)).astype(np.int64)
    divisors = np.array([d for d in range(1, min(max_factor, ntime) + 1) if ntime % d == 0], np.int64)
    return divisors[np.maximum(np.searchsorted(divisors, np.minimum(allowed, divisors[-1]), side="right") - 1, 0)]


def average_times(*, uvw_m: np.ndarray, vis, wgt, ntime: int, factors: np.ndarray, xp=np,
                  block_bytes: int = 64 * 2**20) -> tuple[np.ndarray, object, object, list[tuple[int, int]]]:
    """Baseline-dependent averaging in time: each baseline's ``factors[j]`` adjacent
    integrations become one sample, the weighted mean of its visibilities (0 where no weight)
    with the summed weight, at the mean of their uvw.

    uvw_m (ntime * ncross, 3) float64 host; vis (ntime * ncross, nchan) complex64 and wgt
    float32 on ``xp``, time-major (`rephase_stokes_i`); factors (ncross,) int, each dividing
    ntime (`time_factors`). Returns (uvw, vis, wgt, groups): the rows in groups of equal
    factor, ascending, ``groups`` [(factor, baselines), ...]; a group is (ntime / factor)
    time-major blocks of its baselines (in their order in the input). All factors 1: the input
    itself, ``[(1, ncross)]``. In blocks of averaged integrations (temporaries of about
    ``block_bytes``)."""
    factors = np.asarray(factors, np.int64)
    ncross = factors.size
    nchan = vis.shape[1]
    if np.all(factors == 1):
        return uvw_m, vis, wgt, [(1, ncross)]
    if np.any(ntime % factors):
        raise ValueError(f"average_times: the factors {sorted(set(factors.tolist()))} must divide ntime = {ntime}")
    groups = [(int(f), np.flatnonzero(factors == f)) for f in np.unique(factors)]
    nrow = sum(ntime // f * sel.size for f, sel in groups)
    out_uvw = np.empty((nrow, 3), np.float64)
    empty = empty_resident if xp is np else xp.empty
    out_vis = empty((nrow, nchan), np.complex64)
    out_wgt = empty((nrow, nchan), np.float32)
    uvw3 = uvw_m.reshape(ntime, ncross, 3)
    vis3, wgt3 = vis.reshape(ntime, ncross, nchan), wgt.reshape(ntime, ncross, nchan)
    r0 = 0
    for f, sel in groups:
        n = sel.size
        out_uvw[r0:r0 + ntime // f * n] = uvw3[:, sel].reshape(ntime // f, f, n, 3).mean(axis=1).reshape(-1, 3)
        sel_d = xp.asarray(sel)
        step = max(1, block_bytes // max(f * n * nchan * 16, 1))  # averaged integrations per block
        for k0 in range(0, ntime // f, step):
            k1 = min(k0 + step, ntime // f)
            ts = slice(k0 * f, k1 * f)
            w = wgt3[ts][:, sel_d].reshape(k1 - k0, f, n, nchan).astype(np.float64)
            v = vis3[ts][:, sel_d].reshape(k1 - k0, f, n, nchan)
            wsum = w.sum(axis=1)
            acc = (v * w).sum(axis=1)
            rows = slice(r0 + k0 * n, r0 + k1 * n)
            out_vis[rows] = _weighted_mean(acc=acc, wsum=wsum, xp=xp).reshape(-1, nchan)
            out_wgt[rows] = wsum.reshape(-1, nchan)
        r0 += ntime // f * n
    return out_uvw, out_vis, out_wgt, [(f, int(sel.size)) for f, sel in groups]


def weight_per_time(*, wgt, ntime: int, groups: list[tuple[int, int]], xp=np) -> np.ndarray:
    """(ntime, nchan) float64 on ``xp``: the weights of (possibly time-averaged: `average_times`)
    rows summed over baselines per integration and channel, an averaged sample's weight shared
    equally among the integrations it joins."""
    nchan = wgt.shape[1]
    out = xp.zeros((ntime, nchan), np.float64)
    r0 = 0
    for f, n in groups:
        k = ntime // f
        per_block = wgt[r0:r0 + k * n].reshape(k, n, nchan).sum(axis=1, dtype=np.float64) / f  # (k, nchan)
        out += xp.repeat(per_block, f, axis=0)
        r0 += k * n
    return out
