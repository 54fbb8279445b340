"""Directions and (u, v, w) for a drift-scan array.

Conventions (those of pyuvdata, CASA and matvis):
- a baseline vector is ``b = x[ant2] - x[ant1]`` (ENU metres);
- ``(u, v, w) = (b . u_hat, b . v_hat, b . w_hat)`` with ``w_hat`` towards the phase centre,
  ``u_hat`` east and ``v_hat`` north in the tangent plane (right-handed: u_hat x v_hat = w_hat);
- a visibility of a unit point source at direction ``s`` fringe-stopped to ``s0`` is
  ``exp(+2 pi i f/c b . (s - s0))``, i.e. ``exp(+2 pi i (u l + v m + w (n - 1)))``: pyuvdata's
  convention (its ``phase()`` multiplies by ``exp(-2 pi i (w_new - w_old) / lambda)``), matvis's
  and pyuvsim's; pyuvdata's Measurement Set writer flips uvw and conjugates for CASA.

Two kinds of phase centre:
- the **drift** centre of the DSA-110 files: hour angle 0 at the pointing declination, fixed in
  the local (HA, Dec) frame (``hadec_basis``), so its RA is the LST at each integration;
- a **fixed ICRS** centre for imaging (``icrs_basis``), whose direction in ENU comes from astropy
  (precession, nutation, aberration) at each time; its tangent basis follows ICRS east/north, so
  an image made with it has a plain SIN WCS at that ICRS position.
"""

from __future__ import annotations

import numpy as np
from astropy import units as u
from astropy.coordinates import AltAz, HADec, SkyCoord
from astropy.time import Time

from contimg.sky.telescope import ARRAY_LAT_RAD, array_location

__all__ = [
    "C_M_S", "angular_separation_rad", "hadec_to_enu", "hadec_basis", "icrs_to_enu", "icrs_basis", "hadec_to_icrs",
    "icrs_to_hadec", "baseline_uvw",
]

C_M_S = 299_792_458.0


