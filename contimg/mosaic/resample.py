"""Resampling images from one celestial grid onto another, fused with the mosaic's sums.

What `reproject.reproject_interp` does for the mosaics, in two cheap steps instead of one
astropy WCS transform per output pixel and a generic interpolator:

1. **The pixel mapping on a lattice.** Output pixel ``(x, y)`` maps to input pixel
   ``(x_in, y_in)`` through both WCSs (astropy, exactly) only on a lattice every ``step`` output
   pixels; between lattice points the mapping is interpolated bilinearly. Both grids are SIN
   projections a few degrees apart, so the mapping is smooth: `pixel_lattice` halves the step
   until the interpolated mapping agrees with the exact one at every lattice cell's centre (where
   bilinear interpolation errs most) within ``tol_px`` (default 0.001 pixel), and says the
   error it measured.
2. **The interpolation.** ``bicubic`` is cubic B-spline interpolation, as
   ``scipy.ndimage.map_coordinates(order=3)`` (what reproject calls): the image is prefiltered
   once into B-spline coefficients (the recursive filter of Unser 1999 along each axis, mirror
   boundary, float32: what ``scipy.ndimage.spline_filter`` computes, on every core instead of
   one) and each output pixel is the 4 × 4 coefficients around it times the cubic B-spline's
   weights, shared by all planes.
   ``bilinear`` is the 2 × 2 neighbours. An output pixel whose input position lies outside the
   image (beyond half a pixel from its edge pixels' centres) gets nothing, as in reproject.

The primary beam and a noise map are smooth on the pixel scale (a beam's FWHM is thousands of
pixels at real size, hundreds in the tests) and are always sampled bilinearly: the error of that
on a Gaussian of width ``s`` pixels is about ``1 / (8 s²)`` of its value.

The kernel is numba (CPU): `add_planes` resamples and adds to a mosaic in place.
"""

from __future__ import annotations

import numba
import numpy as np
from astropy.wcs import WCS

__all__ = ["pixel_lattice", "spline_coefficients", "add_planes"]

CUBIC, LINEAR = 3, 1
ORDERS = {"bicubic": CUBIC, "bilinear": LINEAR}


