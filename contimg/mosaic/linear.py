"""Primary-beam-weighted, inverse-variance linear mosaicking.

Image ``i`` (apparent, not primary-beam corrected, Jy/beam) is ``I_i = B_i S + n_i`` with
``B_i`` its group-averaged primary beam and ``n_i`` noise of RMS ``sigma_i``. The least-squares
estimate of the sky ``S`` from all images covering a pixel, and its noise, are

    M = sum_i (B_i / sigma_i^2) I_i / W,   W = sum_i B_i^2 / sigma_i^2,   sigma_M = 1 / sqrt(W)

(Cornwell 1988; ASKAP's linmos), taken over the images with ``B_i >= pb_cutoff`` there. The
mosaic's primary-beam weight ``P = sqrt(sum_i B_i^2)`` is its response relative to one image's
centre (for images of equal noise ``sigma_M = sigma / P``).

Every image is first resampled onto the mosaic's grid with ``reproject`` (``reproject_interp``,
bicubic by default: on a beam sampled by ~3 pixels bilinear interpolation loses up to a few per
cent of a point source's peak, bicubic under 0.5 %; see tests/test_mosaic.py), only over the box
of the grid it covers. A running mosaic keeps the sums (`MosaicSums`), so a new image costs one
resampling of that image and an addition.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from astropy.wcs import WCS
from reproject import reproject_interp

from contimg.mosaic.grid import footprint_box

__all__ = ["MosaicSums", "empty_sums", "reproject_plane", "add_image", "finish_mosaic"]


@dataclass
class MosaicSums:
    """The running sums on the mosaic grid, all (ny, nx) float32: ``num`` = sum B I / sigma²
    per plane name (e.g. ``restored``, ``residual``), ``weight`` W = sum B² / sigma² (Jy⁻²),
    ``pb2`` = sum B², ``count`` = images contributing."""

    num: dict[str, np.ndarray]
    weight: np.ndarray
    pb2: np.ndarray
    count: np.ndarray
    images: list[str] = field(default_factory=list)


def empty_sums(*, shape: tuple[int, int], planes: tuple[str, ...] = ("restored", "residual")) -> MosaicSums:
    """Zero sums on a grid of ``shape`` (ny, nx) for the named planes."""
    return MosaicSums(num={p: np.zeros(shape, np.float32) for p in planes}, weight=np.zeros(shape, np.float32),
                      pb2=np.zeros(shape, np.float32), count=np.zeros(shape, np.int16))


def reproject_plane(*, image: np.ndarray, wcs_in: WCS, wcs_out: WCS, shape_out: tuple[int, int],
                    order: str = "bicubic") -> np.ndarray:
    """``image`` (ny, nx), or a stack (nplanes, ny, nx) sharing one mapping, on celestial
    ``wcs_in`` resampled onto ``wcs_out`` (``shape_out`` (ny, nx)) by
    ``reproject.reproject_interp`` with interpolation ``order``; NaN outside it. The pixel
    mapping is computed once for the stack, without reproject's round-trip check (both grids are
    small-field projections about nearby centres, where it never fails)."""
    out, _ = reproject_interp((np.asarray(image, np.float64), wcs_in), wcs_out, shape_out=shape_out, order=order,
                              roundtrip_coords=False)
    return out


_INPUT_MARGIN = 16  # input pixels around a block's footprint: the bicubic prefilter's reach decays as 0.27^n


def _accumulate(sums: MosaicSums, *, out: np.ndarray, rows: slice, cols: slice, var: np.ndarray,
                pb_cutoff: float) -> None:
    """Add one block of resampled planes (``out``: the sums' planes, the beam, [the variance])
    to ``sums`` at ``rows``, ``cols``."""
    n = len(sums.num)
    resampled = dict(zip(sums.num, out))
    pb_out = out[n]
    var = out[-1] if var.ndim else var
    with np.errstate(invalid="ignore"):
        use = np.isfinite(pb_out) & (pb_out >= pb_cutoff) & np.isfinite(var) & (var > 0)
    for plane in resampled.values():
        use &= np.isfinite(plane)
    w = np.where(use, np.where(use, pb_out, 0.0) / np.where(use, var, 1.0), 0.0)  # B / sigma²
    for key, plane in resampled.items():
        sums.num[key][rows, cols] += np.where(use, w * np.where(use, plane, 0.0), 0.0)
    sums.weight[rows, cols] += np.where(use, w * pb_out, 0.0)
    sums.pb2[rows, cols] += np.where(use, pb_out ** 2, 0.0)
    sums.count[rows, cols] += use


def add_image(sums: MosaicSums, *, planes: dict[str, np.ndarray], pb: np.ndarray, noise_jy: float | np.ndarray,
              wcs_in: WCS, wcs_out: WCS, pb_cutoff: float, name: str = "", order: str = "bicubic",
              rows_per_block: int = 512) -> tuple | None:
    """Add one image to ``sums`` (in place; its grid is ``wcs_out``, shape ``sums.weight.shape``).

    planes: name → (ny, nx) apparent images (Jy/beam) on ``wcs_in``, one per plane of ``sums``;
    pb: (ny, nx) the image's averaged primary beam (resampled with the same ``order``);
    noise_jy: its noise (Jy/beam), a scalar or a (ny, nx) map; pixels where ``pb < pb_cutoff``
    (or NaN) do not contribute. The grid's box is resampled ``rows_per_block`` rows at a time,
    each from the part of the image it covers (with a margin of ``_INPUT_MARGIN`` pixels, so the
    bicubic spline's prefilter sees what it would on the whole image to ~1e-9): the temporaries
    stay a few tens of MB whatever the image's size.
    Returns the box ``(y0, y1, x0, x1)`` of the grid that changed, None when the image misses it."""
    shape_out = sums.weight.shape
    box = footprint_box(wcs_in=wcs_in, shape_in=pb.shape, wcs_out=wcs_out, shape_out=shape_out)
    if box is None:
        return None
    y0, y1, x0, x1 = box
    var = np.asarray(noise_jy, np.float64) ** 2
    stack = [planes[key] for key in sums.num] + [pb] + ([var] if var.ndim else [])
    for r0 in range(y0, y1, rows_per_block):
        r1 = min(r0 + rows_per_block, y1)
        block_wcs = wcs_out[r0:r1, x0:x1]
        inner = footprint_box(wcs_in=block_wcs, shape_in=(r1 - r0, x1 - x0), wcs_out=wcs_in, shape_out=pb.shape,
                              pad=_INPUT_MARGIN)
        if inner is None:
            continue
        iy0, iy1, ix0, ix1 = inner
        out = reproject_plane(image=np.stack([a[iy0:iy1, ix0:ix1] for a in stack]), wcs_in=wcs_in[iy0:iy1, ix0:ix1],
                              wcs_out=block_wcs, shape_out=(r1 - r0, x1 - x0), order=order)
        _accumulate(sums, out=out, rows=slice(r0, r1), cols=slice(x0, x1), var=var, pb_cutoff=pb_cutoff)
    if name:
        sums.images.append(name)
    return box


def finish_mosaic(sums: MosaicSums) -> dict[str, np.ndarray]:
    """The mosaic planes from the sums, all (ny, nx) float32, NaN where no image contributes:
    each plane of ``sums.num`` (primary-beam corrected, Jy/beam), ``noise`` (1/sqrt(W),
    Jy/beam), ``pb_weight`` (sqrt(sum B²)), ``weight`` (W, Jy⁻²)."""
    covered = sums.weight > 0
    safe = np.where(covered, sums.weight, 1.0).astype(np.float64)
    out = {key: np.where(covered, num / safe, np.nan).astype(np.float32) for key, num in sums.num.items()}
    out["noise"] = np.where(covered, 1.0 / np.sqrt(safe), np.nan).astype(np.float32)
    out["pb_weight"] = np.where(covered, np.sqrt(sums.pb2), np.nan).astype(np.float32)
    out["weight"] = np.where(covered, sums.weight, np.nan).astype(np.float32)
    return out
