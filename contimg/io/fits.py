"""FITS images with a complete WCS: SIN projection about the image's ICRS phase centre, beam
keywords, units, DATE-OBS, a frequency and a Stokes axis. Written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.time import Time

__all__ = ["image_header", "imageset_header", "write_fits", "read_clean_mask"]


def image_header(*, npix: int, cell_rad: float, ra_rad: float, dec_rad: float, freq_hz: float,
                 bandwidth_hz: float, time_start_jd: float, time_mid_jd: float, bunit: str,
                 beam_rad: tuple[float, float, float] | None, extra: dict | None = None) -> fits.Header:
    h = fits.Header()
    cell_deg = np.degrees(cell_rad)
    cards = [
        ("CTYPE1", "RA---SIN"), ("CRVAL1", float(np.degrees(ra_rad) % 360.0)), ("CDELT1", -cell_deg),
        ("CRPIX1", npix / 2 + 1.0), ("CUNIT1", "deg"),
        ("CTYPE2", "DEC--SIN"), ("CRVAL2", float(np.degrees(dec_rad))), ("CDELT2", cell_deg),
        ("CRPIX2", npix / 2 + 1.0), ("CUNIT2", "deg"),
        ("CTYPE3", "FREQ"), ("CRVAL3", float(freq_hz)), ("CDELT3", float(bandwidth_hz)), ("CRPIX3", 1.0),
        ("CUNIT3", "Hz"),
        ("CTYPE4", "STOKES"), ("CRVAL4", 1.0), ("CDELT4", 1.0), ("CRPIX4", 1.0), ("CUNIT4", ""),
        ("RADESYS", "ICRS"), ("EQUINOX", 2000.0), ("SPECSYS", "TOPOCENT"),
        ("BUNIT", bunit), ("BTYPE", "Intensity"),
        ("DATE-OBS", Time(time_start_jd, format="jd", scale="utc").isot),
        ("MJD-OBS", float(time_start_jd - 2400000.5)), ("MJD-AVG", float(time_mid_jd - 2400000.5)),
        ("DATE-AVG", Time(time_mid_jd, format="jd", scale="utc").isot),
        ("TELESCOP", "DSA-110"), ("INSTRUME", "DSA"), ("TIMESYS", "UTC"),
        ("ORIGIN", "contimg"),
    ]
    for k, v in cards:
        h[k] = v
    if beam_rad is not None:
        h["BMAJ"], h["BMIN"], h["BPA"] = (float(np.degrees(beam_rad[0])), float(np.degrees(beam_rad[1])),
                                          float(np.degrees(beam_rad[2])))
    for k, v in (extra or {}).items():
        h[k] = v
    return h


def imageset_header(imgs, kind: str, *, extra: dict | None = None) -> fits.Header:
    """The header of image ``kind`` of an `contimg.imaging.imager.ImageSet`: Jy/pixel for the
    model, Jy/beam otherwise, the restoring beam on the restored, pbcor and residual images."""
    image = imgs.images[kind]
    return image_header(
        npix=image.shape[0], cell_rad=imgs.cell_rad, ra_rad=imgs.ra_rad, dec_rad=imgs.dec_rad,
        freq_hz=imgs.freq_hz, bandwidth_hz=imgs.bandwidth_hz, time_start_jd=imgs.time_start_jd,
        time_mid_jd=imgs.time_mid_jd, bunit={"model": "Jy/pixel"}.get(kind, "Jy/beam"),
        beam_rad=imgs.beam_rad if kind in ("restored", "pbcor", "residual") else None,
        extra={"NITER": imgs.clean_iterations, **(extra or {})})


def write_fits(path: str | Path, *, image: np.ndarray, header: fits.Header) -> Path:
    """Write ``image`` (ny, nx) as a (1, 1, ny, nx) primary HDU via a temporary name."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fits.PrimaryHDU(data=image[None, None].astype(np.float32), header=header).writeto(tmp, overwrite=True)
    os.replace(tmp, path)
    return path


def read_clean_mask(path: str | None, *, npix: int) -> np.ndarray | None:
    """The CLEAN mask of ``image.clean_mask``: a FITS image of npix x npix pixels in the
    products' order (extra axes of length 1 allowed), True where non-zero; None for None."""
    if path is None:
        return None
    try:
        data = np.squeeze(np.asarray(fits.getdata(path)))
    except (OSError, ValueError, IndexError) as exc:  # IndexError: no HDU holds data
        raise ValueError(f"image.clean_mask {path}: cannot read it as FITS ({exc})") from exc
    if data.shape != (npix, npix):
        raise ValueError(f"image.clean_mask {path}: shape {data.shape}, the images are ({npix}, {npix})")
    return np.nan_to_num(data) != 0
