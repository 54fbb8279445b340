"""Subtract known bright sources from calibrated visibilities, with their time-variable beam.

A source drifting through the primary beam during a group is weighted by ``A(t, f)``; its
sidelobes in an image made of all integrations therefore differ from the image's PSF (the
PSF weights every integration alike), and CLEAN leaves errors of a few per cent of the
source's sidelobes around it. For the listed calibrators (VLA list) in the beam we predict
``S(f) A(t, f)`` exactly, fit one real flux scale per source by linear least squares against
the calibrated Stokes I data (a measurement, not an assumption), and subtract the fitted
model from both polarizations. The imager restores them analytically at their catalogue
positions with the fitted flux.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numba
import numpy as np
from astropy import units as u
from astropy.coordinates import HADec, SkyCoord
from astropy.time import Time

from contimg.sky.calibrators import Calibrator, vla_calibrators
from contimg.io.chunk import VisChunk
from contimg.sky.predict import predict_point_sources, predict_point_sources_xp
from contimg.sky.skymodel import PointSources, apparent_sources
from contimg.sky.telescope import array_location

log = logging.getLogger(__name__)

__all__ = ["SubtractedSource", "bright_sources_in_beam", "fit_and_subtract", "subtract_fitted",
           "normal_equations_xp", "subtract_xp"]

_BLOCK_BYTES = 256 * 2**20  # temporaries per block of integrations (the device path)


@dataclass(frozen=True)
class SubtractedSource:
    name: str
    ra_rad: float
    dec_rad: float
    catalogue_flux_jy: float  # at ref_freq_hz
    spectral_index: float
    ref_freq_hz: float
    scale: float  # fitted flux / catalogue flux

    @property
    def flux_jy(self) -> float:  # the catalogue flux, so that the unit-scale model is S(f) A(t, f)
        return self.catalogue_flux_jy

    def flux_at(self, freq_hz: float) -> float:
        return self.scale * self.catalogue_flux_jy * (freq_hz / self.ref_freq_hz) ** self.spectral_index


@numba.njit(parallel=True, cache=True, nogil=True)
def _normal_equations(vis, flags, models, cross_idx, fit_sel, normal, rhs):
    """Per channel (in parallel): normal[c, k, l] = sum w Re(conj(M_k) M_l),
    rhs[c, k] = sum w Re(conj(M_k) V) over times, fitted baselines and polarizations."""
    nk, ntime, nb, nchan = models.shape
    npol = vis.shape[3]
    for c in numba.prange(nchan):
        for t in range(ntime):
            for bb in range(nb):
                if not fit_sel[bb]:
                    continue
                b = cross_idx[bb]
                for p in range(npol):
                    if flags[t, b, c, p]:
                        continue
                    v = vis[t, b, c, p]
                    for k in range(nk):
                        mk = np.conj(models[k, t, bb, c])
                        rhs[c, k] += (mk * v).real
                        for l in range(nk):
                            normal[c, k, l] += (mk * models[l, t, bb, c]).real


@numba.njit(parallel=True, cache=True, nogil=True)
def _subtract(vis, models, cross_idx, scales):
    """vis[t, cross_idx[bb], c, p] -= sum_k scales[k] * models[k, t, bb, c], in place."""
    nk, ntime, nb, nchan = models.shape
    npol = vis.shape[3]
    for tb in numba.prange(ntime * nb):
        t = tb // nb
        bb = tb % nb
        b = cross_idx[bb]
        for c in range(nchan):
            m = 0j
            for k in range(nk):
                m += scales[k] * models[k, t, bb, c]
            for p in range(npol):
                vis[t, b, c, p] -= m


def bright_sources_in_beam(*, time_jd: np.ndarray, pointing_dec_rad: float, min_flux_jy: float,
                           radius_deg: float) -> list[Calibrator]:
    """Listed calibrators brighter than ``min_flux_jy`` within ``radius_deg`` of the pointing
    (HA 0, pointing Dec) at mid-time."""
    cands = [c for c in vla_calibrators()
             if c.flux_jy >= min_flux_jy and abs(np.degrees(c.dec_rad - pointing_dec_rad)) < radius_deg + 1.0]
    if not cands:
        return []
    mid = Time(float(np.mean(time_jd)), format="jd", scale="utc")
    frame = HADec(obstime=mid, location=array_location(), pressure=0 * u.hPa)
    hadec = SkyCoord(ra=[c.ra_rad for c in cands] * u.rad, dec=[c.dec_rad for c in cands] * u.rad).transform_to(frame)
    pointing = SkyCoord(ha=0 * u.rad, dec=pointing_dec_rad * u.rad, frame=frame)
    sep = hadec.separation(pointing).to_value(u.deg)
    return [c for c, s in zip(cands, sep) if s <= radius_deg]


_HOST_BLOCK_BYTES = 64 * 2**20  # the host path's models, per block of integrations


def _source_models(chunk: VisChunk, sources: list, xp=None, times: slice = slice(None), apparent=None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit-scale models ``S(f) A(t, f)`` of each source on the cross-correlations at the
    integrations ``times``: (k, ntime, ncross, nchan) complex64, the cross-correlation indices
    and their lengths (m). ``xp`` (a device module): the models predicted by the array code, on
    ``xp``. ``apparent``: the sources' `_apparent` over all the chunk's integrations, when a
    caller predicts block after block (computed here otherwise)."""
    cross = chunk.cross
    b_enu = chunk.antenna_enu_m[chunk.ant2[cross]] - chunk.antenna_enu_m[chunk.ant1[cross]]
    s_rel, amp = _apparent(chunk, sources) if apparent is None else apparent
    s_rel, amp = s_rel[:, times], amp[:, times]
    shape = (len(sources), s_rel.shape[1], b_enu.shape[0], chunk.freq_hz.size)
    models = np.empty(shape, np.complex64) if xp is None else xp.empty(shape, np.complex64)
    for k in range(len(sources)):  # each predicted in place: no per-source copies of ~0.7 GB
        kw = dict(b_enu_m=b_enu, s_rel=s_rel[k:k + 1], amp_jy=amp[k:k + 1], freq_hz=chunk.freq_hz)
        if xp is None:
            predict_point_sources(**kw, out=models[k])
        else:
            models[k] = predict_point_sources_xp(**kw, xp=xp)
    return models, np.flatnonzero(cross), np.linalg.norm(b_enu, axis=1)


