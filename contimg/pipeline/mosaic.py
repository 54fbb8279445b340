"""Strip mosaics of a root's groups: the running span mosaic updated after each group, and
mosaics built after the fact (`build_mosaic`, what ``contimg mosaic`` calls).

Each completed group's ``image.zarr`` (restored and residual images, averaged primary beam,
measured noise) is added to the mosaic (`contimg.mosaic.Mosaic`) of the span it belongs to:
spans are ``mosaic.span_hours`` long, aligned to 00:00 UTC, a group belonging to the span of its
mid-time. A span's grid (`contimg.mosaic.strip_header`) is made when the first group reaching
it arrives: SIN about the ICRS position of the meridian at the span's mid-time at the
pointing's declination (the same from any group), as wide as the span's drift plus one image,
as tall as one image. A group is also added to a
neighbouring span whose grid its image reaches (the next span's store is made by the first
group that reaches it), so the spans' edges are as deep as their middles. Each group's images
are resampled and added in one pass (`contimg.mosaic.add_image`) to the mosaic's planes, which
hold all a restart needs (the sums are the planes times the weight).

Files, under ``<root>/mosaics/<name>/``: ``<name>.zarr``, the mosaic's planes: ``image``
(Jy/beam, primary-beam corrected), ``residual``, ``noise`` (1/sqrt(W), Jy/beam), ``pb_weight``
(sqrt(sum B²)), ``weight`` (W, Jy⁻²), float32, NaN where no image reaches; ``count`` (int16, the
images added); its attributes the FITS header, the span's times and the groups in it. Chunked
along RA: a group's update reads and writes only the columns its image covers, so the cost and
the memory of an update do not grow with the span. Once complete, ``<name>.image.fits``,
``<name>.residual.fits``, ``<name>.noise.fits`` and ``<name>.pbweight.fits`` (full WCS, written
under a temporary name and renamed, one plane in memory at a time). The ``mosaics`` row
(`contimg.state.mosaics`) is written after the files. The group list of a store is updated after
its arrays: a crash in between adds that group again when it is re-run (rebuild the span with
`build_span_mosaics` if that happened).
"""

from __future__ import annotations

import logging
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import zarr
from astropy.io import fits
from astropy.wcs import WCS

from contimg.config import Config
from contimg.io.fits import write_fits
from contimg.io.store import read_zarr
from contimg.mosaic import Mosaic, PreparedImage, add_placed, footprint_box, place, prepare_image, strip_header
from contimg.pipeline.groupimage import GroupImage, group_grid, load_group_image
from contimg.sky.geometry import hadec_to_icrs, icrs_to_hadec
from contimg.state.mosaics import MosaicsDB
from contimg.state.products import ProductsDB

log = logging.getLogger(__name__)

__all__ = ["span_of", "update_running_mosaic", "build_mosaic", "span_plan", "build_span",
           "build_span_mosaics", "mosaic_paths"]

SIDEREAL_RATE = 1.00273790935  # sidereal days per solar day
MJD_UNIX_EPOCH = datetime(1858, 11, 17)
PLANES = ("image", "residual")  # the primary-beam-corrected planes of a mosaic's store
_MAPS = ("weight", "pb_weight", "noise")  # its maps (`contimg.mosaic.Mosaic`); and ``count``
CHUNK_X = 512  # columns per Zarr chunk of a mosaic's stores


def span_of(mid_mjd: float, span_hours: float) -> tuple[int, float, float]:
    """(index, start MJD, end MJD) of the span holding ``mid_mjd`` (spans aligned to 00:00 UTC)."""
    day = np.floor(mid_mjd)
    k = int(np.floor((mid_mjd - day) * 24.0 / span_hours))
    start = day + k * span_hours / 24.0
    return int(day) * 1000 + k, float(start), float(min(start + span_hours / 24.0, day + 1.0))


def _span_name(start_mjd: float, span_hours: float) -> str:
    start = MJD_UNIX_EPOCH + timedelta(days=start_mjd)
    return f"span_{start:%Y%m%dT%H%M}_{span_hours:g}h"


