"""The VLA calibrator list (package data ``data/vlacalibrators.txt``) and transit look-up.

Each entry gives a J2000 position and, per band, a flux density; we keep L band (20 cm), and
derive a spectral index from the 20 cm and 6 cm fluxes where both are listed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
from astropy import units as u
from astropy.coordinates import Angle, HADec, SkyCoord
from astropy.time import Time

from contimg.sky.telescope import array_location

__all__ = ["Calibrator", "vla_calibrators", "calibrator_by_name", "find_transiting_calibrator"]

L_BAND_FREQ_HZ = 1.4e9
C_BAND_FREQ_HZ = 4.86e9
DEFAULT_SPECTRAL_INDEX = -0.7

_POS = re.compile(r"^(\S+)\s+J2000\s+\S\s+(\S+)\s+(\S+)")
_BAND = re.compile(r"^\s*(\S+cm)\s+\S\s+\S\s+\S\s+\S\s+\S\s+([0-9.]+)")


@dataclass(frozen=True)
class Calibrator:
    name: str  # J2000 name in the list, e.g. "1331+305"
    alt_name: str  # e.g. "3C286" where the list gives one
    ra_rad: float
    dec_rad: float
    flux_jy: float  # at L_BAND_FREQ_HZ
    spectral_index: float
    ref_freq_hz: float = L_BAND_FREQ_HZ

    def flux_at(self, freq_hz: np.ndarray) -> np.ndarray:
        return self.flux_jy * (np.asarray(freq_hz, float) / self.ref_freq_hz) ** self.spectral_index


def _parse(text: str) -> list[Calibrator]:
    out: list[Calibrator] = []
    current: dict | None = None

    def flush() -> None:
        if current and "20cm" in current["flux"]:
            s20 = current["flux"]["20cm"]
            s6 = current["flux"].get("6cm")
            alpha = (np.log(s6 / s20) / np.log(C_BAND_FREQ_HZ / L_BAND_FREQ_HZ)
                     if s6 and s20 > 0 else DEFAULT_SPECTRAL_INDEX)
            out.append(Calibrator(current["name"], current["alt"], current["ra"], current["dec"],
                                  s20, float(alpha)))

    for line in text.splitlines():
        m = _POS.match(line)
        if m:
            flush()
            ra = Angle(m.group(2).replace("h", ":").replace("m", ":").rstrip("s"), unit=u.hourangle)
            dec = Angle(m.group(3).replace("d", ":").replace("'", ":").rstrip('"'), unit=u.deg)
            rest = line.split()
            alt = rest[6] if len(rest) > 6 else ""
            current = {"name": m.group(1), "alt": alt, "ra": float(ra.rad), "dec": float(dec.rad), "flux": {}}
            continue
        b = _BAND.match(line)
        if b and current is not None:
            try:
                current["flux"][b.group(1)] = float(b.group(2))
            except ValueError:
                pass
    flush()
    return out


@lru_cache(maxsize=1)
def vla_calibrators() -> tuple[Calibrator, ...]:
    """All calibrators of the packaged list that have an L-band flux."""
    text = (resources.files("contimg") / "data" / "vlacalibrators.txt").read_text(errors="replace")
    return tuple(_parse(text))


def calibrator_by_name(name: str) -> Calibrator:
    for cal in vla_calibrators():
        if name in (cal.name, cal.alt_name):
            return cal
    raise KeyError(f"calibrator {name!r} is not in the VLA calibrator list")


def find_transiting_calibrator(*, time_jd: np.ndarray, pointing_dec_rad: float, min_flux_jy: float,
                               max_offset_deg: float) -> Calibrator | None:
    """The brightest listed calibrator (L band >= ``min_flux_jy``) whose apparent declination is
    within ``max_offset_deg`` of the pointing and whose transit (HA = 0) falls inside the span of
    ``time_jd`` (integration centres, widened by half an integration); None if there is none."""
    cands = [c for c in vla_calibrators()
             if c.flux_jy >= min_flux_jy and abs(np.degrees(c.dec_rad - pointing_dec_rad)) < max_offset_deg + 1.0]
    if not cands:
        return None
    t0, t1 = float(np.min(time_jd)), float(np.max(time_jd))
    mid = Time(0.5 * (t0 + t1), format="jd", scale="utc")
    frame = HADec(obstime=mid, location=array_location(), pressure=0 * u.hPa)
    coords = SkyCoord(ra=[c.ra_rad for c in cands] * u.rad, dec=[c.dec_rad for c in cands] * u.rad,
                      frame="icrs").transform_to(frame)
    ha_deg = coords.ha.wrap_at(180 * u.deg).to_value(u.deg)
    dec_deg = coords.dec.to_value(u.deg)
    step = float(np.median(np.diff(time_jd))) if np.size(time_jd) > 1 else 0.0
    half_span_deg = (0.5 * (t1 - t0) + 0.5 * step) * 360.98564736629
    ok = (np.abs(ha_deg) <= half_span_deg) & (np.abs(dec_deg - np.degrees(pointing_dec_rad)) <= max_offset_deg)
    if not ok.any():
        return None
    best = max((c for c, k in zip(cands, ok) if k), key=lambda c: c.flux_jy)
    return best
