"""One group's images: rephase, weight, grid (dirty + PSF), Högbom CLEAN, restore, primary beam."""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np

from contimg.io.chunk import VisChunk
from contimg.config import ImageConfig
from contimg.sky.geometry import hadec_to_icrs
from contimg.device.backend import TWIN
from contimg.device.transfer import TransferCounter, download
from contimg.imaging.clean import cotton_schwab
from contimg.imaging.grid import Ducc0Gridder
from contimg.imaging.pbeam import average_primary_beam, pb_corrected
from contimg.imaging.prep import average_times, channel_frequencies, rephase_stokes_i, time_factors, weight_per_time
from contimg.imaging.stats import MAD_STD_FACTOR, median_abs_deviation
from contimg.imaging.restore import FWHM_PER_SIGMA, beam_box, elliptical_gaussian, fit_beam, restore
from contimg.imaging.weights import imaging_weights
from contimg.io.fits import read_clean_mask
from contimg.calibrate.subtract import SubtractedSource

log = logging.getLogger(__name__)

__all__ = ["ImageSet", "Cleaned", "StokesI", "clean_image", "make_images", "stokes_i_for_imaging", "image_stokes_i", "make_gridder", "imaging_backend"]


@dataclass
class ImageSet:
    """Images (ny, nx) float32 in FITS order; beam FWHMs and PA in radians."""

    images: dict[str, np.ndarray]  # residual, restored, pbcor, pb; dirty, psf, model where asked for
    ra_rad: float
    dec_rad: float
    cell_rad: float
    freq_hz: float  # weighted mean frequency
    bandwidth_hz: float
    time_start_jd: float
    time_mid_jd: float
    beam_rad: tuple[float, float, float]
    noise_jy: float  # robust RMS of the residual (astropy's mad_std: 1.4826 MAD)
    peak_jy: float  # restored peak
    clean_iterations: int
    stats: dict = field(default_factory=dict)

    @property
    def dynamic_range(self) -> float:
        return self.peak_jy / self.noise_jy if self.noise_jy > 0 else float("inf")


def _sin_pixel(*, ra_rad: float, dec_rad: float, ra0: float, dec0: float, npix: int, cell_rad: float):
    """(x, y) pixel (FITS order, 0-based) of an ICRS direction in the SIN image about (ra0, dec0)."""
    dra = ra_rad - ra0
    l = np.cos(dec_rad) * np.sin(dra)
    m = np.sin(dec_rad) * np.cos(dec0) - np.cos(dec_rad) * np.sin(dec0) * np.cos(dra)
    return npix / 2 - l / cell_rad, npix / 2 + m / cell_rad


def _add_back(*, restored: np.ndarray, model: np.ndarray | None, pb: np.ndarray, sources: list[SubtractedSource],
              freq_hz: float, ra0: float, dec0: float, cell_rad: float, beam: tuple[float, float, float]) -> None:
    """Restore subtracted sources analytically (in place): the restoring beam at their exact
    position with their fitted flux times the averaged primary beam there."""
    n = restored.shape[0]
    smaj, smin = beam[0] / FWHM_PER_SIGMA / cell_rad, beam[1] / FWHM_PER_SIGMA / cell_rad
    half = int(np.ceil(5 * smaj))
    for src in sources:
        x, y = _sin_pixel(ra_rad=src.ra_rad, dec_rad=src.dec_rad, ra0=ra0, dec0=dec0, npix=n, cell_rad=cell_rad)
        ix, iy = int(round(x)), int(round(y))
        if not (0 <= ix < n and 0 <= iy < n):
            continue
        peak = src.flux_at(freq_hz) * float(pb[iy, ix])
        y0, y1, x0, x1 = max(iy - half, 0), min(iy + half + 1, n), max(ix - half, 0), min(ix + half + 1, n)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        restored[y0:y1, x0:x1] += (peak * elliptical_gaussian(-(xx - x), yy - y, smaj, smin, beam[2])).astype(restored.dtype)
        if model is not None:
            model[iy, ix] += peak


