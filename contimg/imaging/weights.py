"""Imaging weights: natural, uniform and Briggs robust (gridded density, as in CASA/WSClean).

The density ``W_k`` is the sum of natural weights in uv cell ``k`` (cell = 1 / field of view),
counting each visibility at (u, v) and its conjugate at (-u, -v).
uniform: ``w / W_k``; Briggs: ``w / (1 + W_k f^2)`` with
``f^2 = (5 * 10^-R)^2 / (sum_k W_k^2 / sum w)``. For uniform and Briggs weighting a visibility
outside the image's uv extent (``|u|`` or ``|v|`` >= 1 / (2 cell)) gets weight 0: the pixel
size cannot represent it.

Then, for any weighting (`uv_taper_and_range`): a Gaussian taper of image-plane FWHM ``theta``
multiplies each weight by ``exp(-(pi theta)^2 (u^2 + v^2) / (4 ln 2))`` (u, v in wavelengths: the
Fourier transform of a unit-peak Gaussian of that FWHM, as WSClean's ``-taper-gaussian``), and a
uv-range cut sets to 0 the weights of samples with ``sqrt(u^2 + v^2)`` outside
``[uv_min, uv_max]`` wavelengths.
"""

from __future__ import annotations

import numba
import numpy as np

from contimg.sky.geometry import C_M_S

__all__ = ["imaging_weights", "uv_taper_and_range", "imaging_weights_xp", "uv_taper_and_range_xp"]

_BLOCK_BYTES = 256 * 2**20  # temporaries per block of rows (the device path)


