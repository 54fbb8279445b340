"""Primary-beam-weighted, inverse-variance linear mosaicking.

Image ``i`` (apparent, not primary-beam corrected, Jy/beam) is ``I_i = B_i S + n_i`` with
``B_i`` its group-averaged primary beam and ``n_i`` noise of RMS ``sigma_i``. The least-squares
estimate of the sky ``S`` from all images covering a pixel, and its noise, are

    M = sum_i (B_i / sigma_i^2) I_i / W,   W = sum_i B_i^2 / sigma_i^2,   sigma_M = 1 / sqrt(W)

(Cornwell 1988; ASKAP's linmos), taken over the images with ``B_i >= pb_cutoff`` there. The
mosaic's primary-beam weight ``P = sqrt(sum_i B_i^2)`` is its response relative to one image's
centre (for images of equal noise ``sigma_M = sigma / P``).

A mosaic is kept as its planes (`Mosaic`: the pbcor planes M, W, sqrt(sum B²), the noise and
the images counted), and adding an image updates them in place: the sums are ``M·W`` and
``pb_weight²``, so a running mosaic needs nothing beside its products and an update costs one
resampling of the new image and one pass over the box it covers.

Every image is resampled onto the mosaic's grid by `contimg.mosaic.resample` (the pixel mapping
exact on a lattice and interpolated between, cubic B-spline interpolation as reproject's
``bicubic``: on a beam sampled by ~3 pixels bilinear interpolation loses up to a few per cent of a
point source's peak, bicubic under 0.5 %; see tests/test_mosaic.py) in the same pass as it is
added: no resampled copy of the image exists. An image that goes into several mosaics
(neighbouring spans) is prefiltered once (`prepare_image`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from astropy.wcs import WCS

from contimg.mosaic.grid import footprint_box
from contimg.mosaic.resample import add_planes, pixel_lattice, spline_coefficients

__all__ = ["Mosaic", "PreparedImage", "Placement", "empty_mosaic", "prepare_image", "place", "add_placed",
           "add_image"]


@dataclass
class Mosaic:
    """A linear mosaic on (part of) its grid: ``planes`` (nplanes, ny, nx) float32, the
    primary-beam-corrected planes (Jy/beam) named in ``names`` (e.g. ``image``, ``residual``);
    ``weight`` W = sum B²/σ² (Jy⁻²), ``pb_weight`` sqrt(sum B²), ``noise`` 1/sqrt(W) (Jy/beam),
    all (ny, nx) float32 and NaN where no image contributes; ``count`` (ny, nx) int16, the images
    contributing."""

    names: tuple[str, ...]
    planes: np.ndarray
    weight: np.ndarray
    pb_weight: np.ndarray
    noise: np.ndarray
    count: np.ndarray
    images: list[str] = field(default_factory=list)

    def plane(self, name: str) -> np.ndarray:
        return self.planes[self.names.index(name)]


def empty_mosaic(*, shape: tuple[int, int], names: tuple[str, ...] = ("image", "residual")) -> Mosaic:
    """A mosaic that no image reaches yet, on a grid of ``shape`` (ny, nx), with the named planes."""
    nan = lambda: np.full(shape, np.nan, np.float32)  # noqa: E731
    return Mosaic(names=tuple(names), planes=np.full((len(names), *shape), np.nan, np.float32), weight=nan(),
                  pb_weight=nan(), noise=nan(), count=np.zeros(shape, np.int16))


@dataclass
class PreparedImage:
    """One image ready to be added to mosaics: ``coef`` (nplanes, ny, nx) float32, what the
    interpolation of ``order`` samples for each plane of ``names``; ``smooth`` (1 or 2, ny, nx)
    float32, the primary beam and, when 2, the variance map (Jy²); ``var_jy2`` the variance when
    there is no map; ``wcs`` the image's celestial WCS."""

    names: tuple[str, ...]
    coef: np.ndarray
    smooth: np.ndarray
    var_jy2: float
    wcs: WCS
    order: str

    @property
    def shape(self) -> tuple[int, int]:
        return self.coef.shape[1], self.coef.shape[2]


