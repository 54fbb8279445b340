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


@numba.njit(cache=True, nogil=True, inline="always")
def _cell(uvw, freq_hz, r, c, du, ngrid, inv_c):
    """The uv cell (iu, iv) of row r, channel c on the (ngrid + 1)^2 density grid; (-1, -1)
    outside it."""
    half = ngrid // 2
    k = freq_hz[c] * inv_c / du
    u = int(np.floor(uvw[r, 0] * k + 0.5)) + half
    v = int(np.floor(uvw[r, 1] * k + 0.5)) + half
    if 0 <= u < ngrid and 0 <= v < ngrid:
        return u, v
    return -1, -1


@numba.njit(cache=True, nogil=True)
def _density(uvw, freq_hz, wgt, du, ngrid, inv_c):
    """The gridded natural weights (ngrid + 1, ngrid + 1), each sample counted with its
    conjugate; one pass, no per-sample arrays."""
    dens = np.zeros((ngrid + 1, ngrid + 1))
    nrow, nchan = wgt.shape
    for r in range(nrow):
        for c in range(nchan):
            w = wgt[r, c]
            if w <= 0:
                continue
            iu, iv = _cell(uvw, freq_hz, r, c, du, ngrid, inv_c)
            if iu >= 0:
                dens[iu, iv] += w
                dens[ngrid - iu, ngrid - iv] += w
    return dens


@numba.njit(parallel=True, cache=True, nogil=True)
def _reweight(uvw, freq_hz, wgt, du, ngrid, inv_c, dens, mode, f2, out):
    """out[r, c] = the uniform (mode 1) or Briggs (mode 2) weight of wgt[r, c]; 0 outside the
    grid or where wgt <= 0. ``out`` may be ``wgt`` itself (each sample read, then written)."""
    nrow, nchan = wgt.shape
    for r in numba.prange(nrow):
        for c in range(nchan):
            w = wgt[r, c]
            iu, iv = _cell(uvw, freq_hz, r, c, du, ngrid, inv_c)
            if w <= 0 or iu < 0:
                out[r, c] = 0
            elif mode == 1:
                out[r, c] = w / dens[iu, iv]
            else:
                out[r, c] = w / (1.0 + dens[iu, iv] * f2)


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
                    uv_max_lambda: float = 0.0, xp=None, overwrite: bool = False) -> np.ndarray:
    """Weights (nrow, nchan) float32 for ``weighting`` in {natural, uniform, briggs}, then the
    taper and uv-range cut (`uv_taper_and_range`; the cut samples also leave the density).

    uvw_m: (nrow, 3) float64; wgt: (nrow, nchan) float32 natural weights (0 = flagged).
    ``xp``: None or numpy, the numba twin (the CPU path); cupy (or the twin module),
    `imaging_weights_xp` (``wgt`` and the result on ``xp``, uvw on the host). ``overwrite``: the
    CPU path may write the uniform or Briggs weights into ``wgt`` (float32, C-contiguous) instead
    of a new array (the imager's: it no longer needs the data weights).
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
    uvw_m, freq_hz = np.ascontiguousarray(uvw_m, np.float64), np.ascontiguousarray(freq_hz, np.float64)
    grid = (uvw_m, freq_hz, wgt, du, npix, 1.0 / C_M_S)
    dens = _density(*grid)
    in_place = overwrite and wgt.dtype == np.float32 and wgt.flags.c_contiguous and wgt.flags.writeable
    out = wgt if in_place else np.empty(wgt.shape, np.float32)
    if weighting == "uniform":
        mode, f2 = 1, 0.0
    else:
        mode, f2 = 2, (5.0 * 10.0 ** (-robust)) ** 2 / (np.sum(dens**2) / max(2.0 * float(np.sum(wgt, dtype=np.float64)), 1e-30))
    _reweight(*grid, dens, mode, f2, out)
    return uv_taper_and_range(wgt=out, **taper)


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
