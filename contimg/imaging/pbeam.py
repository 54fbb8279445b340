"""The primary beam of an image of a drifting sky.

The sky drifts ~1.25 deg of hour angle during one group, so the beam that multiplies a source in
an image made of all integrations is the Airy beam at the source's offset from the pointing
(HA 0, pointing Dec) *averaged over the integrations and channels with the data's weights*.
It is computed on a coarse grid (it is smooth) and interpolated to the image.
"""

from __future__ import annotations

import numpy as np

from contimg.sky.beam import airy_power
from contimg.sky.geometry import hadec_to_enu, icrs_basis

__all__ = ["average_primary_beam", "coarse_primary_beam", "bilinear_xp"]


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
    return bilinear_xp(xp=np if xp is None else xp, grid=nodes, values=values, npix=npix)


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
