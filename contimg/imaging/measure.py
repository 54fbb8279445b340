"""Measure a point source in an image: a Gaussian of the restoring beam's shape, with free
amplitude and position, fitted around a guessed pixel (forced photometry and truth checks)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from contimg.imaging.restore import FWHM_PER_SIGMA, elliptical_gaussian

__all__ = ["PointFit", "fit_point_source"]


@dataclass(frozen=True)
class PointFit:
    flux: float  # peak of the fitted beam, image units (Jy/beam -> Jy for a point source)
    x: float  # fitted pixel (0-based, FITS order column)
    y: float
    ok: bool


def fit_point_source(*, image: np.ndarray, x0: float, y0: float, beam_rad: tuple[float, float, float],
                     cell_rad: float, half_box: int | None = None) -> PointFit:
    """Fit amplitude and position of a beam-shaped Gaussian near pixel (x0, y0).

    image: (ny, nx); beam_rad: (bmaj, bmin, bpa) radians; NaN pixels are ignored.
    """
    smaj = beam_rad[0] / FWHM_PER_SIGMA / cell_rad
    smin = beam_rad[1] / FWHM_PER_SIGMA / cell_rad
    hb = half_box or max(3, int(np.ceil(1.0 * smaj)))
    ix, iy = int(round(x0)), int(round(y0))
    ny, nx = image.shape
    if not (hb <= ix < nx - hb and hb <= iy < ny - hb):
        return PointFit(np.nan, x0, y0, False)
    box = image[iy - hb:iy + hb + 1, ix - hb:ix + hb + 1].astype(np.float64)
    yy, xx = np.mgrid[iy - hb:iy + hb + 1, ix - hb:ix + hb + 1]
    good = np.isfinite(box)
    if good.sum() < 5:
        return PointFit(np.nan, x0, y0, False)

    def resid(p):
        amp, x, y = p
        return (amp * elliptical_gaussian(-(xx[good] - x), yy[good] - y, smaj, smin, beam_rad[2]) - box[good])

    start = [float(np.nanmax(box)), float(x0), float(y0)]
    fit = least_squares(resid, start, bounds=([-np.inf, x0 - hb, y0 - hb], [np.inf, x0 + hb, y0 + hb]))
    return PointFit(float(fit.x[0]), float(fit.x[1]), float(fit.x[2]), bool(fit.success))
