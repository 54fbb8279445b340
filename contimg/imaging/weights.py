"""Imaging weights: natural, uniform and Briggs robust (gridded density, as in CASA/WSClean).

The density ``W_k`` is the sum of natural weights in uv cell ``k`` (cell = 1 / field of view),
counting each visibility at (u, v) and its conjugate at (-u, -v).
uniform: ``w / W_k``; Briggs: ``w / (1 + W_k f^2)`` with
``f^2 = (5 * 10^-R)^2 / (sum_k W_k^2 / sum w)``. For uniform and Briggs weighting a visibility
outside the image's uv extent (``|u|`` or ``|v|`` >= 1 / (2 cell)) gets weight 0: the pixel
size cannot represent it.
"""

from __future__ import annotations

import numba
import numpy as np

from contimg.geometry import C_M_S

__all__ = ["imaging_weights"]


@numba.njit(cache=True, nogil=True)
def _cells(uvw, freq_hz, wgt, du, ngrid, inv_c):
    nrow, nchan = wgt.shape
    half = ngrid // 2
    iu = np.full((nrow, nchan), -1, np.int64)
    iv = np.full((nrow, nchan), -1, np.int64)
    for r in range(nrow):
        for c in range(nchan):
            if wgt[r, c] <= 0:
                continue
            k = freq_hz[c] * inv_c / du
            u = int(np.floor(uvw[r, 0] * k + 0.5)) + half
            v = int(np.floor(uvw[r, 1] * k + 0.5)) + half
            if 0 <= u < ngrid and 0 <= v < ngrid:
                iu[r, c] = u
                iv[r, c] = v
    return iu, iv


@numba.njit(cache=True, nogil=True)
def _density(iu, iv, wgt, npix):
    dens = np.zeros((npix + 1, npix + 1))
    nrow, nchan = wgt.shape
    for r in range(nrow):
        for c in range(nchan):
            if iu[r, c] >= 0:
                dens[iu[r, c], iv[r, c]] += wgt[r, c]
                dens[npix - iu[r, c], npix - iv[r, c]] += wgt[r, c]
    return dens


@numba.njit(cache=True, nogil=True)
def _reweight(iu, iv, wgt, dens, mode, f2):
    out = np.zeros_like(wgt)
    nrow, nchan = wgt.shape
    for r in range(nrow):
        for c in range(nchan):
            if iu[r, c] < 0:
                continue
            d = dens[iu[r, c], iv[r, c]]
            if mode == 1:
                out[r, c] = wgt[r, c] / d
            else:
                out[r, c] = wgt[r, c] / (1.0 + d * f2)
    return out


def imaging_weights(*, uvw_m: np.ndarray, freq_hz: np.ndarray, wgt: np.ndarray, weighting: str, robust: float,
                    npix: int, cell_rad: float) -> np.ndarray:
    """Weights (nrow, nchan) float32 for ``weighting`` in {natural, uniform, briggs}.

    uvw_m: (nrow, 3) float64; wgt: (nrow, nchan) float32 natural weights (0 = flagged).
    """
    if weighting == "natural":
        return wgt
    du = 1.0 / (npix * cell_rad)
    iu, iv = _cells(uvw_m, freq_hz, wgt, du, npix, 1.0 / C_M_S)
    dens = _density(iu, iv, wgt, npix)
    if weighting == "uniform":
        return _reweight(iu, iv, wgt, dens, 1, 0.0).astype(np.float32)
    f2 = (5.0 * 10.0 ** (-robust)) ** 2 / (np.sum(dens**2) / max(2.0 * float(np.sum(wgt)), 1e-30))
    return _reweight(iu, iv, wgt, dens, 2, f2).astype(np.float32)