def pixel_lattice(*, wcs_in: WCS, wcs_out: WCS, box: tuple[int, int, int, int], tol_px: float = 0.001,
                  step: int = 64) -> tuple[np.ndarray, np.ndarray, int, float]:
    """The input-pixel coordinates of the output grid's pixels on a lattice over ``box``.

    box: ``(y0, y1, x0, x1)`` output pixels (0-based, end exclusive). Returns ``(lx, ly, step,
    err_px)``: float64 arrays (my, mx) of the input pixel (x, y) of output pixel
    ``(x0 + i·step, y0 + j·step)`` (the last row and column at the box's last pixel or beyond
    it), NaN where the sky position has no input pixel; the step used (halved from ``step`` until
    the bilinear interpolation of the lattice is within ``tol_px`` of the exact mapping at the
    lattice cells' centres, down to 1); and that largest error (pixels)."""
    y0, y1, x0, x1 = box
    while True:
        mx = -(-(x1 - 1 - x0) // step) + 1
        my = -(-(y1 - 1 - y0) // step) + 1
        gx = x0 + step * np.arange(mx, dtype=np.float64)
        gy = y0 + step * np.arange(my, dtype=np.float64)
        lx, ly = _map(wcs_in, wcs_out, *np.meshgrid(gx, gy))
        if step == 1 or mx < 2 or my < 2:
            return lx, ly, step, 0.0
        ex, ey = _map(wcs_in, wcs_out, *np.meshgrid(gx[:-1] + step / 2, gy[:-1] + step / 2))
        cx = 0.25 * (lx[:-1, :-1] + lx[1:, :-1] + lx[:-1, 1:] + lx[1:, 1:])
        cy = 0.25 * (ly[:-1, :-1] + ly[1:, :-1] + ly[:-1, 1:] + ly[1:, 1:])
        err = np.hypot(cx - ex, cy - ey)
        err = float(np.nanmax(err)) if np.isfinite(err).any() else 0.0
        if err <= tol_px:
            return lx, ly, step, err
        step //= 2


def _map(wcs_in: WCS, wcs_out: WCS, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ra, dec = wcs_out.pixel_to_world_values(x, y)
    xi, yi = wcs_in.world_to_pixel_values(ra, dec)
    return np.asarray(xi, np.float64), np.asarray(yi, np.float64)


_POLE = np.sqrt(3.0) - 2.0  # the cubic B-spline's prefilter pole (Unser 1999)
_HORIZON = 40  # |pole|^40 = 1e-23: the causal filter's start sums this many samples at most


@numba.njit(inline="always")
def _prefilter_lines(buf, n, m):
    """The cubic B-spline coefficients along axis 0 of ``buf[:n, :m]`` (float64, in place; ``m``
    independent lines side by side), mirror boundary (the signal reflected about its end
    samples, period 2n - 2), as scipy's ``spline_filter1d``."""
    if n < 2:
        return
    z = _POLE
    period = 2 * n - 2
    norm = 1.0 / (1.0 - z ** period) if period < _HORIZON else 1.0
    start = np.zeros(m)  # the causal filter's first value: the (infinite) mirrored signal's sum
    zk = 1.0
    for k in range(min(period, _HORIZON)):
        kk = k if k < n else period - k
        for c in range(m):
            start[c] += zk * buf[kk, c]
        zk *= z
    for c in range(m):
        buf[0, c] = start[c] * norm
    for k in range(1, n):
        for c in range(m):
            buf[k, c] += z * buf[k - 1, c]
    for c in range(m):
        buf[n - 1, c] = (z / (z * z - 1.0)) * (buf[n - 1, c] + z * buf[n - 2, c])
    for k in range(n - 2, -1, -1):
        for c in range(m):
            buf[k, c] = z * (buf[k + 1, c] - buf[k, c])
    for k in range(n):
        for c in range(m):
            buf[k, c] *= 6.0


@numba.njit(parallel=True, nogil=True, cache=True)
def _prefilter_2d(image, out):
    ny, nx = image.shape
    width = 32  # lines filtered side by side: rows' blocks along y are contiguous
    for b in numba.prange((ny + width - 1) // width):  # along x, on blocks of rows
        j0, j1 = b * width, min(b * width + width, ny)
        buf = np.empty((nx, j1 - j0))
        for j in range(j0, j1):
            for i in range(nx):
                buf[i, j - j0] = image[j, i]
        _prefilter_lines(buf, nx, j1 - j0)
        for j in range(j0, j1):
            for i in range(nx):
                out[j, i] = buf[i, j - j0]
    for b in numba.prange((nx + width - 1) // width):  # along y, on blocks of columns
        i0, i1 = b * width, min(b * width + width, nx)
        buf = np.empty((ny, i1 - i0))
        for j in range(ny):
            for i in range(i0, i1):
                buf[j, i - i0] = out[j, i]
        _prefilter_lines(buf, ny, i1 - i0)
        for j in range(ny):
            for i in range(i0, i1):
                out[j, i] = buf[j, i - i0]


def spline_coefficients(image: np.ndarray, *, order: str, out: np.ndarray | None = None) -> np.ndarray:
    """What the interpolation of ``order`` samples: for ``bicubic`` the cubic B-spline
    coefficients of ``image`` (ny, nx) with a mirror boundary (what
    ``scipy.ndimage.spline_filter(order=3, mode="mirror")`` computes, here on all cores), for
    ``bilinear`` the image itself; float32, into ``out`` when given."""
    out = np.empty(np.shape(image), np.float32) if out is None else out
    if ORDERS[order] == CUBIC:
        _prefilter_2d(np.asarray(image, np.float32), out)
    else:
        out[...] = image
    return out


@numba.njit(inline="always")
def _mirror(i, n):
    if i < 0:
        i = -i
    if i > n - 1:
        i = 2 * (n - 1) - i
    return min(max(i, 0), n - 1)


@numba.njit(inline="always")
def _sample_linear(a, k, x, y):
    """Plane ``k`` of ``a`` (nplanes, ny, nx) at input pixel (x, y) (inside [0, n-1]), bilinearly."""
    ny, nx = a.shape[1], a.shape[2]
    ix, iy = int(np.floor(x)), int(np.floor(y))
    tx, ty = x - ix, y - iy
    x1, y1 = _mirror(ix + 1, nx), _mirror(iy + 1, ny)
    return ((1 - ty) * ((1 - tx) * a[k, iy, ix] + tx * a[k, iy, x1])
            + ty * ((1 - tx) * a[k, y1, ix] + tx * a[k, y1, x1]))


@numba.njit(inline="always")
def _sample_all(a, x, y, cubic, vals):
    """Every plane of ``a`` (nplanes, ny, nx) at input pixel (x, y) (inside [0, n-1]) into
    ``vals`` (nplanes,): bilinear, or the cubic B-spline of coefficients ``a``; the weights and
    the indices are computed once for all planes."""
    ny, nx = a.shape[1], a.shape[2]
    if not cubic:
        for k in range(a.shape[0]):
            vals[k] = _sample_linear(a, k, x, y)
        return
    ix, iy = int(np.floor(x)), int(np.floor(y))
    tx, ty = x - ix, y - iy
    wx = ((1 - tx) ** 3 / 6, (3 * tx ** 3 - 6 * tx ** 2 + 4) / 6, (-3 * tx ** 3 + 3 * tx ** 2 + 3 * tx + 1) / 6,
          tx ** 3 / 6)
    wy = ((1 - ty) ** 3 / 6, (3 * ty ** 3 - 6 * ty ** 2 + 4) / 6, (-3 * ty ** 3 + 3 * ty ** 2 + 3 * ty + 1) / 6,
          ty ** 3 / 6)
    for k in range(a.shape[0]):
        vals[k] = 0.0
    if ix >= 1 and ix + 2 < nx and iy >= 1 and iy + 2 < ny:  # inside: no index reflected
        for k in range(a.shape[0]):
            total = 0.0
            for j in range(4):
                r = iy - 1 + j
                total += wy[j] * (wx[0] * a[k, r, ix - 1] + wx[1] * a[k, r, ix] + wx[2] * a[k, r, ix + 1]
                                  + wx[3] * a[k, r, ix + 2])
            vals[k] = total
        return
    c0, c1, c2, c3 = _mirror(ix - 1, nx), _mirror(ix, nx), _mirror(ix + 1, nx), _mirror(ix + 2, nx)
    for j in range(4):
        r = _mirror(iy - 1 + j, ny)
        for k in range(a.shape[0]):
            vals[k] += wy[j] * (wx[0] * a[k, r, c0] + wx[1] * a[k, r, c1] + wx[2] * a[k, r, c2] + wx[3] * a[k, r, c3])


@numba.njit(inline="always")
def _position(lx, ly, step, j, i, ny_in, nx_in):
    """The input pixel of box pixel (j, i) from the lattice; (-1, -1, False) outside the image."""
    gy, gx = j * (1.0 / step), i * (1.0 / step)
    jy, jx = min(int(gy), lx.shape[0] - 2), min(int(gx), lx.shape[1] - 2)
    if lx.shape[0] == 1:
        jy, gy = 0, 0.0
    if lx.shape[1] == 1:
        jx, gx = 0, 0.0
    ty, tx = gy - jy, gx - jx
    jy1, jx1 = min(jy + 1, lx.shape[0] - 1), min(jx + 1, lx.shape[1] - 1)
    x = ((1 - ty) * ((1 - tx) * lx[jy, jx] + tx * lx[jy, jx1]) + ty * ((1 - tx) * lx[jy1, jx] + tx * lx[jy1, jx1]))
    y = ((1 - ty) * ((1 - tx) * ly[jy, jx] + tx * ly[jy, jx1]) + ty * ((1 - tx) * ly[jy1, jx] + tx * ly[jy1, jx1]))
    if not (x >= -0.5 and x <= nx_in - 0.5 and y >= -0.5 and y <= ny_in - 0.5):  # NaN fails too
        return -1.0, -1.0, False
    return min(max(x, 0.0), nx_in - 1.0), min(max(y, 0.0), ny_in - 1.0), True


@numba.njit(parallel=True, nogil=True, cache=True)
def _add_kernel(coef, smooth, var_scalar, lx, ly, step, j0, i0, cubic, pb_cutoff, planes, weight, pb_weight, noise,
                count):
    nplanes, ny_in, nx_in = coef.shape
    for j in numba.prange(planes.shape[1]):
        vals = np.empty(nplanes)
        for i in range(planes.shape[2]):
            x, y, inside = _position(lx, ly, step, j + j0, i + i0, ny_in, nx_in)
            if not inside:
                continue
            pb = _sample_linear(smooth, 0, x, y)
            if not pb >= pb_cutoff:
                continue
            var = _sample_linear(smooth, 1, x, y) if smooth.shape[0] > 1 else var_scalar
            if not var > 0:
                continue
            _sample_all(coef, x, y, cubic, vals)
            finite = True
            for k in range(nplanes):
                finite = finite and np.isfinite(vals[k])
            if not finite:
                continue
            w = pb / var  # B / sigma²
            covered = count[j, i] > 0
            w_old = weight[j, i] if covered else 0.0
            w_new = w_old + w * pb
            for k in range(nplanes):  # the sum B I / sigma² is the plane times W
                planes[k, j, i] = ((planes[k, j, i] * w_old if covered else 0.0) + w * vals[k]) / w_new
            weight[j, i] = w_new
            noise[j, i] = 1.0 / np.sqrt(w_new)
            pb_weight[j, i] = np.sqrt((pb_weight[j, i] ** 2 if covered else 0.0) + pb * pb)
            count[j, i] += 1


def add_planes(*, coef: np.ndarray, smooth: np.ndarray, var_jy2: float, lattice: tuple[np.ndarray, np.ndarray, int],
               order: str, pb_cutoff: float, planes: np.ndarray, weight: np.ndarray, pb_weight: np.ndarray,
               noise: np.ndarray, count: np.ndarray, origin: tuple[int, int] = (0, 0)) -> None:
    """Add one image, resampled, to a box of a linear mosaic, in place.

    Where the resampled beam ``B ≥ pb_cutoff``, the variance ``σ² > 0`` and every plane is
    finite: ``W' = W + B²/σ²``, ``planes[k]' = (planes[k]·W + B/σ²·plane_k) / W'``,
    ``pb_weight' = sqrt(pb_weight² + B²)``, ``noise' = 1/sqrt(W')``, ``count' = count + 1``
    (where ``count`` is 0 the old values are ignored: NaN there is fine).

    coef: float32 (nplanes, ny_in, nx_in) from `spline_coefficients` with ``order``;
    smooth: float32 (1 or 2, ny_in, nx_in): the primary beam and, when 2, a variance map (Jy²),
    both sampled bilinearly; var_jy2: the variance when there is no map;
    planes: float32 (nplanes, ny, nx) (Jy/beam, primary-beam corrected); weight (Jy⁻²),
    pb_weight, noise (Jy/beam) float32 (ny, nx); count int16 (ny, nx): part of the box of the
    mosaic that the lattice covers, whose pixel [0, 0] is the box's pixel ``origin`` (y, x)
    (views are fine)."""
    lx, ly, step = lattice
    if origin[0] < 0 or origin[1] < 0:
        raise ValueError(f"origin {origin}: the part must lie inside the lattice's box")
    _add_kernel(coef, smooth, float(var_jy2), lx, ly, step, int(origin[0]), int(origin[1]), ORDERS[order] == CUBIC,
                float(pb_cutoff), planes, weight, pb_weight, noise, count)
