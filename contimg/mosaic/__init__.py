"""Drift-scan mosaics: consecutive groups' images combined by primary-beam-weighted,
inverse-variance linear mosaicking onto one common projection (`contimg.mosaic.linear`,
resampling by `contimg.mosaic.resample`), on a grid that follows the strip
(`contimg.mosaic.grid`). Pure functions over arrays; the products,
the running strip and the database rows are `contimg.pipeline.mosaic`'s."""

from contimg.mosaic.grid import footprint_box, strip_header
from contimg.mosaic.linear import (Mosaic, Placement, PreparedImage, add_image, add_placed, empty_mosaic, place,
                                   prepare_image)

__all__ = ["strip_header", "footprint_box", "Mosaic", "PreparedImage", "Placement", "empty_mosaic", "prepare_image",
           "place", "add_placed", "add_image"]
