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
from contimg.sky.skymodel import PointSources, sky_visibilities
from contimg.sky.telescope import array_location

log = logging.getLogger(__name__)

__all__ = ["SubtractedSource", "bright_sources_in_beam", "fit_and_subtract", "subtract_fitted"]


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


def _source_models(chunk: VisChunk, sources: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit-scale models ``S(f) A(t, f)`` of each source on the cross-correlations:
    (k, ntime, ncross, nchan) complex64, the cross-correlation indices and their lengths (m)."""
    cross = chunk.cross
    b_enu = chunk.antenna_enu_m[chunk.ant2[cross]] - chunk.antenna_enu_m[chunk.ant1[cross]]
    models = np.empty((len(sources), chunk.time_jd.size, b_enu.shape[0], chunk.freq_hz.size), np.complex64)
    for k, c in enumerate(sources):  # each predicted in place: no per-source copies of ~0.7 GB
        sky_visibilities(sources=PointSources.from_calibrators([c]), time_jd=chunk.time_jd, freq_hz=chunk.freq_hz,
                         b_enu_m=b_enu, pointing_dec_rad=chunk.pointing_dec_rad, out=models[k])
    return models, np.flatnonzero(cross), np.linalg.norm(b_enu, axis=1)


def fit_and_subtract(*, chunk: VisChunk, sources: list[Calibrator], min_baseline_m: float = 0.0,
                     ) -> list[SubtractedSource]:
    """Fit a flux scale per source against the calibrated data and subtract, in place.

    The fit uses unflagged cross-correlations of both polarizations on baselines of at least
    ``min_baseline_m`` (on short ones the unmodelled field leaks into the fit most); the fitted
    models are subtracted from every baseline. Returns what was subtracted.
    """
    if not sources:
        return []
    models, cross_idx, length_m = _source_models(chunk, sources)
    fit_sel = length_m >= min_baseline_m
    n = models.shape[0]
    normal = np.zeros((chunk.freq_hz.size, n, n))
    rhs = np.zeros((chunk.freq_hz.size, n))
    _normal_equations(chunk.vis, chunk.flags, models, cross_idx, fit_sel, normal, rhs)
    scales = np.linalg.lstsq(normal.sum(axis=0), rhs.sum(axis=0), rcond=None)[0]
    _subtract(chunk.vis, models, cross_idx, scales.astype(np.float64))
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
    models, cross_idx, _ = _source_models(chunk, subtracted)
    _subtract(chunk.vis, models, cross_idx, np.array([s.scale for s in subtracted], np.float64))
