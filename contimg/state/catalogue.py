"""The pipeline's own sky, in ``<root>/state/products.sqlite3``:

- ``catalogue_sources``: one row per source the pipeline has found, its position the
  detections' weighted mean (kept as the weighted sum of unit vectors ``sx, sy, sz`` and the
  weight ``pos_weight`` = sum of 1/sigma_pos² in arcsec⁻², so a new detection refines it), its flux
  the inverse-variance mean of the detections (``sum_wf``, ``sum_w``), its fitted shape, first
  and last seen, the external catalogue's counterpart, and its variability (``eta``, ``v``,
  ``n_forced``, ``variable``);
- ``catalogue_detections``: every source found in an image or a mosaic (``image``: the group
  id or the mosaic's name; ``kind``: ``group`` or ``mosaic``), and the source it went to;
- ``forced_photometry``: the flux of every catalogue source in every image where it lies within
  the primary-beam cutoff, with its error from the local noise (light curves);
- ``transient_candidates``: detections with no catalogue counterpart that rose above everything
  the earlier images of the same sky saw; ``status`` ``new`` until an operator marks it
  ``real`` or ``artefact`` (`CatalogueDB.mark_candidate`).
Rows are upserted per image, so reprocessing an image replaces what it gave.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from contimg.state.db import open_state_db

__all__ = ["CatalogueDB", "VERDICTS"]

VERDICTS = ("real", "artefact")


class CatalogueDB:
    def __init__(self, path: Path):
        self.db = open_state_db(path, busy_timeout_ms=10000)  # the service writes the same file from its loop
        self.db["catalogue_sources"].create(
            {"name": str, "ra_deg": float, "dec_deg": float, "pos_err_arcsec": float, "sx": float, "sy": float,
             "sz": float, "pos_weight": float, "flux_jy": float, "flux_err_jy": float, "sum_wf": float,
             "sum_w": float, "peak_snr": float, "maj_arcsec": float, "min_arcsec": float, "pa_deg": float,
             "n_detections": int, "first_seen_mjd": float, "last_seen_mjd": float, "first_image": str,
             "last_image": str, "external_name": str, "external_sep_arcsec": float, "external_flux_jy": float,
             "n_forced": int, "mean_flux_jy": float, "eta": float, "v": float, "variable": int,
             "updated_at": float}, pk="name", if_not_exists=True)
        self.db["catalogue_detections"].create(
            {"image": str, "n": int, "kind": str, "source": str, "mid_mjd": float, "ra_deg": float, "dec_deg": float,
             "flux_jy": float, "err_jy": float, "peak_jy": float, "rms_jy": float, "snr": float, "pb": float,
             "maj_arcsec": float, "min_arcsec": float, "pa_deg": float, "pos_sigma_arcsec": float, "new": int},
            pk=("image", "n"), if_not_exists=True)
        self.db["catalogue_detections"].create_index(["source"], if_not_exists=True)
        self.db["forced_photometry"].create(
            {"image": str, "source": str, "kind": str, "mid_mjd": float, "freq_hz": float, "ra_deg": float,
             "dec_deg": float, "x": float, "y": float, "pb": float, "flux_jy": float, "noise_jy": float,
             "err_jy": float}, pk=("image", "source"), if_not_exists=True)
        self.db["forced_photometry"].create_index(["source"], if_not_exists=True)
        self.db["transient_candidates"].create(
            {"id": str, "image": str, "mid_mjd": float, "ra_deg": float, "dec_deg": float, "flux_jy": float,
             "err_jy": float, "snr": float, "pb": float, "prior": str, "min_rise_sigma": float, "cutout_path": str,
             "source": str, "status": str, "marked_by": str, "note": str, "marked_at": float,
             "created_at": float}, pk="id", if_not_exists=True)

    # ---- the catalogue -----------------------------------------------------------------------
    def sources(self) -> list[dict]:
        return list(self.db["catalogue_sources"].rows_where(order_by="name"))

    def sources_ranked(self, limit: int) -> list[dict]:
        """The ``limit`` sources an operator looks at first: variability candidates, then the
        highest eta, then the brightest."""
        return list(self.db.query("SELECT * FROM catalogue_sources ORDER BY variable DESC, eta IS NULL, eta DESC, "
                                  "flux_jy DESC LIMIT ?", [limit]))

    def count_sources(self) -> tuple[int, int]:
        """(sources, of which variability candidates)."""
        n, nv = next(iter(self.db.execute("SELECT COUNT(*), COALESCE(SUM(variable = 1), 0) FROM catalogue_sources")))
        return int(n), int(nv)

    def source(self, name: str) -> dict | None:
        rows = list(self.db["catalogue_sources"].rows_where("name = ?", [name]))
        return rows[0] if rows else None

    def upsert_sources(self, rows: list[dict]) -> None:
        if not rows:
            return
        now = time.time()
        with self.db.conn:
            self.db["catalogue_sources"].upsert_all([{**r, "updated_at": now} for r in rows], pk="name")

    def delete_sources(self, names: list[str]) -> None:
        """Drop catalogue sources (and their forced measurements): sources that only a
        forgotten image had found."""
        with self.db.conn:
            for name in names:
                self.db.execute("DELETE FROM catalogue_sources WHERE name = ?", [name])
                self.db.execute("DELETE FROM forced_photometry WHERE source = ?", [name])

    def variables(self) -> list[dict]:
        """The sources flagged as variability candidates, highest eta first."""
        return list(self.db.query("SELECT * FROM catalogue_sources WHERE variable = 1 ORDER BY eta DESC"))

    # ---- per image ---------------------------------------------------------------------------
    def record_detections(self, image: str, rows: list[dict]) -> None:
        """An image's detections (each with ``n``), replacing what it gave before."""
        with self.db.conn:
            self.db.execute("DELETE FROM catalogue_detections WHERE image = ?", [image])
            if rows:
                self.db["catalogue_detections"].insert_all([{"image": image, **r} for r in rows], pk=("image", "n"))

    def detections(self, *, image: str | None = None, source: str | None = None) -> list[dict]:
        clauses, args = [], []
        for col, val in (("image", image), ("source", source)):
            if val is not None:
                clauses.append(f"{col} = ?")
                args.append(val)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        return list(self.db.query(f"SELECT * FROM catalogue_detections {where} ORDER BY mid_mjd, image, n", args))

    def record_forced(self, image: str, rows: list[dict], *, replace: bool = True) -> None:
        """Forced measurements in ``image`` (each with ``source``); ``replace``: drop the image's
        earlier rows first (a backfill of new sources into an older image adds to them)."""
        with self.db.conn:
            if replace:
                self.db.execute("DELETE FROM forced_photometry WHERE image = ?", [image])
            if rows:
                self.db["forced_photometry"].upsert_all([{"image": image, **r} for r in rows], pk=("image", "source"))

    def lightcurve(self, source: str, *, kind: str = "group") -> list[dict]:
        """The forced measurements of ``source`` in images of ``kind``, in time order."""
        return list(self.db.query("SELECT * FROM forced_photometry WHERE source = ? AND kind = ? ORDER BY mid_mjd",
                                  [source, kind]))

    def forced_in(self, image: str) -> list[dict]:
        return list(self.db.query("SELECT * FROM forced_photometry WHERE image = ? ORDER BY source", [image]))

    # ---- transient candidates ----------------------------------------------------------------
    def record_candidate(self, row: dict) -> None:
        """A candidate (its ``id``: image and detection); an operator's verdict on it is kept."""
        old = self.candidate(row["id"])
        keep = {k: old[k] for k in ("status", "marked_by", "note", "marked_at")} if old else {
            "status": "new", "marked_by": "", "note": "", "marked_at": None}
        self.db["transient_candidates"].upsert({**row, "prior": json.dumps(row.get("prior", [])), **keep,
                                                "created_at": time.time()}, pk="id")

    def candidate(self, cid: str) -> dict | None:
        rows = list(self.db["transient_candidates"].rows_where("id = ?", [cid]))
        return self._decode(rows[0]) if rows else None

    def candidates(self, *, status: str | None = None, limit: int = 100) -> list[dict]:
        """Transient candidates, newest first (``status``: new, real or artefact)."""
        where, args = ("WHERE status = ? ", [status]) if status else ("", [])
        return [self._decode(r) for r in self.db.query(
            f"SELECT * FROM transient_candidates {where}ORDER BY mid_mjd DESC LIMIT ?", [*args, limit])]

    def candidates_in(self, images: list[str]) -> list[dict]:
        """The transient candidates found in ``images`` (group ids or mosaic names), in time order."""
        if not images:
            return []
        marks = ", ".join("?" * len(images))
        return [self._decode(r) for r in self.db.query(
            f"SELECT * FROM transient_candidates WHERE image IN ({marks}) ORDER BY mid_mjd, id", list(images))]

    def candidates_of(self, source: str) -> list[dict]:
        """The transient candidates that started catalogue source ``source``, in time order."""
        return [self._decode(r) for r in self.db.query(
            "SELECT * FROM transient_candidates WHERE source = ? ORDER BY mid_mjd, id", [source])]

    def mark_candidate(self, cid: str, *, verdict: str, by: str = "", note: str = "") -> dict:
        """An operator's verdict on candidate ``cid``: ``real`` or ``artefact``. KeyError for
        an unknown id, ValueError for another verdict; the updated row."""
        if verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
        if self.candidate(cid) is None:
            raise KeyError(cid)
        with self.db.conn:
            self.db.execute("UPDATE transient_candidates SET status = ?, marked_by = ?, note = ?, marked_at = ? "
                            "WHERE id = ?", [verdict, by, note, time.time(), cid])
        return self.candidate(cid)

    def forget_image(self, image: str) -> None:
        """Drop an image's detections, forced measurements and (unmarked) candidates."""
        with self.db.conn:
            for table in ("catalogue_detections", "forced_photometry"):
                self.db.execute(f"DELETE FROM {table} WHERE image = ?", [image])
            self.db.execute("DELETE FROM transient_candidates WHERE image = ? AND status = 'new'", [image])

    def clear(self) -> None:
        """Drop the whole catalogue (sources, detections, forced photometry and the candidates
        no operator has marked), before it is built again from a root's images."""
        with self.db.conn:
            for table in ("catalogue_sources", "catalogue_detections", "forced_photometry"):
                self.db.execute(f"DELETE FROM {table}")
            self.db.execute("DELETE FROM transient_candidates WHERE status = 'new'")

    @staticmethod
    def _decode(row: dict) -> dict:
        return {**row, "prior": json.loads(row["prior"] or "[]")}

    def close(self) -> None:
        self.db.close()
