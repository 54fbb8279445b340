"""The device imager held to its CPU twins once per process, before `image.backend = "auto"`
uses it."""

from __future__ import annotations

import functools

import numpy as np

from contimg.imaging import clean, wgrid

__all__ = ["device_selfcheck"]


@functools.cache
def device_selfcheck() -> str | None:
    """Hold the device imager to its CPU twins on a small problem, once per process: the dirty
    image and the predicted visibilities of the CUDA gridder against the numba twin, and the
    Högbom kernel against `contimg.imaging.clean._minor`. None when they agree, else what
    differs (the caller then images on the CPU)."""
    import cupy

    try:
        rng = np.random.default_rng(11)
        nrow, npix, cell, eps = 400, 64, np.radians(20 / 3600), 1e-4
        freq = np.array([1.35e9, 1.45e9])
        uvw = np.stack([rng.normal(0, 300, nrow), rng.normal(0, 300, nrow), rng.normal(0, 100, nrow)], axis=1)
        vis = (rng.normal(size=(nrow, 2)) + 1j * rng.normal(size=(nrow, 2))).astype(np.complex64)
        wgt = rng.uniform(0.5, 1.5, (nrow, 2)).astype(np.float32)
        kw = dict(uvw_m=uvw, freq_hz=freq, npix=npix, cell_rad=cell, epsilon=eps)
        ref = wgrid.vis2dirty(vis=vis, wgt=wgt, **kw)
        dev = cupy.asnumpy(wgrid.vis2dirty(vis=cupy.asarray(vis), wgt=cupy.asarray(wgt), xp=cupy, **kw))
        err = float(np.linalg.norm(dev - ref) / np.linalg.norm(ref))
        if not err < 10 * eps:
            return f"grid_plane: dirty image differs from the CPU twin by {err:.2e} (relative L2)"
        img = rng.normal(size=(npix, npix))
        kw.pop("npix")
        ref_v = wgrid.dirty2vis(image=img, **kw)
        dev_v = cupy.asnumpy(wgrid.dirty2vis(image=cupy.asarray(img), xp=cupy, **kw))
        err = float(np.linalg.norm(dev_v - ref_v) / np.linalg.norm(ref_v))
        if not err < 10 * eps:
            return f"degrid_plane: visibilities differ from the CPU twin by {err:.2e} (relative L2)"
        res = rng.normal(size=(32, 32))
        yy, xx = np.mgrid[-32:32, -32:32]
        psf = np.exp(-(xx**2 + yy**2) / 8.0)
        models = []
        for xp in (np, cupy):
            model = xp.zeros((32, 32))
            n = clean.minor_cycle(residual=xp.asarray(res), psf=xp.asarray(psf), model=model, gain=0.1, stop_jy=0.5,
                                  niter=200, xp=xp)
            models.append((n, xp.asnumpy(model) if xp is cupy else model))
        if models[0][0] != models[1][0] or not np.allclose(models[0][1], models[1][1], rtol=1e-9, atol=1e-12):
            return f"hogbom: {models[1][0]} components on the device, {models[0][0]} in the twin, or other values"
    except Exception as exc:  # noqa: BLE001 - any failure of the device path means: do not use it
        return f"{type(exc).__name__}: {exc}"
    return None
