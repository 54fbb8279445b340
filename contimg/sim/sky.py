"""Random point-source populations for the simulator."""

from __future__ import annotations

import numpy as np

from contimg.sky.geometry import angular_separation_rad
from contimg.sky.skymodel import PointSources

__all__ = ["random_sources_around", "random_sources_in_strip", "offset_position"]


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


def offset_position(*, ra_rad: float, dec_rad: float, east_deg: float, north_deg: float) -> tuple[float, float]:
    """The (ra, dec) radians reached from (ra, dec) by (east, north) offsets on the sky (the SIN
    tangent plane about it): the inverse of the (l, m) of a SIN image centred there."""
    l, m = np.radians(east_deg), np.radians(north_deg)
    nn = np.sqrt(1 - l * l - m * m)
    dec = np.arcsin(m * np.cos(dec_rad) + nn * np.sin(dec_rad))
    ra = ra_rad + np.arctan2(l, nn * np.cos(dec_rad) - m * np.sin(dec_rad))
    return float(ra % (2 * np.pi)), float(dec)


def random_sources_in_strip(*, rng: np.random.Generator, per_deg2: float, ra_first_rad: float, ra_last_rad: float,
                            dec_rad: float, halfwidth_deg: float, margin_deg: float,
                            flux_range_jy: tuple[float, float], min_separation_deg: float,
                            avoid: list[tuple[float, float]], ref_freq_hz: float, prefix: str) -> PointSources:
    """One fixed sky for a drift-scan strip: sources uniform on the sphere (``per_deg2`` per
    square degree, rounded) in the band ``dec_rad`` ± ``halfwidth_deg`` between the first field
    centre's RA ``ra_first_rad`` less ``margin_deg`` on the sky and the last's
    ``ra_last_rad`` (east of it, through 0 if need be) plus ``margin_deg``; log-uniform fluxes,
    spectral indices ~ N(-0.7, 0.2), at least ``min_separation_deg`` from each other and ``avoid``."""
    span = (ra_last_rad - ra_first_rad) % (2 * np.pi)
    pad = np.radians(margin_deg) / np.cos(dec_rad)
    ra_lo, ra_hi = ra_first_rad - pad, ra_first_rad + span + pad
    d_lo = max(dec_rad - np.radians(halfwidth_deg), -np.pi / 2)
    d_hi = min(dec_rad + np.radians(halfwidth_deg), np.pi / 2)
    area_deg2 = (ra_hi - ra_lo) * (np.sin(d_hi) - np.sin(d_lo)) * np.degrees(1.0) ** 2
    n = int(round(per_deg2 * area_deg2))
    taken_ra = np.array([a for a, _ in avoid], float)
    taken_dec = np.array([d for _, d in avoid], float)
    cos_min = np.cos(np.radians(min_separation_deg))
    ras, decs = [], []
    tries = 0
    while len(ras) < n:
        tries += 1
        if tries > 1000 * max(n, 1):
            raise ValueError(f"cannot place {n} sources {min_separation_deg} deg apart in the strip")
        ra = rng.uniform(ra_lo, ra_hi)
        dec = np.arcsin(rng.uniform(np.sin(d_lo), np.sin(d_hi)))
        cos_sep = np.sin(dec) * np.sin(taken_dec) + np.cos(dec) * np.cos(taken_dec) * np.cos(ra - taken_ra)
        if np.all(cos_sep <= cos_min):
            ras.append(ra % (2 * np.pi))
            decs.append(dec)
            taken_ra = np.append(taken_ra, ra)
            taken_dec = np.append(taken_dec, dec)
    lo, hi = flux_range_jy
    flux = np.exp(rng.uniform(np.log(lo), np.log(hi), n))
    alpha = rng.normal(-0.7, 0.2, n)
    names = np.array([f"{prefix}{i:04d}" for i in range(n)])
    return PointSources(names, np.array(ras), np.array(decs), flux, alpha, ref_freq_hz)
