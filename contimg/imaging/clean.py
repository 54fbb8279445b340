"""Deconvolution: Högbom minor cycles inside Cotton–Schwab major cycles.

Minor cycle (numba): Högbom CLEAN over the pixels whose residual exceeds the cycle's threshold
(the "active set", as in Clark's CLEAN), each update exact through the full PSF computed at twice
the image size. It stops at ``cycle_fraction`` of its starting peak (the PSF's sidelobes make
the active set's residuals inexact beyond that), at the global threshold, or at ``niter``.

Major cycle: the accumulated model is predicted into visibilities with ducc0 (w-gridding) and
subtracted; the residual image is re-made from the residual visibilities, so what the minor
cycles got wrong is measured against the data, not the approximation.

Thresholds are ``threshold_sigma`` times the residual's robust RMS (1.4826 MAD), re-measured at
every major cycle.
"""

from __future__ import annotations

from collections.abc import Callable

import numba
import numpy as np

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
            vals[i] -= step * psf[ys[i] - py + cy, xs[i] - px + cx]
        done += 1
    return done


def minor_cycle(*, residual: np.ndarray, psf: np.ndarray, model: np.ndarray, gain: float, stop_jy: float,
                niter: int, max_active: int = 200_000) -> int:
    """Högbom on the active set of ``residual`` (ny, nx); adds components to ``model`` in place.

    psf: (2 ny, 2 nx), peak 1 at (ny, nx). Returns the number of components.
    """
    if psf.shape != (2 * residual.shape[0], 2 * residual.shape[1]):
        raise ValueError(f"psf shape {psf.shape} must be twice the image shape {residual.shape}")
    amp = np.abs(residual)
    level = stop_jy
    if np.count_nonzero(amp > level) > max_active:
        level = float(np.partition(amp.ravel(), -max_active)[-max_active])
    ys, xs = np.nonzero(amp > level)
    vals = residual[ys, xs].astype(np.float64)
    return _minor(ys.astype(np.int64), xs.astype(np.int64), vals, np.asarray(psf, np.float64), model, gain,
                  max(stop_jy, level), niter)


def _robust_rms(img: np.ndarray) -> float:
    return 1.4826 * float(np.median(np.abs(img - np.median(img))))


def cotton_schwab(*, dirty: np.ndarray, psf: np.ndarray, residual_image: Callable[[np.ndarray], np.ndarray],
                  niter: int, gain: float, threshold_sigma: float, cycle_fraction: float = 0.15,
                  max_major: int = 12) -> tuple[np.ndarray, np.ndarray, int, float, int]:
    """Deconvolve.

    dirty: (ny, nx) Jy/beam; psf: (2 ny, 2 nx); ``residual_image(model)`` returns the image of
    the data minus the model's visibilities (Jy/beam), model in Jy/pixel.
    Returns (model, residual, components, final threshold Jy, major cycles).
    """
    model = np.zeros(dirty.shape, np.float64)
    residual = np.asarray(dirty, np.float64)
    total, majors, threshold = 0, 0, 0.0
    while total < niter and majors < max_major:
        threshold = threshold_sigma * _robust_rms(residual)
        peak = float(np.max(np.abs(residual)))
        if peak <= threshold:
            break
        stop = max(threshold, cycle_fraction * peak)
        done = minor_cycle(residual=residual, psf=psf, model=model, gain=gain, stop_jy=stop, niter=niter - total)
        total += done
        majors += 1
        residual = np.asarray(residual_image(model.astype(np.float32)), np.float64)
        if done == 0:
            break
    return model.astype(np.float32), residual.astype(np.float32), total, threshold, majors
