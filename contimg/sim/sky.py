"""Random point-source populations for the simulator."""

from __future__ import annotations

import numpy as np

from contimg.sky.geometry import angular_separation_rad
from contimg.sky.skymodel import PointSources

__all__ = ["random_sources_around"]


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
        if all(angular_separation_rad(ra, dec, a, d) >= np.radians(min_separation_deg) for a, d in taken):
            ras.append(ra % (2 * np.pi))
            decs.append(dec)
            taken.append((ra, dec))
    lo, hi = flux_range_jy
    flux = np.exp(rng.uniform(np.log(lo), np.log(hi), n))
    alpha = rng.normal(-0.7, 0.2, n)
    names = np.array([f"{prefix}{i:03d}" for i in range(n)])
    return PointSources(names, np.array(ras), np.array(decs), flux, alpha, ref_freq_hz)
