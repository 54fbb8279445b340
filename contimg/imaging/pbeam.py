"""The primary beam of an image of a drifting sky.

The sky drifts ~1.25 deg of hour angle during one group, so the beam that multiplies a source in
an image made of all integrations is the Airy beam at the source's offset from the pointing
(HA 0, pointing Dec) *averaged over the integrations and channels with the data's weights*.
It is computed on a coarse grid (it is smooth) and interpolated to the image.
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import RegularGridInterpolator

from contimg.sky.beam import airy_power
from contimg.sky.geometry import hadec_to_enu, icrs_basis

__all__ = ["average_primary_beam", "bilinear_xp"]


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
    the image). ``xp``: None or numpy, scipy's interpolation on the host (the CPU path); cupy
    (or the twin module), the coarse beam (``coarse``², small) made on the host and interpolated
    to the image on ``xp`` (`bilinear_xp`), the result an array of ``xp``.
    """
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
    if xp is not None and xp is not np:
        return bilinear_xp(xp=xp, grid=xs, values=acc, npix=npix).astype(np.float32)
    interp = RegularGridInterpolator((xs, xs), acc)
    yy, xx = np.mgrid[0:npix, 0:npix]
    return interp(np.stack([yy.ravel(), xx.ravel()], axis=-1)).reshape(npix, npix).astype(np.float32)


def _axis_weights(xp, grid: np.ndarray, npix: int):
    """For pixels 0..npix-1 on the ascending ``grid``: the lower node index and the weight of
    the upper one (linear interpolation, as scipy's RegularGridInterpolator)."""
    p = np.arange(npix, dtype=np.float64)
    i = np.clip(np.searchsorted(grid, p, side="right") - 1, 0, grid.size - 2)
    t = (p - grid[i]) / (grid[i + 1] - grid[i])
    return xp.asarray(i), xp.asarray(t)


def bilinear_xp(*, xp, grid: np.ndarray, values: np.ndarray, npix: int):
    """``values`` (n, n) on the nodes ``grid`` × ``grid`` interpolated linearly to the pixels
    (npix, npix), as array code on ``xp``: along y, then along x (float64)."""
    iy, ty = _axis_weights(xp, grid, npix)
    a = xp.asarray(values, dtype=np.float64)
    rows = (1 - ty)[:, None] * a[iy] + ty[:, None] * a[iy + 1]  # (npix, n)
    return (1 - ty)[None, :] * rows[:, iy] + ty[None, :] * rows[:, iy + 1]