def prepare_image(*, planes: dict[str, np.ndarray], pb: np.ndarray, noise_jy: float | np.ndarray, wcs: WCS,
                  order: str = "bicubic") -> PreparedImage:
    """An image for `add_image`: planes: name → (ny, nx) apparent images (Jy/beam, not
    primary-beam corrected) on ``wcs``; pb: (ny, nx) its averaged primary beam; noise_jy: its
    noise (Jy/beam), a scalar or a (ny, nx) map; order: ``bicubic`` or ``bilinear`` (the beam and
    a noise map are always bilinear)."""
    names = tuple(planes)
    shape = np.shape(pb)
    coef = np.empty((len(names), *shape), np.float32)
    for k, name in enumerate(names):
        spline_coefficients(planes[name], order=order, out=coef[k])
    noise = np.asarray(noise_jy, np.float64)
    smooth = np.empty((1 + (noise.ndim > 0), *shape), np.float32)
    smooth[0] = pb
    if noise.ndim:
        smooth[1] = noise ** 2
    return PreparedImage(names=names, coef=coef, smooth=smooth, var_jy2=float(noise ** 2) if not noise.ndim else 0.0,
                         wcs=wcs, order=order)


@dataclass
class Placement:
    """Where an image lands on a mosaic's grid: ``box`` ``(y0, y1, x0, x1)``, the grid's pixels
    it covers, and ``lattice`` ``(lx, ly, step)``, the pixel mapping over that box
    (`contimg.mosaic.resample.pixel_lattice`)."""

    box: tuple[int, int, int, int]
    lattice: tuple[np.ndarray, np.ndarray, int]


def place(image: PreparedImage, *, wcs_out: WCS, shape_out: tuple[int, int]) -> Placement | None:
    """Where ``image`` lands on the grid ``wcs_out`` of ``shape_out`` (ny, nx); None when it
    misses it."""
    box = footprint_box(wcs_in=image.wcs, shape_in=image.shape, wcs_out=wcs_out, shape_out=shape_out)
    if box is None:
        return None
    lx, ly, step, _ = pixel_lattice(wcs_in=image.wcs, wcs_out=wcs_out, box=box)
    return Placement(box=box, lattice=(lx, ly, step))


def add_placed(part: Mosaic, *, image: PreparedImage, placement: Placement, pb_cutoff: float,
               at: tuple[int, int]) -> None:
    """Add ``image`` to ``part``, the piece of a mosaic whose pixel [0, 0] is the grid's pixel
    ``at`` (y, x) and which lies inside ``placement.box`` (in place): pixels where the image's
    resampled beam is below ``pb_cutoff`` (or outside the image) do not change. What lets a
    stored mosaic be updated a few columns at a time."""
    if image.names != part.names:
        raise ValueError(f"the image's planes {image.names} are not the mosaic's {part.names}")
    y0, y1, x0, x1 = placement.box
    ny, nx = part.weight.shape
    if not (y0 <= at[0] and at[0] + ny <= y1 and x0 <= at[1] and at[1] + nx <= x1):
        raise ValueError(f"a part at {at} of {ny} x {nx} pixels is not inside the image's box {placement.box}")
    add_planes(coef=image.coef, smooth=image.smooth, var_jy2=image.var_jy2, lattice=placement.lattice,
               order=image.order, pb_cutoff=pb_cutoff, planes=part.planes, weight=part.weight,
               pb_weight=part.pb_weight, noise=part.noise, count=part.count, origin=(at[0] - y0, at[1] - x0))


def add_image(mosaic: Mosaic, *, image: PreparedImage, wcs_out: WCS, pb_cutoff: float,
              name: str = "") -> tuple | None:
    """Add one image (`prepare_image`) to ``mosaic`` (in place; its grid is ``wcs_out``, shape
    ``mosaic.weight.shape``): pixels where the image's resampled beam is below ``pb_cutoff`` (or
    outside the image) do not change. ``image.names`` must be ``mosaic.names``.
    Returns the box ``(y0, y1, x0, x1)`` of the grid that changed, None when the image misses it."""
    if image.names != mosaic.names:
        raise ValueError(f"the image's planes {image.names} are not the mosaic's {mosaic.names}")
    placement = place(image, wcs_out=wcs_out, shape_out=mosaic.weight.shape)
    if placement is None:
        return None
    y0, y1, x0, x1 = placement.box
    rows, cols = slice(y0, y1), slice(x0, x1)
    part = Mosaic(names=mosaic.names, planes=mosaic.planes[:, rows, cols], weight=mosaic.weight[rows, cols],
                  pb_weight=mosaic.pb_weight[rows, cols], noise=mosaic.noise[rows, cols], count=mosaic.count[rows, cols])
    add_placed(part, image=image, placement=placement, pb_cutoff=pb_cutoff, at=(y0, x0))
    if name:
        mosaic.images.append(name)
    return placement.box
