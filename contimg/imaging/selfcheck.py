"""Each stage's device path held to its CPU twin on a small simulated group, once at start-up,
before ``backend = "auto"`` lets the stage use the device (`contimg.device.selfcheck` records
the choice and its figures).

- flag: `contimg.flag.flag_group` on the device path's array code against the numba twin, on a
  16 x 21 x 32 x 2 group with RFI: the fraction of samples whose flag differs;
- calibrate: the bandpass solve (`contimg.calibrate.solve_gains`, StEFCal) on the device path
  against the numba twin, on 8 antennas with known gains: the largest gain difference and the
  number of gain flags that differ;
- image: contimg's w-stacking gridder on the device against its numba twin and against ducc0 (the
  CPU imager), dirty image and predicted visibilities (relative L2), and the Högbom kernel against
  `contimg.imaging.clean._minor` (components, model).

``device``: "gpu", CuPy on the CUDA device (what the service runs), or "array", the device path's
array code on numpy (no device needed: the tests force a disagreement through it). This module
sits in imaging, the lowest layer that imports all three stages.
"""

from __future__ import annotations

import threading
from types import ModuleType

import numpy as np

from contimg.device import backend as _backend
from contimg.device.backend import to_host
from contimg.device.selfcheck import STAGES, Figure, StageBackend, choose_backend, chosen

__all__ = ["flag_check", "calibrate_check", "image_check", "CHECKS", "choose_backends", "device_selfcheck",
           "resolved_backend", "with_resolved_backends"]

# limits: the device's float32 and parallel sums against the twin's float64 and serial ones
FLAG_DIFF_LIMIT = 1e-3  # fraction of samples flagged differently (a few samples of this group)
GAIN_DIFF_LIMIT = 1e-5  # largest |g_device - g_twin| of unit-amplitude gains
IMAGE_EPSILON = 1e-4  # the gridder's accuracy; images and visibilities must agree to 10 epsilon


def _xp(device: str) -> ModuleType:
    if device == "array":
        return np
    if device == "gpu":
        import cupy

        return cupy
    raise ValueError(f"self-check device {device!r} (gpu or array)")


def _stage_kwargs(device: str) -> dict:
    """The keyword arguments that put flag_group / solve_gains on the device path."""
    return {"backend": "gpu", "array_code": True} if device == "gpu" else {"backend": "cpu", "array_code": True}


def flag_check(*, device: str = "gpu") -> list[Figure]:
    from contimg.config import FlagConfig
    from contimg.flag import flag_group

    rng = np.random.default_rng(21)
    ntime, nchan, npol, nant = 16, 32, 2, 6
    a1, a2 = np.triu_indices(nant)
    shape = (ntime, a1.size, nchan, npol)
    vis = rng.normal(size=shape) + 1j * rng.normal(size=shape) + 3.0
    vis[5, :, 10] += 25.0  # narrow-band, one integration, every baseline
    vis[:, 4, 20:23, 0] += 12.0  # a few channels on one baseline, all the time
    vis[9:12, :, 3] += 1.5  # weak: the baseline-averaged search's
    vis = vis.astype(np.complex64)
    flags = np.zeros(shape, bool)
    kw = dict(flags=flags, ant1=a1, ant2=a2, n_antennas=nant, chans_per_subband=nchan, cfg=FlagConfig())
    twin = flag_group(vis=vis, backend="cpu", array_code=False, **kw)
    dev = flag_group(vis=vis, **kw, **_stage_kwargs(device))  # flag_group uploads it
    return [Figure("flags_differing_fraction", float(np.mean(twin.flags != dev.flags)), FLAG_DIFF_LIMIT)]


