"""Drift-scan mosaics: consecutive groups' images combined by primary-beam-weighted,
inverse-variance linear mosaicking onto one common projection (`contimg.mosaic.linear`), on a
grid that follows the strip (`contimg.mosaic.grid`). Pure functions over arrays; the products,
the running strip and the database rows are `contimg.pipeline.mosaic`'s."""

from contimg.mosaic.grid import footprint_box, strip_header
from contimg.mosaic.linear import MosaicSums, add_image, empty_sums, finish_mosaic, reproject_plane

__all__ = ["strip_header", "footprint_box", "MosaicSums", "empty_sums", "reproject_plane", "add_image",
           "finish_mosaic"]
