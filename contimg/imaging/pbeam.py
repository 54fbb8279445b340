"""The primary beam of an image of a drifting sky.

The sky drifts ~1.25 deg of hour angle during one group, so the beam that multiplies a source in
an image made of all integrations is the Airy beam at the source's offset from the pointing
(HA 0, pointing Dec) *averaged over the integrations and channels with the data's weights*.
It is computed on a coarse grid (it is smooth) and interpolated to the image.
"""

from __future__ import annotations

import numba
import numpy as np

from contimg.sky.beam import airy_power
from contimg.sky.geometry import hadec_to_enu, icrs_basis

__all__ = ["average_primary_beam", "coarse_primary_beam", "bilinear_xp", "bilinear_host", "pb_corrected"]


def _freq_bins(freq_hz: np.ndarray, weight_tf: np.ndarray, nbins: int) -> tuple[np.ndarray, np.ndarray]:
    edges = np.linspace(0, freq_hz.size, min(nbins, freq_hz.size) + 1).astype(int)
    f, w = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        wb = weight_tf[:, a:b]  # (ntime, nb)
        tot = wb.sum(axis=1)
        f.append(np.sum(wb.sum(axis=0) * freq_hz[a:b]) / max(wb.sum(), 1e-30))
        w.append(tot)
    return np.array(f), np.stack(w, axis=1)  # (nbins,), (ntime, nbins)


def average_primary_beam(*, npix: int, cell_rad: float, ra_rad: float, dec_rad: float, time_jd: np.ndarray,
                         freq_hz: np.ndarray, weight_tf: np.ndarray, pointing_dec_rad: float,
                         coarse: int = 96, freq_bins: int = 32, xp=None) -> np.ndarray:
    """Weighted mean Airy power beam (npix, npix) float32 in the image's FITS order.

    ra_rad, dec_rad: the image's ICRS phase centre; time_jd: (ntime,); freq_hz: (nchan,);
    weight_tf: (ntime, nchan) summed imaging weights (what each integration and channel adds to
    the image). The beam is made on a ``coarse``² grid on the host (`coarse_primary_beam`) and
    interpolated linearly to the image on ``xp`` (None: numpy; cupy or the twin module on the
    device path) by `bilinear_xp`, the result an array of ``xp``.
    """
    nodes, values = coarse_primary_beam(npix=npix, cell_rad=cell_rad, ra_rad=ra_rad, dec_rad=dec_rad, time_jd=time_jd,
                                        freq_hz=freq_hz, weight_tf=weight_tf, pointing_dec_rad=pointing_dec_rad,
                                        coarse=coarse, freq_bins=freq_bins)
    if xp is None or xp is np:
        return bilinear_host(grid=nodes, values=values, npix=npix)
    return bilinear_xp(xp=xp, grid=nodes, values=values, npix=npix)