def calibrate_check(*, device: str = "gpu") -> list[Figure]:
    from contimg.calibrate import solve_gains

    rng = np.random.default_rng(22)
    nant, ntime, nchan, npol = 8, 4, 8, 2
    a1, a2 = np.triu_indices(nant)
    model = rng.normal(size=(ntime, a1.size, nchan)) + 1j * rng.normal(size=(ntime, a1.size, nchan)) + 3.0
    g = (1 + 0.1 * rng.normal(size=(nant, nchan, npol))) * np.exp(1j * rng.uniform(-np.pi, np.pi, (nant, nchan, npol)))
    vis = g[a1][None] * np.conj(g[a2][None]) * model[..., None]
    vis += 0.02 * (rng.normal(size=vis.shape) + 1j * rng.normal(size=vis.shape))
    flags = rng.random(vis.shape) < 0.03
    kw = dict(model=model.astype(np.complex64), flags=flags, ant1=a1, ant2=a2,
              antenna_names=np.array([str(a) for a in range(nant)]), refants=["0"], tolerance=1e-9)
    twin = solve_gains(vis=vis.astype(np.complex64), backend="cpu", array_code=False, **kw)
    dev = solve_gains(vis=vis.astype(np.complex64), **kw, **_stage_kwargs(device))
    g_t, f_t = np.asarray(twin[1]), np.asarray(twin[2])
    g_d, f_d = to_host(dev[1]), to_host(dev[2])
    ok = ~f_t & ~f_d
    return [Figure("gain_max_abs_difference", float(np.max(np.abs(g_d - g_t)[ok], initial=0.0)), GAIN_DIFF_LIMIT),
            Figure("gain_flags_differing", float(np.count_nonzero(f_t != f_d)), 0.0)]


def image_check(*, device: str = "gpu") -> list[Figure]:
    import ducc0.wgridder.experimental as ducc

    from contimg.imaging import clean, wgrid

    xp = _xp(device)
    rng = np.random.default_rng(11)
    nrow, npix, cell, eps = 400, 64, np.radians(20 / 3600), IMAGE_EPSILON
    freq = np.array([1.35e9, 1.45e9])
    uvw = np.stack([rng.normal(0, 300, nrow), rng.normal(0, 300, nrow), rng.normal(0, 100, nrow)], axis=1)
    vis = (rng.normal(size=(nrow, 2)) + 1j * rng.normal(size=(nrow, 2))).astype(np.complex64)
    wgt = rng.uniform(0.5, 1.5, (nrow, 2)).astype(np.float32)
    kw = dict(uvw_m=uvw, freq_hz=freq, cell_rad=cell, epsilon=eps)
    figures = []

    def rel(a, b):
        return float(np.linalg.norm(a - b) / np.linalg.norm(b))

    dev = to_host(wgrid.vis2dirty(vis=xp.asarray(vis), wgt=xp.asarray(wgt), npix=npix, xp=xp, **kw))
    twin = wgrid.vis2dirty(vis=vis, wgt=wgt, npix=npix, **kw)
    ref = ducc.vis2dirty(uvw=uvw, freq=freq, vis=vis, wgt=wgt, npix_x=npix, npix_y=npix, pixsize_x=cell,
                         pixsize_y=cell, epsilon=eps, do_wgridding=True, divide_by_n=False, flip_v=True).T
    figures += [Figure("dirty_vs_twin", rel(dev, twin), 10 * eps), Figure("dirty_vs_ducc0", rel(dev, ref), 10 * eps)]
    img = rng.normal(size=(npix, npix))
    dev_v = to_host(wgrid.dirty2vis(image=xp.asarray(img), xp=xp, **kw))
    twin_v = wgrid.dirty2vis(image=img, **kw)
    ref_v = ducc.dirty2vis(uvw=uvw, freq=freq, dirty=img.T.copy(), pixsize_x=cell, pixsize_y=cell, epsilon=eps,
                           do_wgridding=True, divide_by_n=False, flip_v=True)
    figures += [Figure("vis_vs_twin", rel(dev_v, twin_v), 10 * eps),
                Figure("vis_vs_ducc0", rel(dev_v, ref_v), 10 * eps)]
    res = rng.normal(size=(32, 32))
    yy, xx = np.mgrid[-32:32, -32:32]
    psf = np.exp(-(xx**2 + yy**2) / 8.0)
    out = []
    for mod in (np, xp):
        model = mod.zeros((32, 32))
        n = clean.minor_cycle(residual=mod.asarray(res), psf=mod.asarray(psf), model=model, gain=0.1, stop_jy=0.5,
                              niter=200, xp=mod)
        out.append((n, to_host(model)))
    (n_t, m_t), (n_d, m_d) = out
    figures += [Figure("hogbom_components_differing", float(abs(n_d - n_t)), 0.0),
                Figure("hogbom_model_max_abs_difference", float(np.max(np.abs(m_d - m_t))), 1e-9)]
    return figures


