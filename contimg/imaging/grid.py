"""Gridding and degridding on the CPU with ducc0's wgridder (w-gridding to ``epsilon``).

Image convention (one place for it): images are returned in FITS order ``(ny, nx)``, pixel
``(y, x)`` at ``l = -(x - nx/2) * cell`` (east to the left, RA increasing to the left) and
``m = (y - ny/2) * cell``, so CRPIX = n/2 + 1 (1-based). With our (pyuvdata's) visibility sign
convention ``V = sum I exp(+2 pi i (u l + v m + w (n - 1)))`` ducc0's first axis runs east to
west and its second south to north with ``flip_v`` alone (checked against a direct DFT in
tests/test_imaging.py). Images are divided by the sum of weights
(Jy/beam for a point source; the PSF peaks at 1) and not by n.
"""

from __future__ import annotations

import numba
import numpy as np
import ducc0.wgridder.experimental as wg

from contimg.device.memory import empty_resident

__all__ = ["dirty_image", "psf_image", "predict_from_image", "Ducc0Gridder"]

_FLIPS = dict(flip_u=False, flip_v=True, flip_w=False)
# ducc0 picks its grid's oversampling between 1.1 and sigma_max (2.6 by default) for speed alone;
# at 2.0 a real-size 4096² pass holds ~0.4 GiB instead of up to 1.4 GiB, in the same time
# (docs/benchmarks/bench.md), and the images agree to 5e-5 of their peak (within epsilon's reach)
_SIGMA_MAX = 2.0


def _sigma_max(epsilon: float) -> float:
    """ducc0's largest oversampling for ``epsilon``: `_SIGMA_MAX`, or ducc0's default where
    single precision needs more (below 1e-5)."""
    return _SIGMA_MAX if epsilon >= 1e-5 else 2.6