def coarse_primary_beam(*, npix: int, cell_rad: float, ra_rad: float, dec_rad: float, time_jd: np.ndarray,
                        freq_hz: np.ndarray, weight_tf: np.ndarray, pointing_dec_rad: float, coarse: int = 96,
                        freq_bins: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """`average_primary_beam` at the nodes of a ``coarse``² grid: (nodes (coarse,) pixel
    positions along each axis, values (coarse, coarse) float64 (y, x))."""
    half = npix / 2
    xs = np.linspace(0, npix - 1, coarse)
    l_axis = -(xs - half) * cell_rad
    m_axis = (xs - half) * cell_rad
    mm, ll = np.meshgrid(m_axis, l_axis, indexing="ij")  # (y, x)
    nn = np.sqrt(np.clip(1 - ll**2 - mm**2, 0, None))
    basis = icrs_basis(ra_rad=ra_rad, dec_rad=dec_rad, time_jd=time_jd)  # (t, 3, 3)
    s0 = hadec_to_enu(ha_rad=0.0, dec_rad=pointing_dec_rad)
    fb, wb = _freq_bins(freq_hz, weight_tf, freq_bins)
    acc = np.zeros_like(ll)
    for t in range(time_jd.size):
        if not wb[t].any():
            continue
        direction = ll[..., None] * basis[t, 0] + mm[..., None] * basis[t, 1] + nn[..., None] * basis[t, 2]
        cos_t = np.clip(direction @ s0, -1, 1)
        sin_t = np.sqrt(1 - cos_t**2)
        acc += np.tensordot(airy_power(sin_theta=sin_t[..., None], freq_hz=fb), wb[t], axes=([-1], [0]))
    acc /= max(wb.sum(), 1e-30)
    return xs, acc


def _axis_weights(xp, grid: np.ndarray, npix: int):
    """For pixels 0..npix-1 on the ascending ``grid``: the lower node index and the weight of
    the upper one (linear interpolation, as scipy's RegularGridInterpolator)."""
    p = np.arange(npix, dtype=np.float64)
    i = np.clip(np.searchsorted(grid, p, side="right") - 1, 0, grid.size - 2)
    t = (p - grid[i]) / (grid[i + 1] - grid[i])
    return xp.asarray(i), xp.asarray(t)


def bilinear_xp(*, xp, grid: np.ndarray, values: np.ndarray, npix: int, rows_per_block: int = 256):
    """``values`` (n, n) on the nodes ``grid`` × ``grid`` interpolated linearly to the pixels
    (npix, npix) float32 (scipy's RegularGridInterpolator, linear), as array code on ``xp``:
    along y, then along x, in float64, ``rows_per_block`` image rows at a time (the
    temporaries stay small)."""
    iy, ty = _axis_weights(xp, grid, npix)
    a = xp.asarray(values, dtype=np.float64)
    rows = (1 - ty)[:, None] * a[iy] + ty[:, None] * a[iy + 1]  # (npix, n)
    out = xp.empty((npix, npix), np.float32)
    for r0 in range(0, npix, rows_per_block):
        r = rows[r0:r0 + rows_per_block]
        out[r0:r0 + rows_per_block] = (1 - ty)[None, :] * r[:, iy] + ty[None, :] * r[:, iy + 1]
    return out


@numba.njit(parallel=True, cache=True, nogil=True)
def _bilinear_kernel(values, idx, frac, out):
    n = out.shape[0]
    for r in numba.prange(n):
        i, t = idx[r], frac[r]
        for c in range(n):
            j, u = idx[c], frac[c]
            lo = (1 - t) * values[i, j] + t * values[i + 1, j]
            hi = (1 - t) * values[i, j + 1] + t * values[i + 1, j + 1]
            out[r, c] = (1 - u) * lo + u * hi


def bilinear_host(*, grid: np.ndarray, values: np.ndarray, npix: int) -> np.ndarray:
    """`bilinear_xp`'s interpolation on the host in one numba pass (the same arithmetic: along
    y, then x, in float64): (npix, npix) float32. 0.46 s of numpy became ~0.05 s at 4096²."""
    idx, frac = _axis_weights(np, grid, npix)
    out = np.empty((npix, npix), np.float32)
    _bilinear_kernel(np.ascontiguousarray(values, np.float64), idx.astype(np.int64), frac, out)
    return out


@numba.njit(parallel=True, cache=True, nogil=True)
def _pb_correct_kernel(image, pb, cutoff, out):
    for r in numba.prange(image.shape[0]):
        for c in range(image.shape[1]):
            b = pb[r, c]
            out[r, c] = image[r, c] / b if b >= cutoff and b > 0 else np.nan


def pb_corrected(*, image: np.ndarray, pb: np.ndarray, cutoff: float) -> np.ndarray:
    """``image`` / ``pb`` where the beam is at least ``cutoff`` (and positive), NaN elsewhere
    (CASA's pblimit): (ny, nx) float32 from two (ny, nx) host arrays, one parallel pass."""
    out = np.empty(np.shape(image), np.float32)
    _pb_correct_kernel(np.ascontiguousarray(image, np.float32), np.ascontiguousarray(pb, np.float32),
                       np.float32(cutoff), out)
    return out
