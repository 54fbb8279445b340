"""An `ImageSet` as one Zarr group (`contimg.io.store`): every image and its metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from contimg.imaging.imager import ImageSet
from contimg.io.store import read_zarr, write_zarr

__all__ = ["save_imageset", "load_imageset"]


_IMAGESET_SCALARS = ("ra_rad", "dec_rad", "cell_rad", "freq_hz", "bandwidth_hz", "time_start_jd", "time_mid_jd",
                     "noise_jy", "peak_jy", "clean_iterations")


def save_imageset(path: Path, imgs: ImageSet, *, extra: dict | None = None) -> Path:
    """Every image of ``imgs`` and its metadata (plus ``extra`` attrs) as one Zarr group."""
    attrs = {k: getattr(imgs, k) for k in _IMAGESET_SCALARS}
    attrs.update(beam_rad=list(imgs.beam_rad), stats=imgs.stats, ra_deg=float(np.degrees(imgs.ra_rad)),
                 dec_deg=float(np.degrees(imgs.dec_rad)), **(extra or {}))
    return write_zarr(path, arrays=imgs.images, attrs=attrs)


def load_imageset(path: Path, images: tuple[str, ...] | None = None) -> tuple[ImageSet, dict]:
    """The `ImageSet` saved by `save_imageset` (with only the ``images`` named, when given:
    each real-size image is 64 MB), and all the attrs."""
    arrays, attrs = read_zarr(path, images)
    imgs = ImageSet(images=arrays, beam_rad=tuple(attrs["beam_rad"]), stats=attrs.get("stats", {}),
                    **{k: attrs[k] for k in _IMAGESET_SCALARS})
    return imgs, attrs