def _row_blocks(nrow: int, per_row_bytes: int):
    step = max(1, _BLOCK_BYTES // max(per_row_bytes, 1))
    for r0 in range(0, nrow, step):
        yield slice(r0, min(r0 + step, nrow))


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


def uv_taper_and_range(*, uvw_m: np.ndarray, freq_hz: np.ndarray, wgt: np.ndarray, taper_rad: float = 0.0,
                       uv_min_lambda: float = 0.0, uv_max_lambda: float = 0.0) -> np.ndarray:
    """``wgt`` (nrow, nchan) times the Gaussian taper of image-plane FWHM ``taper_rad`` (0 =
    none), 0 outside ``[uv_min_lambda, uv_max_lambda]`` (0 = no limit); float32, a new array
    when anything applies, else ``wgt`` itself."""
    if taper_rad <= 0 and uv_min_lambda <= 0 and uv_max_lambda <= 0:
        return wgt
    uv2 = (uvw_m[:, 0] ** 2 + uvw_m[:, 1] ** 2)[:, None] * (np.asarray(freq_hz, float)[None, :] / C_M_S) ** 2
    out = wgt.astype(np.float64)
    if taper_rad > 0:
        out *= np.exp(-((np.pi * taper_rad) ** 2) * uv2 / (4.0 * np.log(2.0)))
    if uv_min_lambda > 0:
        out[uv2 < uv_min_lambda**2] = 0.0
    if uv_max_lambda > 0:
        out[uv2 > uv_max_lambda**2] = 0.0
    return out.astype(np.float32)


def imaging_weights(*, uvw_m: np.ndarray, freq_hz: np.ndarray, wgt: np.ndarray, weighting: str, robust: float,
                    npix: int, cell_rad: float, taper_rad: float = 0.0, uv_min_lambda: float = 0.0,
                    uv_max_lambda: float = 0.0, xp=None) -> np.ndarray:
    """Weights (nrow, nchan) float32 for ``weighting`` in {natural, uniform, briggs}, then the
    taper and uv-range cut (`uv_taper_and_range`; the cut samples also leave the density).

    uvw_m: (nrow, 3) float64; wgt: (nrow, nchan) float32 natural weights (0 = flagged).
    ``xp``: None or numpy, the numba twin (the CPU path); cupy (or the twin module),
    `imaging_weights_xp` (``wgt`` and the result on ``xp``, uvw on the host).
    """
    if xp is not None and xp is not np:
        return imaging_weights_xp(xp=xp, uvw_m=uvw_m, freq_hz=freq_hz, wgt=wgt, weighting=weighting, robust=robust,
                                  npix=npix, cell_rad=cell_rad, taper_rad=taper_rad, uv_min_lambda=uv_min_lambda,
                                  uv_max_lambda=uv_max_lambda)
    if uv_min_lambda > 0 or uv_max_lambda > 0:  # cut first: the density counts only what is imaged
        wgt = uv_taper_and_range(uvw_m=uvw_m, freq_hz=freq_hz, wgt=wgt, uv_min_lambda=uv_min_lambda,
                                 uv_max_lambda=uv_max_lambda)
    taper = dict(uvw_m=uvw_m, freq_hz=freq_hz, taper_rad=taper_rad)
    if weighting == "natural":
        return uv_taper_and_range(wgt=wgt, **taper)
    du = 1.0 / (npix * cell_rad)
    iu, iv = _cells(uvw_m, freq_hz, wgt, du, npix, 1.0 / C_M_S)
    dens = _density(iu, iv, wgt, npix)
    if weighting == "uniform":
        return uv_taper_and_range(wgt=_reweight(iu, iv, wgt, dens, 1, 0.0).astype(np.float32), **taper)
    f2 = (5.0 * 10.0 ** (-robust)) ** 2 / (np.sum(dens**2) / max(2.0 * float(np.sum(wgt)), 1e-30))
    return uv_taper_and_range(wgt=_reweight(iu, iv, wgt, dens, 2, f2).astype(np.float32), **taper)


def uv_taper_and_range_xp(*, xp, uvw_m: np.ndarray, freq_hz: np.ndarray, wgt, taper_rad: float = 0.0,
                          uv_min_lambda: float = 0.0, uv_max_lambda: float = 0.0):
    """`uv_taper_and_range` as array code on ``xp`` (``wgt`` an array of ``xp``, uvw on the host:
    u and v uploaded), the same float64 arithmetic, in blocks of rows."""
    if taper_rad <= 0 and uv_min_lambda <= 0 and uv_max_lambda <= 0:
        return wgt
    uv = xp.asarray(np.ascontiguousarray(np.asarray(uvw_m, np.float64)[:, :2]))
    fk = xp.asarray((np.asarray(freq_hz, float) / C_M_S) ** 2)
    out = xp.empty(wgt.shape, np.float32)
    for rs in _row_blocks(wgt.shape[0], wgt.shape[1] * 24):
        uv2 = (uv[rs, 0] ** 2 + uv[rs, 1] ** 2)[:, None] * fk[None, :]
        o = wgt[rs].astype(np.float64)
        if taper_rad > 0:
            o *= xp.exp(-((np.pi * taper_rad) ** 2) * uv2 / (4.0 * np.log(2.0)))
        if uv_min_lambda > 0:
            o = xp.where(uv2 < uv_min_lambda**2, 0.0, o)
        if uv_max_lambda > 0:
            o = xp.where(uv2 > uv_max_lambda**2, 0.0, o)
        out[rs] = o.astype(np.float32)
    return out


def _cells_xp(xp, uv, k, wgt_block, rs, half: int, ngrid: int):
    """The uv cell (u, v) of each sample of rows ``rs`` and whether it counts (weight > 0 and
    inside the grid), as `_cells`: floor(u k + 0.5) + half in float64."""
    u = xp.floor(uv[rs, 0][:, None] * k[None, :] + 0.5).astype(np.int64) + half
    v = xp.floor(uv[rs, 1][:, None] * k[None, :] + 0.5).astype(np.int64) + half
    ok = (wgt_block > 0) & (u >= 0) & (u < ngrid) & (v >= 0) & (v < ngrid)
    return u, v, ok


def imaging_weights_xp(*, xp, uvw_m: np.ndarray, freq_hz: np.ndarray, wgt, weighting: str, robust: float,
                       npix: int, cell_rad: float, taper_rad: float = 0.0, uv_min_lambda: float = 0.0,
                       uv_max_lambda: float = 0.0):
    """`imaging_weights` as array code on ``xp`` (the device path): the same cells and the same
    float64 density (a weighted ``bincount`` of the cells and their mirrors, (npix+1)^2),
    the same reweighting; in blocks of rows. ``wgt`` (nrow, nchan) float32 on ``xp``; uvw on
    the host (u, v uploaded)."""
    if uv_min_lambda > 0 or uv_max_lambda > 0:
        wgt = uv_taper_and_range_xp(xp=xp, uvw_m=uvw_m, freq_hz=freq_hz, wgt=wgt, uv_min_lambda=uv_min_lambda,
                                    uv_max_lambda=uv_max_lambda)
    taper = dict(xp=xp, uvw_m=uvw_m, freq_hz=freq_hz, taper_rad=taper_rad)
    if weighting == "natural":
        return uv_taper_and_range_xp(wgt=wgt, **taper)
    if weighting not in ("uniform", "briggs"):
        raise ValueError(f"unknown weighting {weighting!r} (natural, uniform or briggs)")
    du = 1.0 / (npix * cell_rad)
    k = xp.asarray(np.asarray(freq_hz, np.float64) * (1.0 / C_M_S) / du)
    uv = xp.asarray(np.ascontiguousarray(np.asarray(uvw_m, np.float64)[:, :2]))
    side = npix + 1
    nrow, nchan = wgt.shape
    dens = xp.zeros(side * side, np.float64)
    blocks = list(_row_blocks(nrow, nchan * 48))
    for rs in blocks:
        w = wgt[rs]
        u, v, ok = _cells_xp(xp, uv, k, w, rs, npix // 2, npix)
        ww = w[ok].astype(np.float64)
        dens += xp.bincount((u[ok] * side + v[ok]), weights=ww, minlength=side * side)
        dens += xp.bincount(((npix - u[ok]) * side + (npix - v[ok])), weights=ww, minlength=side * side)
    if weighting == "briggs":
        f2 = (5.0 * 10.0 ** (-robust)) ** 2 / (float(xp.sum(dens**2)) / max(2.0 * float(xp.sum(wgt)), 1e-30))
    out = xp.zeros(wgt.shape, np.float32)
    for rs in blocks:
        w = wgt[rs]
        u, v, ok = _cells_xp(xp, uv, k, w, rs, npix // 2, npix)
        d = xp.where(ok, dens[xp.where(ok, u * side + v, 0)], 1.0)  # 1: no division by an empty cell
        new = w / d if weighting == "uniform" else w / (1.0 + d * f2)
        out[rs] = xp.where(ok, new, 0.0).astype(np.float32)
    return uv_taper_and_range_xp(wgt=out, **taper)