CHECKS = {"flag": flag_check, "calibrate": calibrate_check, "image": image_check}


def choose_backends(*, flag: str = "auto", calibrate: str = "auto", image: str = "auto",
                    device: str | None = None) -> dict[str, StageBackend]:
    """Choose and record the backend of each stage for its configured ``backend`` (the
    configuration's ``flag.backend``, ``calibrate.backend``, ``image.backend``), running each
    stage's self-check where the device may be used (`contimg.device.selfcheck.choose_backend`:
    "auto" falls back to the CPU with the reason logged; "gpu" raises). Called once at start-up;
    the stages then run on ``result[stage].backend``. ``device``: None for the CUDA device when
    cupy sees one; "array" runs the checks' device path as array code on numpy (tests)."""
    available = _backend.gpu_available() if device is None else True
    mode = device or "gpu"
    out = {}
    for stage, requested in (("flag", flag), ("calibrate", calibrate), ("image", image)):
        out[stage] = choose_backend(stage, requested, device_available=available,
                                    check=lambda stage=stage: CHECKS[stage](device=mode))
    return out


def device_selfcheck() -> str | None:
    """None when the device imager agrees with its CPU twins, else what differs (the caller then
    images on the CPU): the image stage's recorded self-check (`choose_backends`), or, when none
    ran yet in this process, `image_check` on the device now (recorded as the image stage's
    choice). Needs a CUDA device (`contimg.imaging.imager.imaging_backend` asks only then)."""
    choice = chosen("image")
    if choice is None or not choice.checked:
        choice = choose_backend("image", "auto", device_available=True, check=lambda: image_check(device="gpu"))
    return None if choice.passed else choice.reason


_RESOLVING = threading.Lock()


def resolved_backend(stage: str, requested: str) -> str:
    """The backend ``stage`` runs on for its configured ``requested``: "auto" resolves through this
    process's recorded choice (`contimg.device.selfcheck.chosen`), made now, once, with the stage's
    self-check where a CUDA device is usable, when none was recorded for "auto" yet (no device:
    "cpu", unchecked); any other request is returned as it is. So a stage's device path never runs
    unchecked on a GPU host, whoever calls the stages: the service resolves its configuration at
    start-up (`choose_backends`), a cluster worker or an export resolves here, in its own process."""
    if requested != "auto":
        return requested
    with _RESOLVING:
        choice = chosen(stage)
        if choice is None or choice.requested != "auto":
            choice = choose_backend(stage, "auto", device_available=_backend.gpu_available(),
                                    check=lambda: CHECKS[stage](device="gpu"))
    return choice.backend


def with_resolved_backends(cfg):
    """``cfg`` (a `contimg.config.Config`) with the flag, calibrate and image backends that are
    "auto" resolved (`resolved_backend`); ``cfg`` itself when none is."""
    update = {stage: getattr(cfg, stage).model_copy(update={"backend": resolved_backend(stage, "auto")})
              for stage in STAGES if getattr(cfg, stage).backend == "auto"}
    return cfg.model_copy(update=update) if update else cfg
