"""Point-source skies and their apparent visibilities."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contimg.beam import airy_power
from contimg.geometry import hadec_to_enu, icrs_to_enu
from contimg.predict import predict_point_sources

__all__ = ["PointSources", "random_sources_around", "sky_visibilities"]


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

    def __len__(self) -> int:
        return self.ra_rad.size

    @staticmethod
    def concat(parts: list["PointSources"]) -> "PointSources":
        ref = parts[0].ref_freq_hz
        if any(p.ref_freq_hz != ref for p in parts):
            raise ValueError("cannot concatenate sources with different reference frequencies")
        return PointSources(*(np.concatenate([getattr(p, k) for p in parts])
                              for k in ("name", "ra_rad", "dec_rad", "flux_jy", "spectral_index")), ref)


def random_sources_around(*, rng: np.random.Generator, n: int, ra_rad: float, dec_rad: float,
                          radius_deg: float, flux_range_jy: tuple[float, float], min_separation_deg: float,
                          avoid: list[tuple[float, float]], ref_freq_hz: float, prefix: str) -> PointSources:
    """``n`` sources uniform in a disc (tangent plane) about (ra, dec), log-uniform fluxes,
    spectral indices ~ N(-0.7, 0.2), at least ``min_separation_deg`` from each other and ``avoid``."""
    ras, decs = [], []
    taken = [(a, d) for a, d in avoid]
    tries = 0
    while len(ras) < n:
        tries += 1
        if tries > 10000 * max(n, 1):
            raise ValueError(f"cannot place {n} sources {min_separation_deg} deg apart within {radius_deg} deg")
        r = np.radians(radius_deg) * np.sqrt(rng.uniform())
        phi = rng.uniform(0, 2 * np.pi)
        l, m = r * np.cos(phi), r * np.sin(phi)
        nn = np.sqrt(1 - l * l - m * m)
        dec = np.arcsin(m * np.cos(dec_rad) + nn * np.sin(dec_rad))
        ra = ra_rad + np.arctan2(l, nn * np.cos(dec_rad) - m * np.sin(dec_rad))
        if all(_separation(ra, dec, a, d) >= np.radians(min_separation_deg) for a, d in taken):
            ras.append(ra % (2 * np.pi))
            decs.append(dec)
            taken.append((ra, dec))
    lo, hi = flux_range_jy
    flux = np.exp(rng.uniform(np.log(lo), np.log(hi), n))
    alpha = rng.normal(-0.7, 0.2, n)
    names = np.array([f"{prefix}{i:03d}" for i in range(n)])
    return PointSources(names, np.array(ras), np.array(decs), flux, alpha, ref_freq_hz)


def _separation(ra1, dec1, ra2, dec2) -> float:
    c = np.sin(dec1) * np.sin(dec2) + np.cos(dec1) * np.cos(dec2) * np.cos(ra1 - ra2)
    return float(np.arccos(np.clip(c, -1, 1)))


def sky_visibilities(*, sources: PointSources, time_jd: np.ndarray, freq_hz: np.ndarray, b_enu_m: np.ndarray,
                     pointing_dec_rad: float) -> np.ndarray:
    """Model visibilities (ntime, nbl, nchan) complex64 of ``sources`` seen through the Airy beam
    of a dish pointed at (HA 0, ``pointing_dec_rad``), fringe-stopped to that same direction."""
    s0 = hadec_to_enu(ha_rad=0.0, dec_rad=pointing_dec_rad)  # (3,), fixed in ENU
    s = icrs_to_enu(ra_rad=sources.ra_rad, dec_rad=sources.dec_rad, time_jd=time_jd)  # (n, t, 3)
    cos_theta = np.clip(s @ s0, -1.0, 1.0)
    sin_theta = np.sqrt(1.0 - cos_theta**2)
    above = (s[..., 2] > 0)[..., None]
    amp = sources.flux_at(freq_hz)[:, None, :] * airy_power(sin_theta=sin_theta[..., None], freq_hz=freq_hz) * above
    return predict_point_sources(b_enu_m=b_enu_m, s_rel=s - s0, amp_jy=amp, freq_hz=freq_hz)
