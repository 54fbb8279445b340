"""The sky catalogue that images are cross-matched against and measured at.

Rows ``name, ra_deg, dec_deg, flux_jy, spectral_index, ref_freq_hz`` (ICRS, flux at
``ref_freq_hz``), read from a CSV (the canonical form: what `write_catalogue`, `contimg simulate`
and ``tools/nvss_to_catalogue.py`` write), a FITS binary table or a VOTable. Without one, the
shipped VLA calibrator list is the catalogue.

The CSV has exactly these six columns (a CSV carries no units). A FITS or VOTable table may use
common aliases and carry units, read as follows (`table_to_sources`):

* position: ``ra_deg``/``dec_deg`` or ``RAJ2000``/``DEJ2000``, ``_RAJ2000``/``_DEJ2000``,
  ``RA``/``DEC``, ``RA_ICRS``/``DE_ICRS`` ...; numbers in the column's angle unit (degrees when it
  has none), or sexagesimal strings (RA in hours, ``"12 34 56.7"`` or ``"12:34:56.7"``; Dec in
  degrees). ICRS/J2000.
* flux: ``flux_jy`` (Jy when no unit), ``flux_mjy`` (mJy when no unit), or ``S1.4``, ``S1400``,
  ``flux``, ``total_flux``, ``int_flux``, ``S_int`` with a flux-density unit (Jy, mJy, uJy);
  an aliased flux column without a unit is refused (Jy or mJy cannot be guessed).
* ``spectral_index`` (or ``alpha``, ``spec_index``): absent, or a blank/NaN cell, is
  `DEFAULT_SPECTRAL_INDEX` (-0.7).
* ``ref_freq_hz`` (or ``ref_freq``, ``freq``; Hz unless the column has a unit): absent, it is the
  table keyword ``REF_FREQ`` (or ``REFFREQ``, ``RESTFREQ``, ``RESTFRQ``, ``FREQ``; a FITS header
  card, or a VOTable PARAM, in Hz unless the PARAM has a unit), else `DEFAULT_REF_FREQ_HZ`
  (1.4 GHz, NVSS's).
* ``name`` (or ``NVSS``, ``source_name``, ``source``, ``id``): absent, each row is named from
  its position (``J123456.7+123456``).

The format is decided by the file's content (a FITS or VOTable header), not its extension;
a gzipped FITS or VOTable is read too. A missing column or a bad value is refused naming the file and the
column.
"""

from __future__ import annotations

import csv
import gzip
import os
import warnings
from pathlib import Path

import numpy as np

from contimg.sky.calibrators import vla_calibrators
from contimg.sky.skymodel import PointSources

__all__ = ["COLUMNS", "DEFAULT_SPECTRAL_INDEX", "DEFAULT_REF_FREQ_HZ", "load_catalogue", "write_catalogue",
           "resolve_catalogue", "sources_near", "table_to_sources", "catalogue_format", "position_names"]

COLUMNS = ("name", "ra_deg", "dec_deg", "flux_jy", "spectral_index", "ref_freq_hz")
DEFAULT_SPECTRAL_INDEX = -0.7  # a table without spectral indices: typical optically thin synchrotron
DEFAULT_REF_FREQ_HZ = 1.4e9  # a table without a reference frequency: NVSS's 1.4 GHz

# Aliases of each column in a FITS/VOTable table, matched case-insensitively, first found wins.
ALIASES = {
    "name": ("name", "nvss", "source_name", "source", "src_name", "component_name", "id"),
    "ra_deg": ("ra_deg", "raj2000", "_raj2000", "ra", "ra_icrs", "_ra", "radeg", "ra_j2000"),
    "dec_deg": ("dec_deg", "dej2000", "_dej2000", "decj2000", "dec", "de_icrs", "dec_icrs", "_de", "dedeg",
                "de", "dec_j2000"),
    "flux_jy": ("flux_jy", "flux_mjy", "s1.4", "s1_4", "s1400", "flux", "total_flux", "int_flux", "s_int",
                "flux_int"),
    "spectral_index": ("spectral_index", "alpha", "spec_index", "spindex"),
    "ref_freq_hz": ("ref_freq_hz", "ref_freq", "freq"),
}
_IMPLIED_UNIT = {"ra_deg": "deg", "dec_deg": "deg", "flux_jy": "Jy", "flux_mjy": "mJy", "ref_freq_hz": "Hz",
                 "ref_freq": "Hz", "freq": "Hz"}
