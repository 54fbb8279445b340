"""Deconvolution: Högbom minor cycles inside Cotton–Schwab major cycles.

Minor cycle (numba): Högbom CLEAN over the pixels whose residual exceeds the cycle's threshold
(the "active set", as in Clark's CLEAN), each update through the PSF as the imagers make it, the
image's size (as WSClean's): an active pixel farther from a component than half the image in
either axis is not updated (the PSF does not reach it); the next major cycle, which measures the
residual against the data, corrects what that left. It stops at ``cycle_fraction`` of its
starting peak (the PSF's sidelobes make the active set's residuals inexact beyond that), at the
global threshold, or at ``niter``.

Major cycle: the accumulated model is predicted into visibilities with ducc0 (w-gridding) and
subtracted; the residual image is re-made from the residual visibilities, so what the minor
cycles got wrong is measured against the data, not the approximation.

Thresholds are ``threshold_sigma`` times the residual's robust RMS (1.4826 MAD), re-measured at
every major cycle.

Array code against ``xp``: with cupy the images stay on the device and the minor cycle runs as
one CUDA block (`contimg.kernels.hogbom`, numba-cuda, `_minor`'s twin) with its peak search a
block reduction.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from types import ModuleType

import numba
import numpy as np

from contimg.imaging.stats import median_abs_deviation

__all__ = ["minor_cycle", "cotton_schwab"]


@numba.njit(cache=True, nogil=True)
def _minor(ys, xs, vals, psf, model, gain, stop, n_iter):
    cy, cx = psf.shape[0] // 2, psf.shape[1] // 2
    n = vals.size
    done = 0
    for _ in range(n_iter):
        best, k = 0.0, -1
        for i in range(n):
            a = abs(vals[i])
            if a > best:
                best, k = a, i
        if k < 0 or best <= stop:
            break
        step = gain * vals[k]
        py, px = ys[k], xs[k]
        model[py, px] += step
        for i in range(n):
            dy = ys[i] - py + cy
            dx = xs[i] - px + cx
            if 0 <= dy < psf.shape[0] and 0 <= dx < psf.shape[1]:
                vals[i] -= step * psf[dy, dx]
        done += 1
    return done


HOGBOM_THREADS = 1024  # the block on a device (contimg.kernels.hogbom.THREADS at most; a power of two)


def _hogbom_args(ys, xs, vals, psf, model, gain: float, stop: float, niter: int, done) -> tuple:
    """The arguments of `contimg.kernels.hogbom.hogbom`, typed as the kernel is compiled for."""
    return ys, xs, vals, psf, model, np.float64(gain), np.float64(stop), np.int32(niter), done


def _minor_device(ys, xs, vals, psf, model, gain: float, stop: float, niter: int, *,
                  threads: int = HOGBOM_THREADS) -> int:
    """`_minor` as the kernel `contimg.kernels.hogbom.hogbom` in one block of ``threads``: CuPy
    arrays on a device, or numpy arrays under numba-cuda's CUDA simulator (the CI tests)."""
    from contimg.kernels.hogbom import hogbom  # numba.cuda: imported only where the kernel runs

    if isinstance(vals, np.ndarray):  # the simulator
        done = np.zeros(1, np.int32)
    else:
        import cupy

        done = cupy.zeros(1, cupy.int32)
    with warnings.catch_warnings():  # one block by design: numba-cuda's low-occupancy warning says nothing here
        warnings.filterwarnings("ignore", message=".*under-utilization.*")
        hogbom[1, threads](*_hogbom_args(ys, xs, vals, psf, model, gain, stop, niter, done))
    return int(done[0])


def minor_cycle(*, residual, psf, model, gain: float, stop_jy: float, niter: int, max_active: int = 200_000,
                mask=None, xp: ModuleType = np) -> int:
    """Högbom on the active set of ``residual`` (ny, nx); adds components to ``model`` (ny, nx)
    float64 in place. Arrays of ``xp``; with cupy the iterations run in `_minor_device`.

    psf: (py, px) float32 (others are converted), even sizes, peak 1 at (py/2, px/2): the
    image's size as the imagers make it (twice would reach every pixel from every other); mask:
    (ny, nx) bool, components only where True (None: anywhere). Returns the number of components.
    """
    if psf.ndim != 2 or psf.shape[0] % 2 or psf.shape[1] % 2:
        raise ValueError(f"psf shape {psf.shape}: two even sizes, the peak at their middle")
    amp = xp.abs(residual)
    if mask is not None:
        amp = xp.where(mask, amp, 0)
    level = stop_jy
    if int(xp.count_nonzero(amp > level)) > max_active:
        flat = amp.ravel()
        kth = flat.size - max_active  # a non-negative kth: cupy's partition takes no negative one
        level = float(xp.partition(flat, kth)[kth])
    ys, xs = xp.nonzero(amp > level)
    ys, xs = ys.astype(xp.int64), xs.astype(xp.int64)
    vals = residual[ys, xs].astype(xp.float64)
    psf = xp.ascontiguousarray(psf, dtype=xp.float32)
    minor = _minor if xp is np else _minor_device
    return minor(ys, xs, vals, psf, model, gain, max(stop_jy, level), niter)


def _robust_rms(img, xp: ModuleType = np) -> float:
    # by hand, not astropy.stats.mad_std: img may be a CuPy array, which mad_std does not take;
    # on the host the exact median without sorting the image (`contimg.imaging.stats`)
    if xp is np:
        return 1.4826 * float(median_abs_deviation(img))
    return 1.4826 * float(xp.median(xp.abs(img - xp.median(img))))


def cotton_schwab(*, dirty, psf, residual_image: Callable, niter: int, gain: float, threshold_sigma: float,
                  cycle_fraction: float = 0.15, max_major: int = 12, threshold_jy: float = 0.0, mask=None,
                  xp: ModuleType = np):
    """Deconvolve.

    dirty: (ny, nx) Jy/beam; psf: (py, px) peak at the middle (`minor_cycle`); ``residual_image(model)`` returns the image of
    the data minus the model's visibilities (Jy/beam), model in Jy/pixel. The threshold is the
    larger of ``threshold_sigma`` x the residual's robust RMS and ``threshold_jy``; ``mask``
    (ny, nx) bool: components only where True. Arrays of ``xp``.
    Returns (model float32, residual float32, components, final threshold Jy, major cycles).
    """
    model = xp.zeros(dirty.shape, xp.float64)
    residual = xp.asarray(dirty, xp.float32)  # the imagers' precision: the minor cycle copies its values to float64
    psf = xp.ascontiguousarray(psf, dtype=xp.float32)  # once (a no-op for the imagers' PSF): read as is
    if mask is not None:
        mask = xp.asarray(mask, dtype=bool)
        if mask.shape != dirty.shape:
            raise ValueError(f"CLEAN mask shape {mask.shape} differs from the image's {dirty.shape}")
    total, majors, threshold = 0, 0, 0.0
    while total < niter and majors < max_major:
        threshold = max(threshold_sigma * _robust_rms(residual, xp), threshold_jy)
        peak = float(xp.max(xp.abs(residual if mask is None else xp.where(mask, residual, 0))))
        if peak <= threshold:
            break
        stop = max(threshold, cycle_fraction * peak)
        done = minor_cycle(residual=residual, psf=psf, model=model, gain=gain, stop_jy=stop, niter=niter - total,
                           mask=mask, xp=xp)
        total += done
        majors += 1
        residual = xp.asarray(residual_image(model.astype(xp.float32)), xp.float32)
        if done == 0:
            break
    return model.astype(xp.float32), residual.astype(xp.float32), total, threshold, majors