CLEAN_IMAGES = ("dirty", "psf", "model")  # what `clean_image` can leave out (residual and restored: never)


@dataclass
class Cleaned:
    """What `clean_image` makes: images (npix, npix) float32 in FITS order."""

    dirty: np.ndarray | None  # (None: not asked for: `clean_image`'s ``images``)
    psf: np.ndarray | None
    model: np.ndarray | None  # Jy/pixel
    residual: np.ndarray
    restored: np.ndarray
    beam_rad: tuple[float, float, float]  # restoring beam FWHMs and PA
    weights: np.ndarray  # (nrow, nchan) the imaging weights used
    iterations: int
    threshold_jy: float
    major_cycles: int


def imaging_backend(requested: str) -> str:
    """"cpu" or "gpu" for ``image.backend`` ("auto", "cpu", "gpu"; also "twin": the GPU
    algorithm on numpy, for tests). "auto" is "gpu" only when a device is usable and the device
    imager has passed its self-check against the CPU twins in this process
    (`contimg.imaging.selfcheck.device_selfcheck`); "gpu" raises when either is missing."""
    from contimg.device.backend import gpu_available

    if requested in ("cpu", "twin"):
        return requested
    if requested not in ("auto", "gpu"):
        raise ValueError(f"unknown image.backend {requested!r} (auto, cpu or gpu)")
    if not gpu_available():
        if requested == "gpu":
            raise RuntimeError("image.backend = 'gpu', but cupy finds no CUDA device")
        return "cpu"
    from contimg.imaging.selfcheck import device_selfcheck

    problem = device_selfcheck()
    if problem is None:
        return "gpu"
    if requested == "gpu":
        raise RuntimeError(f"image.backend = 'gpu', but the device imager failed its self-check: {problem}")
    log.error("device imager failed its self-check, imaging on the CPU: %s", problem)
    return "cpu"


def kind_module(kind: str):
    """The array module of an imaging backend kind (`imaging_backend`'s answer): numpy for
    "cpu", cupy for "gpu", `contimg.device.backend.TWIN` (numpy taking the device path) for
    "twin"."""
    if kind == "cpu":
        return np
    if kind == "twin":
        return TWIN
    import cupy

    return cupy


def make_gridder(*, backend: str, uvw_m, freq_hz, vis, wgt, npix: int, cell_rad: float, epsilon: float,
                 nthreads: int = 1, consume: bool = False, psf_w_term: bool = True):
    """The imaging operators for ``backend`` (see `imaging_backend`): ducc0 on the CPU, contimg's
    w-stacking gridder on the device (cupy) or, for "twin", on numpy. ``consume``: the CPU
    gridder may overwrite ``vis`` with the residual visibilities; ``psf_w_term``: the PSF with
    the w-term (`ImageConfig.psf_w_term`)."""
    kind = imaging_backend(backend)
    if kind == "cpu":
        return Ducc0Gridder(uvw_m=uvw_m, freq_hz=freq_hz, vis=vis, wgt=wgt, npix=npix, cell_rad=cell_rad,
                            epsilon=epsilon, nthreads=nthreads, consume=consume, psf_w_term=psf_w_term)
    from contimg.imaging.wgrid import WGridder

    if kind == "twin":
        xp = np
    else:
        import cupy as xp
    return WGridder(uvw_m=uvw_m, freq_hz=freq_hz, vis=vis, wgt=wgt, npix=npix, cell_rad=cell_rad, epsilon=epsilon,
                    xp=xp, psf_w_term=psf_w_term)