def mosaic_paths(root: str | Path, name: str) -> dict[str, Path]:
    folder = Path(root) / "mosaics" / name
    return {"folder": folder, "image": folder / f"{name}.image.fits",
            "residual": folder / f"{name}.residual.fits", "noise": folder / f"{name}.noise.fits",
            "pb_weight": folder / f"{name}.pbweight.fits", "zarr": folder / f"{name}.zarr"}


def _grid_for(img: GroupImage, *, start_mjd: float, end_mjd: float, cell_rad: float) -> fits.Header:
    """The grid of a mosaic covering the meridian's drift from ``start_mjd`` to ``end_mjd`` at
    ``img``'s declination, plus one image side: centred at the ICRS position of the meridian at
    the span's mid-time at the pointing's apparent declination (recovered from ``img``'s phase
    centre), so that every group of a pointing gives the same grid (to ~1e-10 rad)."""
    _, dec_app = icrs_to_hadec(ra_rad=img.ra_rad, dec_rad=img.dec_rad, time_jd=img.time_mid_jd)
    mid = 0.5 * (start_mjd + end_mjd)
    ra_mid, dec_mid = hadec_to_icrs(ha_rad=0.0, dec_rad=dec_app, time_jd=mid + 2400000.5)
    side = img.restored.shape[0] * img.cell_rad
    width = abs(end_mjd - start_mjd) * SIDEREAL_RATE * 2 * np.pi * np.cos(dec_mid) + side
    return strip_header(ra_rad=ra_mid, dec_rad=dec_mid, width_rad=width, height_rad=side, cell_rad=cell_rad,
                        freq_hz=img.freq_hz, bandwidth_hz=img.bandwidth_hz,
                        time_start_jd=start_mjd + 2400000.5, time_mid_jd=mid + 2400000.5, beam_rad=img.beam_rad)


def _shape(header: fits.Header) -> tuple[int, int]:
    return int(header["NAXIS2"]), int(header["NAXIS1"])


def _create_store(path: Path, header: fits.Header, attrs: dict) -> None:
    """An empty mosaic's Zarr store on the grid of ``header``: the planes of `contimg.mosaic.Mosaic`
    (float32, NaN) and ``count`` (int16, 0), chunked along RA so that a group's update reads and
    writes only the columns it covers, uncompressed (noise-like floats gain little from
    compression, and chunks no group has reached are not stored); made under a temporary name."""
    shape = _shape(header)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    grp = zarr.open_group(str(tmp), mode="w")
    for key in (*PLANES, *_MAPS, "count"):
        grp.create_array(key, shape=shape, chunks=(shape[0], min(CHUNK_X, shape[1])),
                         dtype=np.int16 if key == "count" else np.float32, fill_value=0 if key == "count" else np.nan,
                         compressors=None)
    grp.attrs.update({**attrs, "groups": [], "header": header.tostring()})
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


def _open_store(path: Path) -> tuple[zarr.Group, fits.Header, dict]:
    grp = zarr.open_group(str(path), mode="r+")
    attrs = dict(grp.attrs)
    return grp, fits.Header.fromstring(attrs["header"]), attrs


def _read_box(grp: zarr.Group, box: tuple[int, int, int, int]) -> Mosaic:
    """The mosaic's arrays over ``box``."""
    sl = (slice(box[0], box[1]), slice(box[2], box[3]))
    return Mosaic(names=PLANES, planes=np.stack([grp[p][sl] for p in PLANES]), weight=grp["weight"][sl],
                  pb_weight=grp["pb_weight"][sl], noise=grp["noise"][sl], count=grp["count"][sl])


def _prepare(img: GroupImage, cfg: Config) -> PreparedImage:
    """A group's images ready for `add_image` (prefiltered once, whatever the spans it goes into)."""
    return prepare_image(planes={"image": img.restored, "residual": img.residual}, pb=img.pb,
                         noise_jy=img.noise_jy, wcs=img.wcs, order=cfg.mosaic.interpolation)


