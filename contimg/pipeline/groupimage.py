"""One processed group's images as the mosaics and the catalogue read them back."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from astropy.wcs import WCS

from contimg.imaging.storage import load_imageset
from contimg.qa.sources import image_wcs

__all__ = ["GroupImage", "load_group_image", "group_grid"]


@dataclass
class GroupImage:
    """One group's images as the mosaic and the catalogue use them (all (ny, nx) float32)."""

    group_id: str
    restored: np.ndarray  # apparent, Jy/beam
    residual: np.ndarray
    pb: np.ndarray  # the group-averaged primary beam
    noise_jy: float  # robust RMS of the residual
    wcs: WCS
    beam_rad: tuple[float, float, float]
    cell_rad: float
    freq_hz: float
    bandwidth_hz: float
    ra_rad: float
    dec_rad: float
    time_start_jd: float
    time_mid_jd: float

    @property
    def mid_mjd(self) -> float:
        return self.time_mid_jd - 2400000.5


def load_group_image(root: str | Path, group_id: str) -> GroupImage:
    """The images of a processed group, from ``<root>/products/<group_id>/image.zarr``."""
    imgs, _ = load_imageset(Path(root) / "products" / group_id / "image.zarr", images=("restored", "residual", "pb"))
    npix = imgs.images["restored"].shape[0]
    return GroupImage(group_id=group_id, restored=imgs.images["restored"], residual=imgs.images["residual"],
                      pb=imgs.images["pb"], noise_jy=float(imgs.noise_jy),
                      wcs=image_wcs(npix=npix, cell_rad=imgs.cell_rad, ra_rad=imgs.ra_rad, dec_rad=imgs.dec_rad),
                      beam_rad=tuple(imgs.beam_rad), cell_rad=imgs.cell_rad, freq_hz=imgs.freq_hz,
                      bandwidth_hz=imgs.bandwidth_hz, ra_rad=imgs.ra_rad, dec_rad=imgs.dec_rad,
                      time_start_jd=imgs.time_start_jd, time_mid_jd=imgs.time_mid_jd)


def group_grid(root: str | Path, group_id: str) -> tuple[WCS, tuple[int, int]]:
    """A processed group's image grid (celestial WCS, shape (ny, nx)) from its ``image.zarr``'s
    metadata: no pixel is read."""
    imgs, _ = load_imageset(Path(root) / "products" / group_id / "image.zarr", images=())
    shape = zarr.open_group(str(Path(root) / "products" / group_id / "image.zarr"), mode="r")["pb"].shape
    return image_wcs(npix=shape[0], cell_rad=imgs.cell_rad, ra_rad=imgs.ra_rad, dec_rad=imgs.dec_rad), tuple(shape)
