"""``<root>/state/products.sqlite3``: ``ms_index`` (one row per group) and ``images`` (one row
per image file), through sqlite-utils in WAL mode. Rows are upserted, so a replay of the same
files creates no duplicates; a row points only at a file that was written whole."""

from __future__ import annotations

import time
from pathlib import Path

import sqlite_utils

__all__ = ["ProductsDB"]


class ProductsDB:
    def __init__(self, path: Path):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite_utils.Database(path)
        self.db.enable_wal()
        # WAL with synchronous=NORMAL: a commit does not wait for fsync (checkpoints do); the
        # database stays consistent through a crash of the process or the machine, and only a
        # power loss can drop the last commits. Commits run on the event loop's thread, where a
        # busy disk's fsync stalled it for up to half a second.
        self.db.execute("PRAGMA synchronous = NORMAL")
        self.db["ms_index"].create(
            {"group_id": str, "start_mjd": float, "end_mjd": float, "mid_mjd": float, "status": str, "stage": str,
             "cal_applied": int, "calibrator": str, "image_name": str, "ra_deg": float, "dec_deg": float,
             "n_subbands": int, "problems": str, "error": str, "updated_at": float},
            pk="group_id", if_not_exists=True)
        self.db["images"].create(
            {"path": str, "group_id": str, "type": str, "bmaj_arcsec": float, "bmin_arcsec": float, "bpa_deg": float,
             "noise_jy": float, "peak_jy": float, "dynamic_range": float, "pbcor": int, "created_at": float},
            pk="path", if_not_exists=True)
        self.db["images"].create_index(["group_id"], if_not_exists=True)

    def upsert_group(self, **row) -> None:
        row["updated_at"] = time.time()
        self.db["ms_index"].upsert(row, pk="group_id", alter=True)

    def upsert_image(self, **row) -> None:
        row["created_at"] = time.time()
        self.db["images"].upsert(row, pk="path", alter=True)

    def groups(self) -> list[dict]:
        return list(self.db["ms_index"].rows_where(order_by="group_id"))

    def images(self, group_id: str | None = None) -> list[dict]:
        if group_id is None:
            return list(self.db["images"].rows)
        return list(self.db["images"].rows_where("group_id = ?", [group_id]))

    def close(self) -> None:
        self.db.close()