def _add(path: Path, image: PreparedImage, group_id: str, cfg: Config) -> tuple[int, int, int, int] | None:
    """Add one group's prepared images to the mosaic stored at ``path``, reading and writing
    only the box of its grid they cover, one Zarr chunk of columns (``CHUNK_X``) at a time (a
    few tens of MB in memory whatever the image's size); the box (None: the images miss the grid)."""
    grp, header, attrs = _open_store(path)
    placement = place(image, wcs_out=WCS(header).celestial, shape_out=_shape(header))
    if placement is None:
        return None
    y0, y1, x0, x1 = placement.box
    for c0 in [x0, *range((x0 // CHUNK_X + 1) * CHUNK_X, x1, CHUNK_X)]:  # the chunks' boundaries
        c1 = min((c0 // CHUNK_X + 1) * CHUNK_X, x1)
        part = _read_box(grp, (y0, y1, c0, c1))
        add_placed(part, image=image, placement=placement, pb_cutoff=cfg.mosaic.pb_cutoff, at=(y0, c0))
        for k, p in enumerate(PLANES):
            grp[p][y0:y1, c0:c1] = part.planes[k]
        for key in _MAPS:
            grp[key][y0:y1, c0:c1] = getattr(part, key)
        grp["count"][y0:y1, c0:c1] = part.count
    groups = list(attrs["groups"]) + [group_id]
    grp.attrs.update({"groups": groups,  # last: a crash before it re-adds the group
                      "header": _planes_header(header, path.parent.name, len(groups), cfg).tostring()})
    return placement.box


def _planes_header(header: fits.Header, name: str, n_images: int, cfg: Config) -> fits.Header:
    h = header.copy()
    h["OBJECT"] = name
    h["NIMAGES"] = (n_images, "group images in the mosaic")
    h["PBCUTOFF"] = cfg.mosaic.pb_cutoff
    h["BTYPE"] = "Intensity"
    return h


def _record(root: Path, name: str, *, kind: str, status: str, cfg: Config, db: MosaicsDB) -> dict:
    """Write the FITS products of a complete mosaic (the planes read back from its Zarr) and
    upsert its row; a running mosaic gets its row only (its planes are in the Zarr)."""
    paths = mosaic_paths(root, name)
    _, header, attrs = _open_store(paths["zarr"])
    groups = list(attrs["groups"])
    h = _planes_header(header, name, len(groups), cfg)
    noise_stats = (None, None)
    fits_paths = {"image_path": "", "noise_path": "", "weight_path": ""}
    if status == "complete":  # one plane in memory at a time (a span's plane is ~0.3 GB at real size)
        hn, hw = h.copy(), h.copy()
        hn["BTYPE"] = "Noise"
        hw["BUNIT"], hw["BTYPE"] = "", "PrimaryBeamWeight"
        for key, header_k in (("image", h), ("residual", h), ("noise", hn), ("pb_weight", hw)):
            plane = read_zarr(paths["zarr"], (key,))[0][key]
            write_fits(paths[key], image=plane, header=header_k)
            if key == "noise":
                noise = plane[np.isfinite(plane) & (plane > 0)]
                if noise.size:
                    noise_stats = (float(np.median(noise)), float(noise.min()))
            del plane
        fits_paths = {"image_path": str(paths["image"]), "noise_path": str(paths["noise"]),
                      "weight_path": str(paths["pb_weight"])}
    ra, dec = WCS(h).celestial.wcs.crval
    ny, nx = _shape(h)
    cell = abs(float(h["CDELT1"]))
    row = dict(kind=kind, status=status, start_mjd=float(attrs["start_mjd"]), end_mjd=float(attrs["end_mjd"]),
               ra_deg=float(ra), dec_deg=float(dec), width_deg=nx * cell, height_deg=ny * cell,
               cell_arcsec=cell * 3600, noise_median_jy=noise_stats[0], noise_min_jy=noise_stats[1],
               zarr_path=str(paths["zarr"]), **fits_paths)
    db.upsert(name=name, groups=groups, **row)
    return {"name": name, **row, "groups": sorted(groups)}


def _completed_groups(root: Path) -> list[dict]:
    products = ProductsDB(root / "state" / "products.sqlite3")
    try:
        return [g for g in products.groups() if g.get("status") == "completed" and g.get("mid_mjd") is not None]
    finally:
        products.close()


def _span_grid(img: GroupImage, s0: float, s1: float, cfg: Config) -> fits.Header:
    """The grid of the mosaic covering ``s0`` to ``s1`` (MJD) at ``img``'s declination."""
    cell = np.radians(cfg.mosaic.cell_arcsec / 3600) if cfg.mosaic.cell_arcsec else img.cell_rad
    return _grid_for(img, start_mjd=s0, end_mjd=s1, cell_rad=cell)


def _rebuild(root: Path, name: str, group_ids: list[str], cfg: Config, replace: dict[str, PreparedImage]) -> None:
    """The mosaic ``name`` made again from its groups' stored images (a reprocessed group)."""
    paths = mosaic_paths(root, name)
    _, header, attrs = _open_store(paths["zarr"])
    _create_store(paths["zarr"], header, {"start_mjd": attrs["start_mjd"], "end_mjd": attrs["end_mjd"]})
    for gid in group_ids:
        _add(paths["zarr"], replace.get(gid) or _prepare(load_group_image(root, gid), cfg), gid, cfg)


def _reaches(wcs_in: WCS, shape_in: tuple[int, int], header: fits.Header) -> bool:
    """Whether an image on ``wcs_in`` of ``shape_in`` (ny, nx) covers any pixel of the grid of ``header``."""
    return footprint_box(wcs_in=wcs_in, shape_in=shape_in, wcs_out=WCS(header).celestial,
                         shape_out=_shape(header)) is not None


def update_running_mosaic(root: str | Path, group_id: str, *, cfg: Config, image: GroupImage | None = None) -> list[dict]:
    """Add a completed group to the running mosaic of its span and to a neighbouring span's
    whose grid its image reaches: only the columns of the grid it covers are read and written
    (of the ``<name>.zarr`` planes); the rows written.

    What the service calls after each completed group (when ``mosaic.enabled``). The next
    span's store is made by the first group whose image reaches its grid (the groups at the
    end of a span), so its edge is as deep as its middle without reading those groups again; its
    row (``running``) is written when its own first group arrives. A group already in a span (a
    reprocessed group) rebuilds that span from its groups' stored images. Spans that end before this group's span starts and that its image no longer reaches
    are completed (the groups at the start of a span still deepen the previous one's edge):
    their FITS products are written and their rows say ``complete``. (Groups processed out of time order can miss a
    neighbouring span made after them: `build_span_mosaics` rebuilds every span from the root.)"""
    root = Path(root)
    img = image or load_group_image(root, group_id)
    prepared = None
    hours = cfg.mosaic.span_hours
    k, start, end = span_of(img.mid_mjd, hours)
    db = MosaicsDB(root / "state" / "products.sqlite3")
    written, reached = [], set()
    try:
        for kk, s0, s1 in ((k, start, end), span_of(start - 1e-6, hours), span_of(end + 1e-6, hours)):
            name = _span_name(s0, hours)
            path = mosaic_paths(root, name)["zarr"]
            if not path.is_dir():
                if kk < k:
                    continue  # a previous span that has no group: not made for this group's edge
                header = _span_grid(img, s0, s1, cfg)
                if kk > k and not _reaches(img.wcs, img.pb.shape, header):
                    continue
                _create_store(path, header, {"start_mjd": s0, "end_mjd": s1})
            prepared = prepared or _prepare(img, cfg)
            _, _, attrs = _open_store(path)
            if group_id in attrs["groups"]:
                _rebuild(root, name, list(attrs["groups"]), cfg, replace={group_id: prepared})
            elif _add(path, prepared, group_id, cfg) is None:
                continue
            reached.add(name)
            row = db.get(name)
            if row is None and kk > k:
                continue  # the next span's store holds this group's edge; its row comes with its own first group
            status = row["status"] if row is not None else "running"  # a reprocessed group keeps a closed span closed
            written.append(_record(root, name, kind="span", status=status, cfg=cfg, db=db))
        for row in db.running():  # groups come in time order: one that misses an earlier span, all later ones do
            if row["kind"] == "span" and row["end_mjd"] <= start and row["name"] not in reached:
                _record(root, row["name"], kind="span", status="complete", cfg=cfg, db=db)
    finally:
        db.close()
    return written


def build_mosaic(root: str | Path, *, cfg: Config, start_mjd: float | None = None, end_mjd: float | None = None,
                 groups: list[str] | None = None, name: str | None = None) -> dict:
    """Build one mosaic from a root after the fact (what ``contimg mosaic`` calls): the
    completed groups named in ``groups``, else those whose mid-time lies in
    [``start_mjd``, ``end_mjd``) (all when None), onto a grid covering their drift. Writes the
    products under ``<root>/mosaics/<name>/`` and a ``custom`` row; returns that row (with the
    product paths). ValueError when no completed group is selected."""
    root = Path(root)
    rows = _completed_groups(root)
    if groups is not None:
        rows = [r for r in rows if r["group_id"] in set(groups)]
    else:
        rows = [r for r in rows if (start_mjd is None or r["mid_mjd"] >= start_mjd)
                and (end_mjd is None or r["mid_mjd"] < end_mjd)]
    if not rows:
        raise ValueError(f"{root}: no completed group to mosaic"
                         + (f" among {groups}" if groups is not None else f" with mid-time in [{start_mjd}, {end_mjd})"))
    rows.sort(key=lambda r: r["mid_mjd"])
    first = load_group_image(root, rows[0]["group_id"])
    half = 0.5 * (rows[0]["end_mjd"] - rows[0]["start_mjd"]) if rows[0].get("end_mjd") else 0.0
    s0, s1 = rows[0]["mid_mjd"] - half, rows[-1]["mid_mjd"] + half
    name = name or f"mosaic_{rows[0]['group_id'].replace(':', '')}_{len(rows)}g"
    paths = mosaic_paths(root, name)
    shutil.rmtree(paths["zarr"], ignore_errors=True)
    _create_store(paths["zarr"], _span_grid(first, s0, s1, cfg), {"start_mjd": s0, "end_mjd": s1})
    for r in rows:
        img = first if r["group_id"] == first.group_id else load_group_image(root, r["group_id"])
        _add(paths["zarr"], _prepare(img, cfg), r["group_id"], cfg)
    db = MosaicsDB(root / "state" / "products.sqlite3")
    try:
        return _record(root, name, kind="custom", status="complete", cfg=cfg, db=db)
    finally:
        db.close()


def span_plan(root: str | Path, *, cfg: Config) -> list[dict]:
    """Every span of a root's completed groups, as `build_span` takes them: ``name``,
    ``start_mjd``, ``end_mjd``, ``groups`` (its own, in time order) and ``neighbours`` (the
    groups of the spans either side, whose images may reach its grid)."""
    hours = cfg.mosaic.span_hours
    spans: dict[str, dict] = {}
    for r in sorted(_completed_groups(Path(root)), key=lambda r: r["mid_mjd"]):
        _, s0, s1 = span_of(r["mid_mjd"], hours)
        spans.setdefault(_span_name(s0, hours), {"start_mjd": s0, "end_mjd": s1, "groups": []})["groups"].append(
            r["group_id"])
    out = []
    for name, span in spans.items():
        side = [_span_name(span_of(t, hours)[1], hours) for t in (span["start_mjd"] - 1e-6, span["end_mjd"] + 1e-6)]
        out.append({"name": name, **span, "neighbours": [g for n in side for g in spans.get(n, {}).get("groups", [])]})
    return out


def build_span(root: str | Path, span: dict, *, cfg: Config) -> str:
    """One span's mosaic (an item of `span_plan`) made again from its groups' stored images: its
    own groups, and the neighbouring spans' groups whose images reach its grid (checked on
    their grids alone, `group_grid`), each in time order. Touches only the span's folder (no
    database), so spans can be built in parallel; `build_span_mosaics` records them. The name."""
    from contimg.pipeline.cluster import prepare_worker

    prepare_worker(cfg)  # on a Dask worker: the service's Earth orientation, offline
    root = Path(root)
    path = mosaic_paths(root, span["name"])["zarr"]
    first = load_group_image(root, span["groups"][0])
    header = _span_grid(first, span["start_mjd"], span["end_mjd"], cfg)
    _create_store(path, header, {"start_mjd": span["start_mjd"], "end_mjd": span["end_mjd"]})
    own = set(span["groups"])
    for gid in sorted([*span["groups"], *span["neighbours"]]):
        if gid not in own and not _reaches(*group_grid(root, gid), header):
            continue
        _add(path, _prepare(first if gid == first.group_id else load_group_image(root, gid), cfg), gid, cfg)
    return span["name"]


def build_span_mosaics(root: str | Path, *, cfg: Config, client=None) -> list[dict]:
    """Every span's fixed mosaic of a root's completed groups, rebuilt from their images (the
    archive path; the service builds the same spans group by group), each span by `build_span`:
    in turn, or as tasks on a Dask cluster when ``client`` (a `distributed.Client` whose workers
    share the root) is given; the rows (``complete``) are written here, by one writer. The rows."""
    root = Path(root)
    for old in (root / "mosaics").glob("span_*"):
        shutil.rmtree(old)
    db = MosaicsDB(root / "state" / "products.sqlite3")
    try:
        db.delete(kind="span")  # the rows of spans gone with their files
    finally:
        db.close()
    plan = span_plan(root, cfg=cfg)
    if client is None:
        names = [build_span(root, span, cfg=cfg) for span in plan]
    else:
        names = client.gather([client.submit(build_span, str(root), span, cfg=cfg, pure=False) for span in plan])
    db = MosaicsDB(root / "state" / "products.sqlite3")
    try:
        return [_record(root, name, kind="span", status="complete", cfg=cfg, db=db) for name in names]
    finally:
        db.close()


def after_group(root: str | Path, group_id: str, *, cfg: Config) -> dict:
    """What the service runs after each completed group (in a worker thread; it touches only
    files under ``root`` and the products DB): the catalogue, forced photometry and transient
    search of `contimg.pipeline.catalogue.update_catalogue` (when ``catalogue.enabled``), then
    the running span mosaic (when ``mosaic.enabled``); a span that this group closed (every
    earlier span) is searched for sources too. Returns ``catalogue`` (that summary or None),
    ``mosaics`` (rows written), ``closed`` (spans marked complete) and ``alerts`` (dicts with
    ``severity``, ``category``, ``message``) for the service to send and publish."""
    from contimg.pipeline.catalogue import update_catalogue, update_catalogue_from_mosaic

    root = Path(root)
    img = load_group_image(root, group_id)
    out = {"catalogue": None, "mosaics": [], "closed": [], "alerts": []}
    if cfg.catalogue.enabled:
        out["catalogue"] = update_catalogue(root, group_id, cfg=cfg, image=img)
        out["alerts"] += out["catalogue"]["alerts"]
    if cfg.mosaic.enabled:
        db = MosaicsDB(root / "state" / "products.sqlite3")
        try:
            before = {r["name"] for r in db.running()}
        finally:
            db.close()
        out["mosaics"] = update_running_mosaic(root, group_id, cfg=cfg, image=img)
        db = MosaicsDB(root / "state" / "products.sqlite3")
        try:
            out["closed"] = sorted(before - {r["name"] for r in db.running()})
        finally:
            db.close()
        if cfg.catalogue.enabled:
            for name in out["closed"]:
                update_catalogue_from_mosaic(root, name, cfg=cfg)
    return out