def angular_separation_rad(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    """Great-circle angle between two (RA, Dec) directions, radians in and out."""
    c = np.sin(dec1) * np.sin(dec2) + np.cos(dec1) * np.cos(dec2) * np.cos(ra1 - ra2)
    return float(np.arccos(np.clip(c, -1.0, 1.0)))


def hadec_to_enu(*, ha_rad: np.ndarray | float, dec_rad: np.ndarray | float,
                 lat_rad: float = ARRAY_LAT_RAD) -> np.ndarray:
    """Unit vector(s) (..., 3) in ENU for hour angle and declination (radians)."""
    ha, dec = np.broadcast_arrays(np.asarray(ha_rad, float), np.asarray(dec_rad, float))
    sl, cl = np.sin(lat_rad), np.cos(lat_rad)
    e = -np.cos(dec) * np.sin(ha)
    n = np.sin(dec) * cl - np.cos(dec) * np.cos(ha) * sl
    up = np.sin(dec) * sl + np.cos(dec) * np.cos(ha) * cl
    return np.stack([e, n, up], axis=-1)


def hadec_basis(*, ha_rad: float, dec_rad: float, lat_rad: float = ARRAY_LAT_RAD) -> np.ndarray:
    """(3, 3) rows u_hat, v_hat, w_hat (ENU) for a phase centre fixed in (HA, Dec)."""
    x_axis = hadec_to_enu(ha_rad=0.0, dec_rad=0.0, lat_rad=lat_rad)
    y_axis = hadec_to_enu(ha_rad=-np.pi / 2, dec_rad=0.0, lat_rad=lat_rad)
    z_axis = hadec_to_enu(ha_rad=0.0, dec_rad=np.pi / 2, lat_rad=lat_rad)
    sh, ch, sd, cd = np.sin(ha_rad), np.cos(ha_rad), np.sin(dec_rad), np.cos(dec_rad)
    u_hat = sh * x_axis + ch * y_axis
    v_hat = -sd * ch * x_axis + sd * sh * y_axis + cd * z_axis
    w_hat = cd * ch * x_axis - cd * sh * y_axis + sd * z_axis
    return np.stack([u_hat, v_hat, w_hat])


def icrs_to_enu(*, ra_rad: np.ndarray, dec_rad: np.ndarray, time_jd: np.ndarray) -> np.ndarray:
    """ENU unit vectors (nsrc, ntime, 3) of ICRS directions at each time (no refraction)."""
    ra = np.atleast_1d(np.asarray(ra_rad, float))[:, None]
    dec = np.atleast_1d(np.asarray(dec_rad, float))[:, None]
    times = Time(np.atleast_1d(time_jd)[None, :], format="jd", scale="utc")
    frame = AltAz(obstime=times, location=array_location(), pressure=0 * u.hPa)
    altaz = SkyCoord(ra=ra * u.rad, dec=dec * u.rad, frame="icrs").transform_to(frame)
    alt, az = altaz.alt.to_value(u.rad), altaz.az.to_value(u.rad)
    return np.stack([np.cos(alt) * np.sin(az), np.cos(alt) * np.cos(az), np.sin(alt)], axis=-1)


def icrs_basis(*, ra_rad: float, dec_rad: float, time_jd: np.ndarray,
               step_rad: float = 1e-4) -> np.ndarray:
    """(ntime, 3, 3) rows u_hat, v_hat, w_hat (ENU) for a fixed ICRS phase centre.

    ``u_hat``/``v_hat`` follow ICRS east/north at the centre (central differences of astropy's
    transform over ``step_rad``), so the image plane's (l, m) are the SIN projection about the
    ICRS position.
    """
    cosd = np.cos(dec_rad)
    ras = np.array([ra_rad, ra_rad + step_rad / cosd, ra_rad - step_rad / cosd, ra_rad, ra_rad])
    decs = np.array([dec_rad, dec_rad, dec_rad, dec_rad + step_rad, dec_rad - step_rad])
    enu = icrs_to_enu(ra_rad=ras, dec_rad=decs, time_jd=time_jd)  # (5, ntime, 3)
    w_hat = enu[0]
    east = enu[1] - enu[2]
    east -= np.sum(east * w_hat, axis=-1, keepdims=True) * w_hat
    u_hat = east / np.linalg.norm(east, axis=-1, keepdims=True)
    v_hat = np.cross(w_hat, u_hat)
    return np.stack([u_hat, v_hat, w_hat], axis=1)


def hadec_to_icrs(*, ha_rad: float, dec_rad: float, time_jd: float) -> tuple[float, float]:
    """ICRS (ra, dec) in radians of an apparent (HA, Dec) direction at one time."""
    frame = HADec(obstime=Time(time_jd, format="jd", scale="utc"), location=array_location(),
                  pressure=0 * u.hPa)
    icrs = SkyCoord(ha=ha_rad * u.rad, dec=dec_rad * u.rad, frame=frame).icrs
    return float(icrs.ra.to_value(u.rad)), float(icrs.dec.to_value(u.rad))


def icrs_to_hadec(*, ra_rad: float, dec_rad: float, time_jd: float) -> tuple[float, float]:
    """Apparent (HA, Dec) in radians of an ICRS direction at one time (`hadec_to_icrs`'s inverse)."""
    frame = HADec(obstime=Time(time_jd, format="jd", scale="utc"), location=array_location(),
                  pressure=0 * u.hPa)
    hadec = SkyCoord(ra=ra_rad * u.rad, dec=dec_rad * u.rad, frame="icrs").transform_to(frame)
    return float(hadec.ha.to_value(u.rad)), float(hadec.dec.to_value(u.rad))


def baseline_uvw(*, ant_enu_m: np.ndarray, ant1: np.ndarray, ant2: np.ndarray,
                 basis: np.ndarray) -> np.ndarray:
    """(u, v, w) in metres for baselines ``ant2 - ant1``.

    ant_enu_m: (nant, 3) float64, indexed by antenna number. ant1, ant2: (nbl,) int.
    basis: (3, 3) or (ntime, 3, 3) from `hadec_basis` / `icrs_basis`.
    Returns (nbl, 3) or (ntime, nbl, 3) float64.
    """
    b = ant_enu_m[ant2] - ant_enu_m[ant1]
    if basis.ndim == 2:
        return b @ basis.T
    return np.einsum("bk,tjk->tbj", b, basis)
