"""Fit the PSF's main lobe with an elliptical Gaussian; restore the CLEAN model with it.

Beam convention (FITS): BMAJ/BMIN full widths at half maximum, BPA the major axis' position
angle from north through east. Pixels: x grows to the west (east = -x), y to the north.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import least_squares
from scipy.signal import fftconvolve

__all__ = ["elliptical_gaussian", "fit_beam", "gaussian_kernel", "restore", "convolve_same_xp"]

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def elliptical_gaussian(east, north, smaj, smin, pa):
    """Peak-1 Gaussian with sigmas ``smaj``/``smin`` (pixels), major axis at position angle ``pa``
    (radians, north through east), at offsets ``east``/``north`` (pixels)."""
    a = east * np.sin(pa) + north * np.cos(pa)  # along the major axis
    b = east * np.cos(pa) - north * np.sin(pa)
    return np.exp(-0.5 * ((a / smaj) ** 2 + (b / smin) ** 2))


FIT_HALF_BOX = 24  # `fit_beam` reads the PSF's (2 * 24 + 1)² pixels around its peak


def beam_box(psf, *, half_box: int = FIT_HALF_BOX):
    """The (2 half_box + 1)² pixels of ``psf`` (ny, nx) around its peak at (ny/2, nx/2), a view
    of the same array module: all `fit_beam` reads (a device's PSF need not come back whole)."""
    cy, cx = psf.shape[0] // 2, psf.shape[1] // 2
    return psf[cy - half_box:cy + half_box + 1, cx - half_box:cx + half_box + 1]


def fit_beam(*, psf: np.ndarray, cell_rad: float, half_box: int = FIT_HALF_BOX) -> tuple[float, float, float]:
    """(bmaj_rad, bmin_rad, bpa_rad) of the Gaussian fitted to the PSF's pixels above 0.35 near
    its peak (above 0.2, then 0.1, when fewer than 9 pixels are: a beam of ~2 pixels leaves a
    main lobe of 5, which three parameters fit exactly in several ways). psf: (ny, nx), peak at
    (ny/2, nx/2), or its `beam_box`."""
    box = beam_box(psf, half_box=half_box).astype(np.float64)
    yy, xx = np.mgrid[-half_box:half_box + 1, -half_box:half_box + 1]
    east, north = -xx.astype(float), yy.astype(float)
    # the main lobe: pixels above 0.35 connected to the peak (flood fill)
    from scipy.ndimage import label
    for level in (0.35, 0.2, 0.1):
        lab, _ = label(box > level)
        sel = lab == lab[half_box, half_box]
        if sel.sum() >= 9:
            break

    def resid(p):
        return (elliptical_gaussian(east[sel], north[sel], p[0], p[1], p[2]) - box[sel])

    r0 = max(np.sqrt(sel.sum() / np.pi) / 1.2, 0.7)
    best = None
    for pa0 in (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4):
        fit = least_squares(resid, x0=[r0 * 1.2, r0 * 0.8, pa0], bounds=([0.1, 0.1, -np.pi], [4 * half_box] * 2 + [2 * np.pi]))
        if best is None or fit.cost < best.cost:
            best = fit
    smaj, smin, pa = best.x
    if smin > smaj:
        smaj, smin, pa = smin, smaj, pa + np.pi / 2
    pa = (pa + np.pi / 2) % np.pi - np.pi / 2
    return smaj * FWHM_PER_SIGMA * cell_rad, smin * FWHM_PER_SIGMA * cell_rad, float(pa)


def gaussian_kernel(*, shape: tuple[int, int], bmaj_rad: float, bmin_rad: float, bpa_rad: float,
                    cell_rad: float) -> np.ndarray:
    """The restoring beam (ny, nx) float64, peak 1 at (ny/2, nx/2)."""
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    east, north = -(xx - nx // 2).astype(float), (yy - ny // 2).astype(float)
    return elliptical_gaussian(east, north, bmaj_rad / FWHM_PER_SIGMA / cell_rad, bmin_rad / FWHM_PER_SIGMA / cell_rad, bpa_rad)


def restore(*, model: np.ndarray, residual: np.ndarray, bmaj_rad: float, bmin_rad: float, bpa_rad: float,
            cell_rad: float, xp=None) -> np.ndarray:
    """Restored image (ny, nx) float32 Jy/beam = model (Jy/pixel) * Gaussian beam + residual.
    ``xp``: None or numpy, the CPU path: each component's beam added where it lies (`_stamp`),
    or scipy's fftconvolve when the components are too many for that; cupy (or the twin module), the
    same convolution as array code on ``xp`` (`convolve_same_xp`), model, residual and the
    result arrays of ``xp``."""
    half = int(np.ceil(4 * bmaj_rad / cell_rad)) + 1
    size = min(2 * half + 1, min(model.shape) - 1 + (min(model.shape) % 2))
    kern = gaussian_kernel(shape=(size, size), bmaj_rad=bmaj_rad, bmin_rad=bmin_rad, bpa_rad=bpa_rad, cell_rad=cell_rad)
    if xp is not None and xp is not np:
        conv = convolve_same_xp(xp=xp, image=xp.asarray(model, dtype=np.float64), kernel=xp.asarray(kern))
        return (conv + residual).astype(np.float32)
    ys, xs = np.nonzero(model)
    if ys.size * kern.size > model.size:  # many components: one FFT convolution is cheaper
        conv = fftconvolve(model.astype(np.float64), kern, mode="same")
        return (conv + residual).astype(np.float32)
    out = np.array(residual, np.float64)
    _stamp(out, ys, xs, model[ys, xs].astype(np.float64), kern)
    return out.astype(np.float32)


def _stamp(out: np.ndarray, ys: np.ndarray, xs: np.ndarray, values: np.ndarray, kern: np.ndarray) -> None:
    """``out`` += each value times ``kern`` (odd sizes, centred on the pixel), clipped at the
    edges: fftconvolve's "same" convolution of a sparse model, without full-size transforms."""
    h0, h1 = kern.shape[0] // 2, kern.shape[1] // 2
    ny, nx = out.shape
    for y, x, v in zip(ys.tolist(), xs.tolist(), values.tolist()):
        y0, y1, x0, x1 = max(y - h0, 0), min(y + h0 + 1, ny), max(x - h1, 0), min(x + h1 + 1, nx)
        out[y0:y1, x0:x1] += v * kern[y0 - y + h0:y1 - y + h0, x0 - x + h1:x1 - x + h1]


def convolve_same_xp(*, xp, image, kernel):
    """scipy.signal.fftconvolve(image, kernel, mode="same") as array code on ``xp`` (real FFTs
    of the full linear size, the central part kept as scipy keeps it)."""
    full = tuple(a + b - 1 for a, b in zip(image.shape, kernel.shape))
    spec = xp.fft.rfft2(image, s=full) * xp.fft.rfft2(kernel, s=full)
    out = xp.fft.irfft2(spec, s=full)
    start = [(k - 1) // 2 for k in kernel.shape]
    return out[start[0]:start[0] + image.shape[0], start[1]:start[1] + image.shape[1]]
