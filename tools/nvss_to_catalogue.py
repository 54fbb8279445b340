"""Convert an NVSS download into contimg's sky catalogue CSV (``sky.catalogue``).

    python tools/nvss_to_catalogue.py nvss.vot -o catalogue.csv \\
        --ra 202.78 --dec 30.51 --radius 5 --min-flux-mjy 10

Input: the NVSS catalogue from VizieR (VIII/65/nvss), downloaded as

* a VOTable (``.vot``/``.xml``; VizieR's "VOTable" output),
* a FITS binary table (VizieR's "FITS (binary) Table"; positions are then in degrees),
* VizieR's tab-separated text (``.tsv``/``.txt``; "Tab-Separated-Values": ``#`` comment lines,
  a header line, a units line, a ``----`` line, then the rows).

The format is recognised from the content (``--format`` forces one). Columns used: ``RAJ2000``,
``DEJ2000`` (sexagesimal ``"h:m:s"``/``"d:m:s"`` strings or degrees; VizieR's computed
``_RAJ2000``/``_DEJ2000`` in degrees are used when ``RAJ2000``/``DEJ2000`` are absent), ``S1.4``
(integrated flux density, mJy; the column's unit is honoured, mJy assumed if it has none) and
``NVSS`` (the source name, written as ``NVSS J<name>``; rows are named from their positions
without it). Other columns (``e_S1.4``, ``MajAxis``, ``MinAxis``, ...) are ignored: the catalogue
models point sources. The NRAO ``catalog.fits`` (an AIPS VL table) is not read: download from
VizieR instead.

Output: a CSV with ``name, ra_deg, dec_deg, flux_jy, spectral_index, ref_freq_hz`` (the form
`contimg.sky.catalogue.load_catalogue` reads), flux in Jy at 1.4 GHz, every row given
``--spectral-index`` (default -0.7), written under a temporary name and renamed into place.

Selection: ``--min-flux-mjy`` keeps rows with S1.4 >= the limit; ``--ra/--dec/--radius`` (degrees,
RA and Dec may also be sexagesimal, RA then in hours) keeps rows within the radius of the centre
(great-circle distance, edge included). Exit status 0, or 2 with a message naming the file and the
column for an unreadable input.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import warnings
from pathlib import Path

import numpy as np

from contimg.sky.catalogue import catalogue_format, sources_near, table_to_sources, write_catalogue

NVSS_FREQ_HZ = 1.4e9


def read_vizier_tsv(path: str | Path):
    """VizieR's tab-separated output as an astropy `Table`: ``#`` lines and blank lines before
    the header skipped, the line after the header is the units row, an all-dash line after it is
    skipped, the rows end at the first blank or ``#`` line. Columns whose cells all parse as
    numbers (blank cells masked) become float columns; the rest stay text. Units from the units
    row (``"h:m:s"`` kept as an unrecognised unit)."""
    from astropy.table import MaskedColumn, Table
    import astropy.units as u

    opener = gzip.open if Path(path).read_bytes()[:2] == b"\x1f\x8b" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
        lines = [ln.rstrip("\r\n") for ln in fh]
    k = 0
    while k < len(lines) and (not lines[k].strip() or lines[k].startswith("#")):
        k += 1
    if k >= len(lines):
        raise ValueError(f"{path}: no header line (a VizieR TSV has one after its # comments)")
    header = [h.strip() for h in lines[k].split("\t")]
    k += 1
    units = [""] * len(header)
    if k < len(lines) and lines[k].strip() and not set(lines[k].replace("\t", "")) <= {"-", " "}:
        units = [s.strip().strip('"') for s in lines[k].split("\t")]
        k += 1
    if k < len(lines) and lines[k].strip() and set(lines[k].replace("\t", "")) <= {"-", " "}:
        k += 1
    rows = []
    while k < len(lines) and lines[k].strip() and not lines[k].startswith("#"):
        cells = [c.strip() for c in lines[k].split("\t")]
        if len(cells) < len(header):
            cells += [""] * (len(header) - len(cells))
        if len(cells) > len(header):
            raise ValueError(f"{path}: line {k + 1} has {len(cells)} cells for {len(header)} columns")
        rows.append(cells)
        k += 1
    if not rows:
        raise ValueError(f"{path}: no data rows after the header")
    table = Table()
    for j, name in enumerate(header):
        cells = [r[j] for r in rows]
        blank = np.array([c == "" for c in cells])
        unit = units[j] if j < len(units) and units[j] not in ("", "---") else None
        try:
            data = np.array([float(c) if c else np.nan for c in cells])
        except ValueError:
            data = np.array(cells)
        col = MaskedColumn(data, name=name, mask=blank)
        if unit:
            col.unit = u.Unit(unit, parse_strict="silent")
        table[name] = col
    return table


def read_nvss(path: str | Path, fmt: str = "auto"):
    """The NVSS download at ``path`` as an astropy `Table` (columns as VizieR names them)."""
    from astropy.table import Table

    path = Path(path)
    if fmt == "auto":
        fmt = catalogue_format(path)
        fmt = "tsv" if fmt == "csv" else fmt
    if fmt == "tsv":
        return read_vizier_tsv(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if fmt == "fits":
                return Table.read(path, format="fits", character_as_bytes=False)
            from astropy.io.votable import parse

            return parse(str(path), verify="ignore").get_first_table().to_table(use_names_over_ids=True)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{path}: cannot read as {fmt}: {exc}") from exc


def nvss_catalogue(table, *, source: str | Path = "<nvss>", spectral_index: float = -0.7):
    """NVSS rows (VizieR VIII/65/nvss columns) as `PointSources` at 1.4 GHz."""
    import astropy.units as u
    from astropy.table import Table

    names = {n.lower(): n for n in table.colnames}
    out = Table()
    for label, aliases in (("RAJ2000", ("raj2000", "_raj2000")), ("DEJ2000", ("dej2000", "_dej2000")),
                           ("S1.4", ("s1.4", "s1_4"))):
        found = next((names[a] for a in aliases if a in names), None)
        if found is None:
            raise ValueError(f"{source}: the NVSS table lacks the column {label} "
                             f"(columns: {', '.join(table.colnames)})")
        out[found] = table[found]
    flux = out.colnames[2]
    if out[flux].unit is None:
        out[flux].unit = u.mJy  # VIII/65: S1.4 in mJy
    if "nvss" in names:
        raw = [(v.decode() if isinstance(v, bytes) else str(v)).strip() for v in np.asarray(table[names["nvss"]])]
        out["name"] = ["NVSS " + (v if v.startswith("J") else "J" + v) if v else "" for v in raw]
    return table_to_sources(out, source=source, spectral_index=spectral_index, ref_freq_hz=NVSS_FREQ_HZ)


def _angle_deg(text: str, hours: bool) -> float:
    from astropy.coordinates import Angle
    import astropy.units as u

    try:
        return float(text)
    except ValueError:
        return float(Angle(text, unit=u.hourangle if hours else u.deg).to_value(u.deg))


def convert(src: str | Path, out: str | Path, *, fmt: str = "auto", min_flux_mjy: float = 0.0,
            ra_deg: float | None = None, dec_deg: float | None = None, radius_deg: float | None = None,
            spectral_index: float = -0.7) -> int:
    """Read ``src``, select, write ``out``; returns the number of sources written."""
    sources = nvss_catalogue(read_nvss(src, fmt), source=src, spectral_index=spectral_index)
    if radius_deg is None:
        keep = sources.flux_jy >= min_flux_mjy / 1000.0
        sources = sources.select(keep)
    else:
        sources = sources_near(sources, ra_rad=np.radians(ra_deg), dec_rad=np.radians(dec_deg),
                               radius_deg=radius_deg, min_flux_jy=min_flux_mjy / 1000.0)
    write_catalogue(out, sources)
    return len(sources)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("input", help="the NVSS download (VizieR VIII/65/nvss: VOTable, FITS or TSV)")
    ap.add_argument("-o", "--out", required=True, help="the catalogue CSV to write")
    ap.add_argument("--format", choices=("auto", "votable", "fits", "tsv"), default="auto",
                    help="input format (default: from the content)")
    ap.add_argument("--min-flux-mjy", type=float, default=0.0, help="keep sources with S1.4 >= this (mJy)")
    ap.add_argument("--ra", help="cone centre RA (degrees, or sexagesimal hours)")
    ap.add_argument("--dec", help="cone centre Dec (degrees, or sexagesimal)")
    ap.add_argument("--radius", type=float, help="cone radius (degrees)")
    ap.add_argument("--spectral-index", type=float, default=-0.7,
                    help="spectral index given to every source (default -0.7; NVSS has one frequency)")
    args = ap.parse_args(argv)
    cone = (args.ra, args.dec, args.radius)
    if any(c is not None for c in cone) and any(c is None for c in cone):
        ap.error("--ra, --dec and --radius go together")
    if args.radius is not None and args.radius <= 0:
        ap.error("--radius must be positive")
    try:
        ra = _angle_deg(args.ra, hours=True) if args.ra is not None else None
        dec = _angle_deg(args.dec, hours=False) if args.dec is not None else None
    except ValueError as exc:
        ap.error(f"--ra/--dec: {exc}")
    if dec is not None and abs(dec) > 90:
        ap.error("--dec must be within [-90, 90]")
    try:
        n = convert(args.input, args.out, fmt=args.format, min_flux_mjy=args.min_flux_mjy, ra_deg=ra,
                    dec_deg=dec, radius_deg=args.radius, spectral_index=args.spectral_index)
    except (OSError, ValueError) as exc:
        print(f"nvss_to_catalogue: {exc}", file=sys.stderr)
        return 2
    print(f"{args.out}: {n} sources")
    return 0


if __name__ == "__main__":
    sys.exit(main())