def clean_image(*, uvw_m: np.ndarray, freq_hz: np.ndarray, vis: np.ndarray, wgt: np.ndarray, npix: int,
                cell_rad: float, cfg: ImageConfig, nthreads: int = 1, backend: str | None = None,
                weights_on_device: bool = False, transfers: TransferCounter | None = None,
                consume: bool = False, images: Collection[str] = CLEAN_IMAGES) -> Cleaned:
    """Stokes I visibilities to restored image: imaging weights (``cfg.weighting``/``robust``,
    ``taper_arcsec``, ``uv_min_lambda``/``uv_max_lambda``),
    dirty image and PSF (ducc0 on the CPU, contimg's w-stacking gridder on the device; the PSF
    in 2D unless ``cfg.psf_w_term``),
    Cotton-Schwab CLEAN (Högbom minor cycles), restoring beam fitted to the PSF.
    uvw_m (nrow, 3) float64 towards the image centre, vis (nrow, nchan) complex64, wgt
    (nrow, nchan) float32 data weights (0 = excluded), freq_hz (nchan,). ``backend``:
    ``cfg.backend`` unless given. On a device backend vis and wgt may already be on the device
    (they are uploaded otherwise) and the imaging weights are computed there
    (`contimg.imaging.weights.imaging_weights_xp`); the images come back on the host, and the
    weights too unless ``weights_on_device`` (`make_images` reduces them there); what comes back
    is added to ``transfers``. ``consume``: the caller no longer needs ``vis`` and ``wgt``: on the
    CPU the imaging weights overwrite ``wgt`` and the residual visibilities ``vis`` (no second
    (nrow, nchan) array of either). ``images``: which of dirty, psf and model the caller wants
    (the others are None: from a device they do not come back); residual and restored always."""
    cell = cell_rad
    mask = read_clean_mask(cfg.clean_mask, npix=npix)  # a bad mask fails before any gridding
    kind = imaging_backend(backend or cfg.backend)
    xp = kind_module(kind)
    wgt = imaging_weights(uvw_m=uvw_m, freq_hz=freq_hz, wgt=wgt if xp is np else xp.asarray(wgt),
                          weighting=cfg.weighting, robust=cfg.robust,
                          npix=npix, cell_rad=cell, taper_rad=np.radians(cfg.taper_arcsec / 3600),
                          uv_min_lambda=cfg.uv_min_lambda, uv_max_lambda=cfg.uv_max_lambda, xp=xp,
                          overwrite=consume)
    gridder = make_gridder(backend=kind, uvw_m=uvw_m, freq_hz=freq_hz, vis=vis, wgt=wgt, npix=npix,
                           cell_rad=cell, epsilon=cfg.epsilon, nthreads=nthreads, consume=consume,
                           psf_w_term=cfg.psf_w_term)
    dirty = gridder.dirty_image()
    psf = gridder.psf_image()
    beam = fit_beam(psf=download(beam_box(psf), xp=xp, counter=transfers, label="psf (beam fit)"), cell_rad=cell)
    model, residual, iters, thresh, majors = cotton_schwab(
        dirty=dirty, psf=psf, residual_image=gridder.residual_image, niter=cfg.niter, gain=cfg.loop_gain,
        threshold_sigma=cfg.threshold_sigma, threshold_jy=cfg.threshold_jy, cycle_fraction=cfg.cycle_fraction,
        max_major=cfg.max_major_cycles, mask=mask, xp=gridder.xp)
    restored = restore(model=model, residual=residual, bmaj_rad=beam[0], bmin_rad=beam[1], bpa_rad=beam[2],
                       cell_rad=cell, xp=xp)  # on the device for a device backend, then all come back
    wanted = set(images) | {"residual", "restored"}
    dirty, psf, model, residual, restored = (
        download(a, xp=xp, counter=transfers, label="images") if name in wanted else None
        for name, a in zip(("dirty", "psf", "model", "residual", "restored"), (dirty, psf, model, residual, restored)))
    if not weights_on_device:
        wgt = download(wgt, xp=xp, counter=transfers, label="weights")
    return Cleaned(dirty, psf, model, residual, restored, beam, wgt, iters, thresh, majors)


