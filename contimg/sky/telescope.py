"""The DSA-110 array: stations, active antennas, the array's location, ENU/ECEF geometry.

Station positions are the telescope's WGS84 list (package data
``data/DSA110_Station_Coordinates.csv``). The array reference position is the OVRO_MMA
observatory of casacore's measures data (the files say ``telescope_name = "OVRO_MMA"``), so a
Measurement Set written later agrees with what CASA knows.

Conventions: ENU is east, north, up at the array reference position, metres. ECEF is ITRF/WGS84
metres. Antenna numbers are 0..116, names "1".."117" (station DSA-001 is number 0, name "1").
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
from astropy import units as u
from astropy.coordinates import EarthLocation
from pyuvdata.utils import ECEF_from_ENU, ENU_from_ECEF

__all__ = [
    "ARRAY_LAT_RAD", "ARRAY_LON_RAD", "ARRAY_HEIGHT_M", "DISH_DIAMETER_M", "N_STATIONS",
    "INACTIVE_STATIONS", "Stations", "array_location", "stations", "active_station_numbers",
    "ecef_to_enu", "enu_to_ecef",
]

# casacore measures data, observatory "OVRO_MMA" (WGS84 lon, lat, height).
ARRAY_LON_RAD = -2.064427799136453
ARRAY_LAT_RAD = 0.6498455107238486
ARRAY_HEIGHT_M = 1188.0519
DISH_DIAMETER_M = 4.65
N_STATIONS = 117
MISSING_ELEVATION_M = 1182.6  # DSA-117 has no elevation in the list
# Active: all of 1..116 except these (117 is never in the data).
INACTIVE_STATIONS = frozenset({10, 21, 22, 23, *range(52, 68), 117})


@dataclass(frozen=True)
class Stations:
    """All 117 stations. Arrays are indexed by antenna number (station number - 1)."""

    names: np.ndarray  # (117,) str, "1".."117"
    numbers: np.ndarray  # (117,) int, 0..116
    ecef_m: np.ndarray  # (117, 3) float64, absolute ECEF
    enu_m: np.ndarray  # (117, 3) float64, relative to the array reference position


def array_location() -> EarthLocation:
    """The array reference position (OVRO_MMA) as an astropy `EarthLocation`."""
    return EarthLocation.from_geodetic(
        lon=np.degrees(ARRAY_LON_RAD) * u.deg, lat=np.degrees(ARRAY_LAT_RAD) * u.deg,
        height=ARRAY_HEIGHT_M * u.m,
    )


def ecef_to_enu(*, ecef_rel_m: np.ndarray) -> np.ndarray:
    """ECEF offsets from the array reference (..., 3) -> ENU (..., 3), metres (pyuvdata's
    `ENU_from_ECEF` at the array reference position)."""
    rel = np.asarray(ecef_rel_m, np.float64)
    enu = ENU_from_ECEF(rel.reshape(-1, 3) + array_ecef_m(), latitude=ARRAY_LAT_RAD, longitude=ARRAY_LON_RAD,
                        altitude=ARRAY_HEIGHT_M)
    return enu.reshape(rel.shape)


def enu_to_ecef(*, enu_m: np.ndarray) -> np.ndarray:
    """ENU (..., 3) -> ECEF offsets from the array reference (..., 3), metres (pyuvdata's
    `ECEF_from_ENU`)."""
    enu = np.asarray(enu_m, np.float64)
    xyz = ECEF_from_ENU(enu.reshape(-1, 3), latitude=ARRAY_LAT_RAD, longitude=ARRAY_LON_RAD, altitude=ARRAY_HEIGHT_M)
    return (xyz - array_ecef_m()).reshape(enu.shape)


def array_ecef_m() -> np.ndarray:
    """ECEF of the array reference position, (3,) float64 metres."""
    loc = array_location()
    return np.array([loc.x.to_value(u.m), loc.y.to_value(u.m), loc.z.to_value(u.m)])


@lru_cache(maxsize=1)
def stations() -> Stations:
    """Read the 117 stations from the packaged CSV."""
    text = (resources.files("contimg") / "data" / "DSA110_Station_Coordinates.csv").read_text()
    rows = list(csv.reader(text.splitlines()))
    lat, lon, height = {}, {}, {}
    for row in rows:
        if len(row) < 4 or not row[1].startswith("DSA-") or not row[1][4:].isdigit():
            continue
        num = int(row[1].split("-")[1])
        lat[num], lon[num] = float(row[2]), float(row[3])
        height[num] = float(row[4]) if len(row) > 4 and row[4].strip() else MISSING_ELEVATION_M
    if sorted(lat) != list(range(1, N_STATIONS + 1)):
        raise ValueError(f"station list has stations {sorted(lat)[:3]}..., expected 1..{N_STATIONS}")
    nums = np.arange(1, N_STATIONS + 1)
    loc = EarthLocation.from_geodetic(
        lon=[lon[n] for n in nums] * u.deg, lat=[lat[n] for n in nums] * u.deg,
        height=[height[n] for n in nums] * u.m,
    )
    ecef = np.stack([loc.x.to_value(u.m), loc.y.to_value(u.m), loc.z.to_value(u.m)], axis=-1)
    enu = ecef_to_enu(ecef_rel_m=ecef - array_ecef_m())
    return Stations(
        names=np.array([str(n) for n in nums]), numbers=nums - 1, ecef_m=ecef, enu_m=enu,
    )


def active_station_numbers(n_antennas: int | None = None) -> np.ndarray:
    """Antenna numbers (0-based) of the active stations, (96,) int; the first ``n_antennas``
    spread over the array when fewer are asked for (keeps both arms and outriggers)."""
    active = np.array([n - 1 for n in range(1, N_STATIONS + 1) if n not in INACTIVE_STATIONS])
    if n_antennas is None or n_antennas >= active.size:
        return active
    pick = np.unique(np.round(np.linspace(0, active.size - 1, n_antennas)).astype(int))
    return active[pick]
