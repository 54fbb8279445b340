"""The sky catalogue that images are cross-matched against and measured at.

A CSV with the columns ``name, ra_deg, dec_deg, flux_jy, spectral_index, ref_freq_hz`` (ICRS,
flux at ``ref_freq_hz``), e.g. an NVSS extract for the real telescope or the ``catalogue.csv``
that `contimg simulate` writes beside its data. Without one, the shipped VLA calibrator list is
the catalogue.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from contimg.calibrators import vla_calibrators
from contimg.skymodel import PointSources

__all__ = ["COLUMNS", "load_catalogue", "write_catalogue", "resolve_catalogue", "sources_near"]

COLUMNS = ("name", "ra_deg", "dec_deg", "flux_jy", "spectral_index", "ref_freq_hz")


def write_catalogue(path: str | Path, sources: PointSources) -> Path:
    """``sources`` as a catalogue CSV, written under a temporary name and renamed into place."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(COLUMNS)
        for k in range(len(sources)):
            out.writerow([sources.name[k], repr(float(np.degrees(sources.ra_rad[k]))),
                          repr(float(np.degrees(sources.dec_rad[k]))), repr(float(sources.flux_jy[k])),
                          repr(float(sources.spectral_index[k])), repr(float(sources.ref_freq_hz))])
    os.replace(tmp, path)
    return path


def load_catalogue(path: str | Path | None) -> PointSources:
    """The catalogue at ``path`` (None or "": the VLA calibrator list). One reference frequency
    for all rows is required; a missing column or a bad value is refused naming the file and row."""
    if not path:
        return PointSources.from_calibrators(vla_calibrators())
    path = Path(path)
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the sky catalogue: {exc}") from exc
    if not rows:
        raise ValueError(f"{path}: the sky catalogue has no rows")
    missing = [c for c in COLUMNS if c not in rows[0]]
    if missing:
        raise ValueError(f"{path}: the sky catalogue lacks the column(s) {', '.join(missing)}")
    try:
        values = {c: np.array([float(r[c]) for r in rows]) for c in COLUMNS[1:]}
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: a value in the sky catalogue is not a number ({exc})") from exc
    refs = np.unique(values["ref_freq_hz"])
    if refs.size != 1:
        raise ValueError(f"{path}: rows have different ref_freq_hz ({refs.size} values); use one")
    if not (np.all(np.abs(values["dec_deg"]) <= 90) and np.all(np.isfinite(values["ra_deg"]))):
        raise ValueError(f"{path}: a declination is outside [-90, 90] or an RA is not finite")
    return PointSources(np.array([r["name"] for r in rows]), np.radians(values["ra_deg"] % 360.0),
                        np.radians(values["dec_deg"]), values["flux_jy"], values["spectral_index"], float(refs[0]))


def resolve_catalogue(setting: str, root: Path) -> Path | None:
    """The configured catalogue path (relative paths are under ``root``), or None for the list."""
    if not setting:
        return None
    path = Path(setting)
    return path if path.is_absolute() else Path(root) / path


def sources_near(catalogue: PointSources, *, ra_rad: float, dec_rad: float, radius_deg: float, min_flux_jy: float,
                 exclude: PointSources | None = None, exclude_radius_arcsec: float = 30.0) -> PointSources:
    """The catalogue sources within ``radius_deg`` of (ra, dec), at least ``min_flux_jy`` at the
    catalogue's reference frequency, and not within ``exclude_radius_arcsec`` of a source of
    ``exclude`` (so a calibrator listed in both is modelled once)."""
    def sep(ra, dec):
        c = (np.sin(catalogue.dec_rad) * np.sin(dec)
             + np.cos(catalogue.dec_rad) * np.cos(dec) * np.cos(catalogue.ra_rad - ra))
        return np.arccos(np.clip(c, -1.0, 1.0))

    keep = (sep(ra_rad, dec_rad) <= np.radians(radius_deg)) & (catalogue.flux_jy >= min_flux_jy)
    if exclude is not None and len(exclude):
        for ra_x, dec_x in zip(exclude.ra_rad, exclude.dec_rad):
            keep &= sep(ra_x, dec_x) > np.radians(exclude_radius_arcsec / 3600.0)
    return catalogue.select(keep)