@dataclass
class StokesI:
    """A group's Stokes I cross-correlations rephased to the image centre, and all that imaging
    needs of its `VisChunk` (which may be freed once this exists: `stokes_i_for_imaging`).

    uvw_m (nrow, 3) float64 host; vis (nrow, nchan) complex64 and wgt (nrow, nchan) float32 data
    weights (0 = excluded) on ``xp``; the rows in ``groups`` [(factor, baselines), ...] of
    baselines averaged over ``factor`` integrations, each (ntime / factor) time-major blocks of
    its baselines (`contimg.imaging.prep.average_times`; without averaging one group
    ``[(1, ncross)]``: nrow = ntime * ncross, time-major)."""

    group_id: str
    uvw_m: np.ndarray
    vis: object
    wgt: object
    freq_hz: np.ndarray
    time_jd: np.ndarray
    ncross: int
    pointing_dec_rad: float
    chan_width_hz: float
    int_time_s: float
    ra_rad: float  # the image centre: the ICRS position of the meridian at mid-time
    dec_rad: float
    kind: str  # imaging backend kind ("cpu", "gpu", "twin")
    transfers: TransferCounter
    groups: list[tuple[int, int]]  # (factor, baselines) row groups (`average_times`)


def stokes_i_for_imaging(chunk: VisChunk, *, cfg: ImageConfig, consume: bool = False) -> StokesI:
    """``chunk``'s Stokes I towards the ICRS position of the meridian at mid-time, where
    ``cfg.backend`` images (the chunk is moved to the device first if it is not there: the
    stages put it there at the flag stage). The result holds no reference to the chunk's
    two-polarization arrays, so the caller may free the chunk before imaging;
    ``cfg.average_channels`` adjacent channels are averaged (`average_channels`). ``consume`` (the
    stages'): the chunk's host memory is given back as it is read (`rephase_stokes_i`'s
    ``release``) and its vis, flags and weights are None afterwards."""
    mid = float(np.mean(chunk.time_jd))
    ra, dec = hadec_to_icrs(ha_rad=0.0, dec_rad=chunk.pointing_dec_rad, time_jd=mid)
    kind = imaging_backend(cfg.backend)
    xp = kind_module(kind)
    chunk.to_device(xp)  # a no-op where it is already (and for the CPU on the host)
    uvw, vis, wgt = rephase_stokes_i(chunk=chunk, ra_rad=ra, dec_rad=dec, xp=xp, release=consume and xp is np,
                                     average=cfg.average_channels)
    if consume:
        chunk.vis = chunk.flags = chunk.weights = None
    ntime, ncross = chunk.time_jd.size, int(chunk.cross.sum())
    factors = time_factors(uvw_m=uvw.reshape(ntime, ncross, 3), max_factor=cfg.average_times_max,
                           step_fraction=cfg.average_times_step_fraction)
    uvw, vis, wgt, groups = average_times(uvw_m=uvw, vis=vis, wgt=wgt, ntime=ntime, factors=factors, xp=xp)
    freq = channel_frequencies(freq_hz=chunk.freq_hz, factor=cfg.average_channels)
    return StokesI(group_id=chunk.group_id, uvw_m=uvw, vis=vis, wgt=wgt, freq_hz=freq,
                   time_jd=chunk.time_jd, ncross=ncross, pointing_dec_rad=chunk.pointing_dec_rad,
                   chan_width_hz=chunk.chan_width_hz * cfg.average_channels, int_time_s=chunk.int_time_s, ra_rad=ra,
                   dec_rad=dec, kind=kind, transfers=chunk.transfers, groups=groups)


def make_images(chunk: VisChunk, *, cfg: ImageConfig, nthreads: int = 1,
                subtracted: list[SubtractedSource] | None = None) -> ImageSet:
    """Image the group's Stokes I towards the ICRS position of the meridian at mid-time:
    `stokes_i_for_imaging` then `image_stokes_i` (the stages call the two themselves, freeing the
    chunk in between)."""
    return image_stokes_i(stokes_i_for_imaging(chunk, cfg=cfg), cfg=cfg, nthreads=nthreads, subtracted=subtracted)