def _apparent(chunk: VisChunk, sources: list) -> tuple[np.ndarray, np.ndarray]:
    """`apparent_sources` of ``sources`` at all of the chunk's integrations, with their
    catalogue fluxes (the unit scale): one astropy transform, however many blocks follow."""
    points = PointSources.concat([PointSources.from_calibrators([c]) for c in sources])  # each its own reference
    return apparent_sources(sources=points, time_jd=chunk.time_jd,
                            freq_hz=chunk.freq_hz, pointing_dec_rad=chunk.pointing_dec_rad)


def _device_module(chunk: VisChunk):
    """The chunk's device module, or None on the host (the numba twins)."""
    xp = getattr(chunk, "xp", np)
    return None if xp is np else xp


def _time_steps(ntime: int, per_time_bytes: int, block_bytes: int = _BLOCK_BYTES):
    step = max(1, block_bytes // max(per_time_bytes, 1))
    for t0 in range(0, ntime, step):
        yield slice(t0, min(t0 + step, ntime))


def normal_equations_xp(*, xp, vis, flags, models, cross_idx: np.ndarray, fit_sel: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
    """`_normal_equations` summed over channels, as array code on ``xp``: (normal (k, k),
    rhs (k,)) float64 on the host, ``normal[k, l] = sum Re(conj(M_k) M_l)`` and ``rhs[k] = sum
    Re(conj(M_k) V)`` over times, fitted baselines, channels and unflagged polarizations
    (complex128 products; the numba twin's are complex64 products summed in float64)."""
    nk, ntime, nb, nchan = models.shape
    npol = vis.shape[3]
    sel_d = xp.asarray(np.flatnonzero(fit_sel))
    b_d = xp.asarray(np.asarray(cross_idx)[np.asarray(fit_sel, bool)])
    normal = xp.zeros((nk, nk))
    rhs = xp.zeros(nk)
    for ts in _time_steps(ntime, nb * nchan * (nk * 16 + npol * 9 + 16)):
        m = models[:, ts][:, :, sel_d].astype(np.complex128)  # (k, t, b, c)
        ok = ~flags[ts][:, b_d]  # (t, b, c, p)
        n_ok = ok.sum(axis=3)  # unflagged polarizations per sample
        v = xp.where(ok, vis[ts][:, b_d], 0).astype(np.complex128).sum(axis=3)
        rhs += xp.einsum("ktbc,tbc->k", xp.conj(m), v).real
        normal += xp.einsum("ktbc,ltbc,tbc->kl", xp.conj(m), m, n_ok.astype(np.float64)).real
    return to_host_array(normal), to_host_array(rhs)


def to_host_array(a) -> np.ndarray:
    return a.get() if hasattr(a, "get") else np.asarray(a)


def subtract_xp(*, xp, vis, models, cross_idx: np.ndarray, scales: np.ndarray) -> None:
    """`_subtract` as array code on ``xp``, in place: ``vis[t, cross_idx[b], c, p] -= sum_k
    scales[k] M_k[t, b, c]`` (the sum in complex128, in the order of k, as the twin)."""
    nk, ntime, nb, nchan = models.shape
    b_d = xp.asarray(np.asarray(cross_idx))
    for ts in _time_steps(ntime, nb * nchan * (16 + 2 * vis.shape[3] * 16)):
        m = float(scales[0]) * models[0, ts].astype(np.complex128)
        for k in range(1, nk):
            m = m + float(scales[k]) * models[k, ts].astype(np.complex128)
        block = vis[ts]
        block[:, b_d] = (block[:, b_d] - m[..., None]).astype(np.complex64)


def fit_and_subtract(*, chunk: VisChunk, sources: list[Calibrator], min_baseline_m: float = 0.0,
                     ) -> list[SubtractedSource]:
    """Fit a flux scale per source against the calibrated data and subtract, in place (on the
    device, with its array code, when the chunk is there: `VisChunk.to_device`).

    The fit uses unflagged cross-correlations of both polarizations on baselines of at least
    ``min_baseline_m`` (on short ones the unmodelled field leaks into the fit most); the fitted
    models are subtracted from every baseline. Returns what was subtracted.
    """
    if not sources:
        return []
    xp = _device_module(chunk)
    n = len(sources)
    if xp is None:  # the host: the models a block of integrations at a time, twice (fit, then subtract)
        normal = np.zeros((chunk.freq_hz.size, n, n))
        rhs = np.zeros((chunk.freq_hz.size, n))
        apparent = _apparent(chunk, sources)
        for ts in _host_blocks(chunk, n):
            models, cross_idx, length_m = _source_models(chunk, sources, None, ts, apparent)
            _normal_equations(chunk.vis[ts], chunk.flags[ts], models, cross_idx, length_m >= min_baseline_m,
                              normal, rhs)
        scales = np.linalg.lstsq(normal.sum(axis=0), rhs.sum(axis=0), rcond=None)[0]
        _subtract_host(chunk, sources, scales, apparent)
    else:
        models, cross_idx, length_m = _source_models(chunk, sources, xp)
        normal, rhs = normal_equations_xp(xp=xp, vis=chunk.vis, flags=chunk.flags, models=models,
                                          cross_idx=cross_idx, fit_sel=length_m >= min_baseline_m)
        scales = np.linalg.lstsq(normal, rhs, rcond=None)[0]
        subtract_xp(xp=xp, vis=chunk.vis, models=models, cross_idx=cross_idx, scales=scales.astype(np.float64))
    out = []
    for c, scale in zip(sources, scales):
        out.append(SubtractedSource(c.name, c.ra_rad, c.dec_rad, c.flux_jy, c.spectral_index, c.ref_freq_hz,
                                    float(scale)))
        log.info("group %s: subtracted %s, fitted flux %.3f x catalogue (%.2f Jy)", chunk.group_id, c.name, scale,
                 scale * c.flux_jy)
    return out


def subtract_fitted(*, chunk: VisChunk, subtracted: list[SubtractedSource]) -> None:
    """Subtract sources whose scales were fitted before (a resumed group), in place."""
    if not subtracted:
        return
    xp = _device_module(chunk)
    scales = np.array([s.scale for s in subtracted], np.float64)
    if xp is None:
        _subtract_host(chunk, subtracted, scales)
    else:
        models, cross_idx, _ = _source_models(chunk, subtracted, xp)
        subtract_xp(xp=xp, vis=chunk.vis, models=models, cross_idx=cross_idx, scales=scales)


def _host_blocks(chunk: VisChunk, n_sources: int):
    """Blocks of integrations whose models take about ``_HOST_BLOCK_BYTES``."""
    per_time = n_sources * int(chunk.cross.sum()) * chunk.freq_hz.size * 8
    return _time_steps(chunk.time_jd.size, per_time, _HOST_BLOCK_BYTES)


def _subtract_host(chunk: VisChunk, sources: list, scales: np.ndarray, apparent=None) -> None:
    """The numba twin's subtraction of ``scales`` times the sources' models, in place, the models
    predicted a block of integrations at a time (``apparent``: the sources' `_apparent`, when
    the caller has it)."""
    apparent = _apparent(chunk, sources) if apparent is None else apparent
    for ts in _host_blocks(chunk, len(sources)):
        models, cross_idx, _ = _source_models(chunk, sources, None, ts, apparent)
        _subtract(chunk.vis[ts], models, cross_idx, np.asarray(scales, np.float64))
