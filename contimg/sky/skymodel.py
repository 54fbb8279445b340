"""Point-source sky models and their apparent, fringe-stopped visibilities (simulator and
calibrator model alike)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contimg.sky.beam import airy_power
from contimg.sky.geometry import hadec_to_enu, icrs_to_enu
from contimg.sky.predict import predict_point_sources, predict_point_sources_xp

__all__ = ["PointSources", "apparent_sources", "sky_visibilities"]


@dataclass(frozen=True)
class PointSources:
    """Unpolarized point sources: ``S(f) = flux_jy * (f / ref_freq_hz) ** spectral_index``;
    XX = YY = S for each (so Stokes I = (XX + YY) / 2 = S)."""

    name: np.ndarray  # (n,) str
    ra_rad: np.ndarray  # (n,) float64 ICRS
    dec_rad: np.ndarray  # (n,) float64 ICRS
    flux_jy: np.ndarray  # (n,) float64 at ref_freq_hz
    spectral_index: np.ndarray  # (n,) float64
    ref_freq_hz: float

    def flux_at(self, freq_hz: np.ndarray) -> np.ndarray:
        """(n, nchan) float64."""
        return self.flux_jy[:, None] * (np.asarray(freq_hz)[None, :] / self.ref_freq_hz) ** self.spectral_index[:, None]

    @staticmethod
    def from_calibrators(calibrators: list) -> "PointSources":
        """Listed calibrators (`contimg.sky.calibrators.Calibrator`) as point sources."""
        return PointSources(np.array([c.name for c in calibrators]), np.array([c.ra_rad for c in calibrators]),
                            np.array([c.dec_rad for c in calibrators]), np.array([c.flux_jy for c in calibrators]),
                            np.array([c.spectral_index for c in calibrators]), calibrators[0].ref_freq_hz)

    def at_ref(self, ref_freq_hz: float) -> "PointSources":
        """The same sources with fluxes given at ``ref_freq_hz``."""
        flux = self.flux_jy * (ref_freq_hz / self.ref_freq_hz) ** self.spectral_index
        return PointSources(self.name, self.ra_rad, self.dec_rad, flux, self.spectral_index, float(ref_freq_hz))

    def select(self, mask: np.ndarray) -> "PointSources":
        return PointSources(self.name[mask], self.ra_rad[mask], self.dec_rad[mask], self.flux_jy[mask],
                            self.spectral_index[mask], self.ref_freq_hz)

    def __len__(self) -> int:
        return self.ra_rad.size

    @staticmethod
    def concat(parts: list["PointSources"]) -> "PointSources":
        ref = parts[0].ref_freq_hz
        parts = [p if p.ref_freq_hz == ref else p.at_ref(ref) for p in parts]
        return PointSources(*(np.concatenate([getattr(p, k) for p in parts])
                              for k in ("name", "ra_rad", "dec_rad", "flux_jy", "spectral_index")), ref)


def apparent_sources(*, sources: PointSources, time_jd: np.ndarray, freq_hz: np.ndarray,
                     pointing_dec_rad: float) -> tuple[np.ndarray, np.ndarray]:
    """Where ``sources`` are and how bright they look through the Airy beam of a dish pointed at
    (HA 0, ``pointing_dec_rad``): (s_rel (nsrc, ntime, 3) float64, each source's ENU unit
    vector minus the pointing's, the phase centre; amp_jy (nsrc, ntime, nchan) float64, flux x
    beam power, 0 below the horizon). One astropy transform for all sources and times."""
    s0 = hadec_to_enu(ha_rad=0.0, dec_rad=pointing_dec_rad)  # (3,), fixed in ENU
    s = icrs_to_enu(ra_rad=sources.ra_rad, dec_rad=sources.dec_rad, time_jd=time_jd)  # (n, t, 3)
    cos_theta = np.clip(s @ s0, -1.0, 1.0)
    sin_theta = np.sqrt(1.0 - cos_theta**2)
    above = (s[..., 2] > 0)[..., None]
    amp = sources.flux_at(freq_hz)[:, None, :] * airy_power(sin_theta=sin_theta[..., None], freq_hz=freq_hz) * above
    return s - s0, amp


def sky_visibilities(*, sources: PointSources, time_jd: np.ndarray, freq_hz: np.ndarray, b_enu_m: np.ndarray,
                     pointing_dec_rad: float, xp=None, out: np.ndarray | None = None):
    """Model visibilities (ntime, nbl, nchan) complex64 of ``sources`` seen through the Airy beam
    of a dish pointed at (HA 0, ``pointing_dec_rad``), fringe-stopped to that same direction
    (`apparent_sources`, then the direct sum). ``xp`` (numpy or cupy): the direct sum as the
    device path's array code, the result on ``xp`` (`predict_point_sources_xp`); None: the numba
    twin (`predict_point_sources`), into ``out`` (a complex64 array of that shape) when given."""
    s_rel, amp = apparent_sources(sources=sources, time_jd=time_jd, freq_hz=freq_hz, pointing_dec_rad=pointing_dec_rad)
    if xp is not None:
        return predict_point_sources_xp(xp=xp, b_enu_m=b_enu_m, s_rel=s_rel, amp_jy=amp, freq_hz=freq_hz)
    return predict_point_sources(b_enu_m=b_enu_m, s_rel=s_rel, amp_jy=amp, freq_hz=freq_hz, out=out)