@numba.njit(parallel=True, nogil=True, cache=True)
def _transpose_kernel(src, scale, out):
    n0, n1 = src.shape
    tile = 64
    for b in numba.prange((n0 + tile - 1) // tile):
        i0, i1 = b * tile, min(b * tile + tile, n0)
        for j0 in range(0, n1, tile):
            for j in range(j0, min(j0 + tile, n1)):
                for i in range(i0, i1):
                    out[j, i] = src[i, j] * scale


def _transposed(img: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """``img.T * scale`` as a new C-ordered float32 array, in 64² tiles on all threads: ducc0's
    (x, y) images to FITS order and back (numpy's strided copy of a 4096² image takes ~0.15 s
    and more on fresh pages; this ~0.02 s)."""
    out = empty_resident(img.shape[::-1], np.float32)
    _transpose_kernel(img, np.float32(scale) if img.dtype == np.float32 else float(scale), out)
    return out


def dirty_image(*, uvw_m: np.ndarray, freq_hz: np.ndarray, vis: np.ndarray, wgt: np.ndarray, npix: int,
                cell_rad: float, epsilon: float, nthreads: int = 1, wsum: float | None = None,
                mask: np.ndarray | None = None, w_term: bool = True) -> np.ndarray:
    """Dirty image (npix, npix) float32, FITS order, Jy/beam.

    uvw_m: (nrow, 3) float64; freq_hz: (nchan,); vis: (nrow, nchan) complex64;
    wgt: (nrow, nchan) float32 (0 = excluded). ``wsum`` (the sum of ``wgt``) and ``mask``
    ((nrow, nchan) uint8, ``wgt > 0``) when the caller has them (`Ducc0Gridder` keeps both).
    ``w_term``: False grids in 2D (w taken as 0: the image of a narrow field; `psf_image`).
    """
    wsum = float(np.sum(wgt, dtype=np.float64)) if wsum is None else wsum
    if wsum <= 0:
        raise ValueError("dirty_image: every visibility has zero weight")
    img = wg.vis2dirty(uvw=uvw_m, freq=freq_hz, vis=vis, wgt=wgt, mask=(wgt > 0).astype(np.uint8) if mask is None else mask,
                       npix_x=npix, npix_y=npix, pixsize_x=cell_rad, pixsize_y=cell_rad, epsilon=epsilon,
                       do_wgridding=w_term, divide_by_n=False, nthreads=nthreads, sigma_max=_sigma_max(epsilon), **_FLIPS)
    return _transposed(img, 1.0 / wsum)  # C order: ducc0's is (x, y)


def psf_image(*, uvw_m: np.ndarray, freq_hz: np.ndarray, wgt: np.ndarray, npix: int, cell_rad: float,
              epsilon: float, nthreads: int = 1, wsum: float | None = None,
              mask: np.ndarray | None = None, w_term: bool = True) -> np.ndarray:
    """Point spread function (npix, npix) float32, FITS order, peak 1 at (npix/2, npix/2).

    ``w_term``: with it, the response to a point source at the phase centre; without (2D, w
    taken as 0: ~5x faster at real size), the same at the peak, differing further out by the
    w-term's phase (`ImageConfig.psf_w_term`)."""
    ones = np.broadcast_to(np.complex64(1), wgt.shape)  # ducc0 reads strided arrays: no memory
    return dirty_image(uvw_m=uvw_m, freq_hz=freq_hz, vis=ones, wgt=wgt, npix=npix, cell_rad=cell_rad,
                       epsilon=epsilon, nthreads=nthreads, wsum=wsum, mask=mask, w_term=w_term)


def predict_from_image(*, uvw_m: np.ndarray, freq_hz: np.ndarray, model: np.ndarray, cell_rad: float,
                       epsilon: float, nthreads: int = 1, out: np.ndarray | None = None,
                       mask: np.ndarray | None = None) -> np.ndarray:
    """Model visibilities (nrow, nchan) complex64 of a sky image (npix, npix), FITS order, Jy/pixel.

    ``out``: a (nrow, nchan) complex64 buffer to fill. Pass one that is reused: ducc0 allocates
    its output while it holds the GIL, and the first touch of ~700 MB of fresh pages (a real-size
    group) then stalls every other Python thread for a few hundred milliseconds. ``mask``
    ((nrow, nchan) uint8): only where it is non-zero (elsewhere the output is 0)."""
    return wg.dirty2vis(uvw=uvw_m, freq=freq_hz, dirty=_transposed(np.asarray(model, np.float32)),
                        pixsize_x=cell_rad, pixsize_y=cell_rad, epsilon=epsilon, do_wgridding=True,
                        divide_by_n=False, nthreads=nthreads, vis=out, mask=mask, sigma_max=_sigma_max(epsilon), **_FLIPS)


# the model visibilities of one block of rows (a major cycle's scratch): a real-size group's
# 42 M Stokes I samples (336 MB) in one block; each further block repeats ducc0's image-to-grid
# part (measured on that group: two blocks of 80 % and 20 % of the rows took 1.25-1.6 x one)
_PREDICT_BLOCK_BYTES = 512 * 2**20


class Ducc0Gridder:
    """One visibility set's imaging operators on the CPU (ducc0): the dirty image, the PSF and
    the residual image of a model, images (npix, npix) float32 FITS order in Jy/beam.

    `contimg.imaging.wgrid.WGridder` is its twin (the device imager); `clean_image` takes
    either. uvw_m (nrow, 3), freq_hz (nchan,), vis (nrow, nchan) complex64, wgt (nrow, nchan)
    float32 imaging weights (0 = left out).

    The residual visibilities are kept, not the data: each `residual_image` subtracts only what
    the model added since the last one (prediction is linear), a block of rows at a time
    (at most ``predict_block_bytes`` of scratch, the rows split into equal blocks: ducc0's
    image-to-grid transform is repeated per block). With ``consume`` they overwrite ``vis`` (the caller no
    longer needs the data: no second (nrow, nchan) array); otherwise ``vis`` is copied at the
    first residual. ``psf_w_term``: `psf_image`'s ``w_term``."""

    xp = np

    def __init__(self, *, uvw_m, freq_hz, vis, wgt, npix: int, cell_rad: float, epsilon: float, nthreads: int = 1,
                 consume: bool = False, predict_block_bytes: int = _PREDICT_BLOCK_BYTES, psf_w_term: bool = True):
        self.vis = vis
        self.npix = npix
        self.psf_w_term = psf_w_term
        # the weights' sum and the gridded-sample mask, once for every pass
        self._common = dict(uvw_m=uvw_m, freq_hz=freq_hz, wgt=wgt, cell_rad=cell_rad, epsilon=epsilon,
                            nthreads=nthreads, wsum=float(np.sum(wgt, dtype=np.float64)),
                            mask=(wgt > 0).view(np.uint8))
        self._consume = consume
        nrow, row_bytes = vis.shape[0], max(vis.shape[1] * vis.itemsize, 1)
        nblock = max(1, -(-nrow * row_bytes // predict_block_bytes))
        self._rows_per_block = max(1, -(-nrow // nblock))
        self._residual_vis: np.ndarray | None = None  # vis less the model's visibilities so far
        self._subtracted: np.ndarray | None = None  # that model (npix, npix) float32, Jy/pixel

    def dirty_image(self) -> np.ndarray:
        """The image of the data (before any `residual_image`)."""
        if self._residual_vis is not None and self._consume:
            raise RuntimeError("Ducc0Gridder(consume=True): the data were replaced by the residual visibilities")
        return dirty_image(vis=self.vis, npix=self.npix, **self._common)

    def psf_image(self) -> np.ndarray:
        """(npix, npix), peak 1 at (npix/2, npix/2)."""
        return psf_image(npix=self.npix, w_term=self.psf_w_term, **self._common)

    def residual_image(self, model: np.ndarray) -> np.ndarray:
        """The image of vis minus the visibilities of ``model`` (npix, npix) Jy/pixel."""
        c = self._common
        model = np.asarray(model, np.float32)
        if self._residual_vis is None:
            self._residual_vis = self.vis if self._consume else self.vis.copy()
        delta = model if self._subtracted is None else model - self._subtracted
        if delta.any():
            res = self._residual_vis
            step = self._rows_per_block
            scratch = empty_resident((min(step, res.shape[0]), res.shape[1]), res.dtype)
            for r0 in range(0, res.shape[0], step):
                rows = slice(r0, min(r0 + step, res.shape[0]))
                pred = scratch[:rows.stop - r0]
                predict_from_image(uvw_m=c["uvw_m"][rows], freq_hz=c["freq_hz"], model=delta, cell_rad=c["cell_rad"],
                                   epsilon=c["epsilon"], nthreads=c["nthreads"], out=pred, mask=c["mask"][rows])
                np.subtract(res[rows], pred, out=res[rows])
            self._subtracted = model
        return dirty_image(vis=self._residual_vis, npix=self.npix, **c)
