"""The common projection of a strip mosaic.

A drift-scan strip is long in RA and as tall as one image in Dec. Its grid is a SIN projection
about the strip's centre (RA of the meridian at the span's mid-time, the pointing declination),
square pixels of ``cell_rad``, with the same FITS conventions as the single images
(`contimg.io.fits.image_header`: RA increasing to the left, Dec up, a frequency and a Stokes
axis). Over one hour of RA (about 13 deg on the sky at Dec 30) SIN's scale changes by < 1 % at
the ends, so a beam keeps its shape in pixels to that accuracy.
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from contimg.io.fits import image_header

__all__ = ["strip_header", "footprint_box"]


def strip_header(*, ra_rad: float, dec_rad: float, width_rad: float, height_rad: float, cell_rad: float,
                 freq_hz: float, bandwidth_hz: float, time_start_jd: float, time_mid_jd: float,
                 beam_rad: tuple[float, float, float] | None, extra: dict | None = None) -> fits.Header:
    """The FITS header (full WCS, NAXIS1 × NAXIS2 = nx × ny) of a strip grid centred at
    (``ra_rad``, ``dec_rad``) ICRS, ``width_rad`` along RA and ``height_rad`` along Dec (on the
    sky, rounded up to an even number of ``cell_rad`` pixels). Units: Jy/beam."""
    nx = int(2 * np.ceil(width_rad / cell_rad / 2))
    ny = int(2 * np.ceil(height_rad / cell_rad / 2))
    h = image_header(npix=nx, cell_rad=cell_rad, ra_rad=ra_rad, dec_rad=dec_rad, freq_hz=freq_hz,
                     bandwidth_hz=bandwidth_hz, time_start_jd=time_start_jd, time_mid_jd=time_mid_jd,
                     bunit="Jy/beam", beam_rad=beam_rad, extra=extra)
    h["CRPIX2"] = ny / 2 + 1.0
    h["NAXIS"] = 4
    for k, n in ((1, nx), (2, ny), (3, 1), (4, 1)):
        h[f"NAXIS{k}"] = n
    return h


def footprint_box(*, wcs_in: WCS, shape_in: tuple[int, int], wcs_out: WCS, shape_out: tuple[int, int],
                  pad: int = 2) -> tuple[int, int, int, int] | None:
    """The pixel box ``(y0, y1, x0, x1)`` of the output grid (ny, nx) that an input image
    (celestial ``wcs_in``, ``shape_in`` (ny, nx)) covers, from its edge pixels mapped through
    both WCSs, widened by ``pad``; None when it misses the grid."""
    ny, nx = shape_in
    edge_x = np.concatenate([np.arange(nx), np.arange(nx), np.zeros(ny), np.full(ny, nx - 1)])
    edge_y = np.concatenate([np.zeros(nx), np.full(nx, ny - 1), np.arange(ny), np.arange(ny)])
    ra, dec = wcs_in.pixel_to_world_values(edge_x, edge_y)
    x, y = wcs_out.world_to_pixel_values(ra, dec)
    x, y = np.asarray(x), np.asarray(y)
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return None
    x0 = max(int(np.floor(x[ok].min())) - pad, 0)
    x1 = min(int(np.ceil(x[ok].max())) + pad + 1, shape_out[1])
    y0 = max(int(np.floor(y[ok].min())) - pad, 0)
    y1 = min(int(np.ceil(y[ok].max())) + pad + 1, shape_out[0])
    if x0 >= x1 or y0 >= y1:
        return None
    return y0, y1, x0, x1