def image_stokes_i(si: StokesI, *, cfg: ImageConfig, nthreads: int = 1,
                   subtracted: list[SubtractedSource] | None = None) -> ImageSet:
    """Images of a group's Stokes I (`stokes_i_for_imaging`); ``si.vis`` and ``si.wgt`` are
    consumed (the caller's references are dropped here, so their memory goes as soon as it can).

    ``subtracted``: bright sources already removed from the visibilities
    (`contimg.calibrate.subtract`); they are restored analytically into the restored and model
    images.

    On a device backend (``cfg.backend`` "gpu", or "twin": the device path's array code on numpy)
    weights, gridding and CLEAN run there; what comes back (counted in ``si.transfers``) is the
    images and the per-(time, channel) weight sums."""
    ra, dec, mid = si.ra_rad, si.dec_rad, float(np.mean(si.time_jd))
    cell = np.radians(cfg.cell_arcsec / 3600.0)
    kind, xp = si.kind, kind_module(si.kind)
    vis, wgt = si.vis, si.wgt
    si.vis = si.wgt = None
    c = clean_image(uvw_m=si.uvw_m, freq_hz=si.freq_hz, vis=vis, wgt=wgt, npix=cfg.npix, cell_rad=cell, cfg=cfg,
                    nthreads=nthreads, backend=kind, weights_on_device=True, transfers=si.transfers,
                    consume=True, images=cfg.products)
    del vis
    wgt, beam, n = c.weights, c.beam_rad, cfg.npix
    dirty, psf, model, residual, restored = c.dirty, c.psf, c.model, c.residual, c.restored
    iters, thresh, majors = c.iterations, c.threshold_jy, c.major_cycles
    ntime = si.time_jd.size
    weight_tf = download(weight_per_time(wgt=wgt, ntime=ntime, groups=si.groups, xp=xp), xp=xp,
                         counter=si.transfers, label="weight sums")
    n_vis = int(xp.count_nonzero(wgt > 0))
    del wgt
    # on the host whatever the backend: it is made on a coarse grid there, and only the host uses it
    pb = average_primary_beam(npix=n, cell_rad=cell, ra_rad=ra, dec_rad=dec, time_jd=si.time_jd,
                              freq_hz=si.freq_hz, weight_tf=weight_tf, pointing_dec_rad=si.pointing_dec_rad)
    wf = weight_tf.sum(axis=0)
    freq = float(np.sum(wf * si.freq_hz) / max(wf.sum(), 1e-30))
    if subtracted:
        _add_back(restored=restored, model=model, pb=pb, sources=subtracted, freq_hz=freq, ra0=ra, dec0=dec,
                  cell_rad=cell, beam=beam)
    pbcor = pb_corrected(image=restored, pb=pb, cutoff=cfg.pb_cutoff)
    noise = float(MAD_STD_FACTOR * median_abs_deviation(residual))  # astropy's mad_std, exactly
    log.info("group %s: beam %.1f\" x %.1f\" pa %.0f deg, %d CLEAN components in %d major cycles, "
             "rms %.3g Jy, peak %.3g Jy", si.group_id, np.degrees(beam[0]) * 3600, np.degrees(beam[1]) * 3600,
             np.degrees(beam[2]), iters, majors, noise, float(restored.max()))
    made = {"dirty": dirty, "psf": psf, "model": model, "residual": residual, "restored": restored,
            "pbcor": pbcor, "pb": pb}
    return ImageSet(
        images={k: v for k, v in made.items() if v is not None},
        ra_rad=ra, dec_rad=dec, cell_rad=cell, freq_hz=freq,
        bandwidth_hz=float(si.freq_hz[-1] - si.freq_hz[0] + si.chan_width_hz),
        time_start_jd=float(si.time_jd[0] - si.int_time_s / 86400 / 2), time_mid_jd=mid, beam_rad=beam,
        noise_jy=noise, peak_jy=float(np.nanmax(restored)), clean_iterations=iters,
        stats={"subtracted": [(s.name, s.scale) for s in subtracted or []], "clean_threshold_jy": thresh, "major_cycles": majors, "n_vis": n_vis},
    )
