"""The ``mosaics`` table of ``<root>/state/products.sqlite3``: one row per strip mosaic (a fixed
span product or a mosaic built on request), upserted each time it changes, so a replay makes
no duplicate. A row points only at files written whole (the FITS and Zarr products are renamed
into place before the row is written)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from contimg.state.db import open_state_db

__all__ = ["MosaicsDB"]

_COLUMNS = {"name": str, "kind": str, "status": str, "start_mjd": float, "end_mjd": float, "groups": str,
            "n_groups": int, "ra_deg": float, "dec_deg": float, "width_deg": float, "height_deg": float,
            "cell_arcsec": float, "noise_median_jy": float, "noise_min_jy": float, "image_path": str,
            "noise_path": str, "weight_path": str, "zarr_path": str, "updated_at": float}


class MosaicsDB:
    """``kind``: ``span`` (the fixed product of one ``mosaic.span_hours``) or ``custom`` (built
    from a root after the fact); ``status``: ``running`` (still receiving groups) or
    ``complete``; ``groups``: the group ids in it (JSON)."""

    def __init__(self, path: Path):
        self.db = open_state_db(path, busy_timeout_ms=10000)  # the service writes the same file from its loop
        self.db["mosaics"].create(_COLUMNS, pk="name", if_not_exists=True)
        self.db["mosaics"].create_index(["start_mjd"], if_not_exists=True)

    def upsert(self, *, name: str, groups: list[str], **row) -> None:
        unknown = set(row) - set(_COLUMNS)
        if unknown:
            raise ValueError(f"mosaics: unknown columns {sorted(unknown)}")
        self.db["mosaics"].upsert({"name": name, "groups": json.dumps(sorted(groups)), "n_groups": len(groups),
                                   **row, "updated_at": time.time()}, pk="name")

    def get(self, name: str) -> dict | None:
        rows = list(self.db["mosaics"].rows_where("name = ?", [name]))
        return self._decode(rows[0]) if rows else None

    def list(self, *, kind: str | None = None, limit: int = 100) -> list[dict]:
        """Mosaic rows, newest span first."""
        where, args = ("WHERE kind = ? ", [kind]) if kind else ("", [])
        return [self._decode(r) for r in self.db.query(
            f"SELECT * FROM mosaics {where}ORDER BY start_mjd DESC LIMIT ?", [*args, limit])]

    def running(self) -> list[dict]:
        """The mosaics still receiving groups."""
        return [self._decode(r) for r in self.db.query(
            "SELECT * FROM mosaics WHERE status = 'running' ORDER BY start_mjd")]

    def set_status(self, name: str, status: str) -> None:
        with self.db.conn:
            self.db.execute("UPDATE mosaics SET status = ?, updated_at = ? WHERE name = ?", [status, time.time(), name])

    def delete(self, *, kind: str) -> None:
        """Drop every row of ``kind`` (before the span mosaics are built again from a root)."""
        with self.db.conn:
            self.db.execute("DELETE FROM mosaics WHERE kind = ?", [kind])

    @staticmethod
    def _decode(row: dict) -> dict:
        return {**row, "groups": json.loads(row["groups"] or "[]")}

    def close(self) -> None:
        self.db.close()