FREQ_KEYWORDS = ("ref_freq_hz", "ref_freq", "reffreq", "restfreq", "restfrq", "freq")


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


def catalogue_format(path: str | Path) -> str:
    """"fits", "votable" or "csv", from the file's first bytes (gzip looked through)."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if head[:2] == b"\x1f\x8b":
        with gzip.open(path, "rb") as fh:
            head = fh.read(4096)
    if head.startswith(b"SIMPLE  ="):
        return "fits"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<?xml") or b"<votable" in text:
        return "votable"
    return "csv"


def load_catalogue(path: str | Path | None) -> PointSources:
    """The catalogue at ``path`` (None or "": the VLA calibrator list): a CSV, FITS table or
    VOTable (see the module's docstring). One reference frequency for all rows is required; a
    missing column or a bad value is refused naming the file and the column."""
    if not path:
        return PointSources.from_calibrators(vla_calibrators())
    path = Path(path)
    try:
        fmt = catalogue_format(path)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the sky catalogue: {exc}") from exc
    if fmt == "csv":
        return _load_csv(path)
    return table_to_sources(_read_table(path, fmt), source=path)


def _load_csv(path: Path) -> PointSources:
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path}: cannot read the sky catalogue: {exc}") from exc
    if not rows:
        raise ValueError(f"{path}: the sky catalogue has no rows")
    missing = [c for c in COLUMNS if c not in rows[0]]
    if missing:
        raise ValueError(f"{path}: the sky catalogue lacks the column(s) {', '.join(missing)}")
    values = {}
    for c in COLUMNS[1:]:
        out = np.empty(len(rows))
        for k, r in enumerate(rows):
            try:
                out[k] = float(r[c])
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{path}: column {c}, data row {k + 1}: {r[c]!r} is not a number ({exc})") from exc
        values[c] = out
    return _sources(path, np.array([r["name"] for r in rows]), values)


def _read_table(path: Path, fmt: str):
    from astropy.table import Table

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # VizieR's units ("h:m:s") and VOTable pedantry
            if fmt == "fits":
                table = Table.read(path, format="fits", character_as_bytes=False)
            else:
                from astropy.io.votable import parse

                vt = parse(str(path), verify="ignore").get_first_table()
                table = vt.to_table(use_names_over_ids=True)
                for p in vt.params:  # PARAMs (e.g. ref_freq_hz) as table keywords, with their units
                    table.meta[p.name] = (p.value, str(p.unit) if p.unit is not None else None)
    except Exception as exc:  # noqa: BLE001 - any reader failure is the file's fault
        raise ValueError(f"{path}: cannot read the sky catalogue as {fmt}: {exc}") from exc
    return table


def _find(table, key: str) -> str | None:
    names = {n.lower(): n for n in table.colnames}
    for alias in ALIASES[key]:
        if alias in names:
            return names[alias]
    return None


def _unit_str(col) -> str | None:
    unit = getattr(col, "unit", None)
    if unit is None:
        return None
    s = str(unit).strip().strip('"')
    return s or None


def _is_text(col) -> bool:
    return np.asarray(col).dtype.kind in "USO"


def _blank(col) -> np.ndarray:
    """Cells that hold nothing: masked, empty strings."""
    mask = np.zeros(len(col), bool)
    if getattr(col, "mask", None) is not None:
        mask |= np.asarray(col.mask, bool)
    if _is_text(col):
        mask |= np.array([str(v).strip() in ("", "--") for v in np.asarray(col)])
    return mask


def _fail(source, colname: str, key: str, msg: str) -> ValueError:
    which = colname if colname == key else f"{colname} (the {key})"
    return ValueError(f"{source}: column {which}: {msg}")


def _numbers(col, colname: str, key: str, source) -> np.ndarray:
    data = np.asarray(col.filled(np.nan) if hasattr(col, "filled") else col)
    if data.dtype.kind in "fiu":
        return data.astype(float)
    out = np.empty(len(data))
    for k, v in enumerate(data):
        v = v.decode() if isinstance(v, bytes) else str(v)
        try:
            out[k] = float(v) if v.strip() not in ("", "--") else np.nan
        except ValueError:
            raise _fail(source, colname, key, f"data row {k + 1}: {v!r} is not a number") from None
    return out


def _scale(values: np.ndarray, unit: str, to: str, colname: str, key: str, source) -> np.ndarray:
    """``values`` in ``unit`` converted to ``to``; a conversion by 1/N (mJy -> Jy) divides by N so
    that the result is the nearest double to the exact value."""
    import astropy.units as u

    try:
        factor = u.Unit(unit).to(u.Unit(to))
    except (ValueError, TypeError, u.UnitsError) as exc:
        raise _fail(source, colname, key, f"unit {unit!r} is not a unit of {to} ({exc})") from None
    if factor == 1.0:
        return values
    inv = 1.0 / factor
    if factor < 1.0 and abs(inv - round(inv)) < 1e-9 * inv:
        return values / round(inv)
    return values * factor


def _angles(col, colname: str, key: str, source) -> np.ndarray:
    """Degrees from a numeric column (in its unit, degrees if none) or sexagesimal strings."""
    from astropy.coordinates import Angle
    import astropy.units as u

    unit = _unit_str(col)
    if not _is_text(col):
        values = _numbers(col, colname, key, source)
        if unit is None or unit.lower() in ("deg", "degree", "degrees"):
            return values
        if unit.lower() in ("h", "hour", "hourangle", "hr"):
            return values * 15.0
        return _scale(values, unit, "deg", colname, key, source)
    text = [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(col)]
    ulow = (unit or "").lower()
    if key == "dec_deg" or ulow in ("deg", "degree", "degrees", "d:m:s", "dms"):
        angle_unit = u.deg
    elif ulow in ("h:m:s", "hms", "h", "hour", "hourangle") or any(":" in v or " " in v.strip() or "h" in v
                                                                  for v in text):
        angle_unit = u.hourangle  # sexagesimal RA: hours
    else:
        angle_unit = u.deg  # plain numbers in a text column
    out = np.empty(len(text))
    for k, v in enumerate(text):
        try:
            out[k] = Angle(v.strip(), unit=angle_unit).to_value(u.deg) if v.strip() not in ("", "--") else np.nan
        except (ValueError, TypeError):
            raise _fail(source, colname, key, f"data row {k + 1}: {v!r} is not an angle") from None
    return out


def _ref_freq_keyword(table, source) -> float | None:
    import astropy.units as u

    meta = {str(k).lower(): v for k, v in table.meta.items()}
    for key in FREQ_KEYWORDS:
        if key in meta:
            value = meta[key]
            unit = None
            if isinstance(value, tuple):
                value, unit = value
            try:
                hz = float(np.asarray(value).ravel()[0])
                if unit:
                    hz = u.Quantity(hz, unit).to_value(u.Hz)
            except (TypeError, ValueError, IndexError, u.UnitsError) as exc:
                raise ValueError(f"{source}: table keyword {key.upper()}: {value!r} is not a frequency ({exc})") from None
            return hz
    return None


def table_to_sources(table, *, source: str | Path = "<table>", spectral_index: float | None = None,
                     ref_freq_hz: float | None = None) -> PointSources:
    """An astropy `Table` (columns named as `COLUMNS` or their `ALIASES`, with units) as the
    catalogue; ``source`` names the file in errors. ``spectral_index``/``ref_freq_hz`` given
    replace a missing column's default (`DEFAULT_SPECTRAL_INDEX`, the table keyword or
    `DEFAULT_REF_FREQ_HZ`); they never override a column the table has."""
    if len(table) == 0:
        raise ValueError(f"{source}: the sky catalogue has no rows")
    found = {key: _find(table, key) for key in ALIASES}
    for key in ("ra_deg", "dec_deg", "flux_jy"):
        if found[key] is None:
            raise ValueError(f"{source}: the sky catalogue lacks the column {key} "
                             f"(or one of {', '.join(ALIASES[key][1:])})")
    values = {}
    for key in ("ra_deg", "dec_deg"):
        name = found[key]
        if _blank(table[name]).any():
            row = int(np.flatnonzero(_blank(table[name]))[0]) + 1
            raise _fail(source, name, key, f"data row {row} is blank")
        values[key] = _angles(table[name], name, key, source)

    name = found["flux_jy"]
    col = table[name]
    if _blank(col).any():
        raise _fail(source, name, "flux_jy", f"data row {int(np.flatnonzero(_blank(col))[0]) + 1} is blank")
    unit = _unit_str(col) or _IMPLIED_UNIT.get(name.lower())
    if unit is None:
        raise _fail(source, name, "flux_jy", "has no unit: give the column a unit (Jy, mJy) or name it flux_jy")
    values["flux_jy"] = _scale(_numbers(col, name, "flux_jy", source), unit, "Jy", name, "flux_jy", source)

    n = len(table)
    name = found["spectral_index"]
    if name is None:
        default = DEFAULT_SPECTRAL_INDEX if spectral_index is None else float(spectral_index)
        values["spectral_index"] = np.full(n, default)
    else:
        si = _numbers(table[name], name, "spectral_index", source)
        default = DEFAULT_SPECTRAL_INDEX if spectral_index is None else float(spectral_index)
        values["spectral_index"] = np.where(np.isnan(si) | _blank(table[name]), default, si)

    name = found["ref_freq_hz"]
    if name is not None:
        col = table[name]
        unit = _unit_str(col) or "Hz"
        values["ref_freq_hz"] = _scale(_numbers(col, name, "ref_freq_hz", source), unit, "Hz", name,
                                       "ref_freq_hz", source)
    else:
        hz = ref_freq_hz if ref_freq_hz is not None else _ref_freq_keyword(table, source)
        values["ref_freq_hz"] = np.full(n, DEFAULT_REF_FREQ_HZ if hz is None else float(hz))

    name = found["name"]
    if name is not None:
        names = np.array([(v.decode() if isinstance(v, bytes) else str(v)).strip() for v in np.asarray(table[name])])
        if (names == "").any() or _blank(table[name]).any():
            raise _fail(source, name, "name", f"data row {int(np.flatnonzero((names == '') | _blank(table[name]))[0]) + 1} is blank")
    else:
        names = _position_names(values["ra_deg"], values["dec_deg"])
    return _sources(source, names, values, {k: v for k, v in found.items() if v is not None})


def position_names(ra_deg: np.ndarray, dec_deg: np.ndarray, *, prefix: str = "J") -> np.ndarray:
    """IAU-style names from ICRS positions: ``<prefix>HHMMSS.s+DDMMSS`` (n,) str."""
    return np.array([prefix + n[1:] for n in _position_names(ra_deg, dec_deg)])


def _position_names(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    from astropy.coordinates import Angle
    import astropy.units as u

    ra = Angle(np.asarray(ra_deg) % 360.0, u.deg).to_string(unit=u.hourangle, sep="", precision=1, pad=True)
    dec = Angle(np.asarray(dec_deg), u.deg).to_string(unit=u.deg, sep="", precision=0, pad=True, alwayssign=True)
    return np.array([f"J{r}{d}" for r, d in zip(np.atleast_1d(ra), np.atleast_1d(dec))])


def _sources(source, names: np.ndarray, values: dict, labels: dict | None = None) -> PointSources:
    """Validated columns as `PointSources` (errors name ``source`` and the column: ``labels``
    maps a key to the file's column name where they differ)."""
    labels = labels or {}

    def bad(key, mask, what):
        if mask.any():
            k = int(np.flatnonzero(mask)[0])
            col = labels.get(key, key)
            col = col if col == key else f"{col} (the {key})"
            raise ValueError(f"{source}: column {col}, data row {k + 1}: {float(values[key][k])!r} {what}")

    bad("ra_deg", ~np.isfinite(values["ra_deg"]), "is not a finite RA")
    bad("dec_deg", ~(np.abs(values["dec_deg"]) <= 90), "is outside [-90, 90]")
    bad("flux_jy", ~np.isfinite(values["flux_jy"]), "is not a finite flux")
    bad("flux_jy", values["flux_jy"] < 0, "is a negative flux")
    bad("spectral_index", ~np.isfinite(values["spectral_index"]), "is not a finite spectral index")
    bad("ref_freq_hz", ~(np.isfinite(values["ref_freq_hz"]) & (values["ref_freq_hz"] > 0)),
        "is not a positive frequency")
    refs = np.unique(values["ref_freq_hz"])
    if refs.size != 1:
        raise ValueError(f"{source}: rows have different ref_freq_hz ({refs.size} values); use one")
    return PointSources(np.asarray(names), np.radians(values["ra_deg"] % 360.0), np.radians(values["dec_deg"]),
                        values["flux_jy"], values["spectral_index"], float(refs[0]))


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
