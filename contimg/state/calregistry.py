"""``<root>/state/cal_registry.sqlite3`` (sqlite-utils, WAL mode): one row per stored solution
table in ``caltables``. Which row a group gets is decided by the pure functions of
`contimg.calibrate.registry`; its columns are documented there."""

from __future__ import annotations

import logging
from pathlib import Path

import sqlite_utils

from contimg.state.db import open_state_db

log = logging.getLogger(__name__)

__all__ = ["CalRegistry", "STATUSES"]

# active: applied to the groups in its window; rejected: failed its quality gate, never applied;
# superseded: retired by an operator
STATUSES = ("active", "rejected", "superseded")


class CalRegistry:
    """``caltables`` in ``cal_registry.sqlite3``. One writer (the service shell); readers any."""

    def __init__(self, path: Path):
        path = Path(path)
        self.db = open_state_db(path)
        self.db["caltables"].create(
            {"set_name": str, "path": str, "cal_type": str, "apply_order": int, "calibrator": str, "refant": str,
             "created_at": float, "valid_start_mjd": float, "valid_end_mjd": float, "mid_mjd": float,
             "status": str, "params_json": str, "quality_json": str, "group_id": str, "n_antennas": int,
             "n_channels": int, "freq_min_hz": float, "freq_max_hz": float},
            pk=("set_name", "cal_type"), if_not_exists=True)
        self.db["caltables"].create_index(["status", "valid_start_mjd"], if_not_exists=True)

    def close(self) -> None:
        self.db.close()

    def register(self, row: dict) -> None:
        """Insert or update (same set and type: a replay adds no row) one table's row. The Zarr
        must exist whole. A table an operator marked ``superseded`` stays so."""
        if row["status"] not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {row['status']!r}")
        if not Path(row["path"]).is_dir():
            raise FileNotFoundError(f"calibration table {row['path']} does not exist: not registered")
        old = self.row(row["set_name"], row["cal_type"])
        if old is not None and old["status"] == "superseded":
            row = {**row, "status": "superseded"}
        self.db["caltables"].upsert(row, pk=("set_name", "cal_type"))

    def forget(self, set_name: str) -> list[dict]:
        """Delete every row of ``set_name`` (its tables are about to be solved again); the rows
        as they were."""
        rows = list(self.db["caltables"].rows_where("set_name = ?", [set_name]))
        with self.db.conn:
            self.db.execute("DELETE FROM caltables WHERE set_name = ?", [set_name])
        return rows

    def set_status(self, set_name: str, status: str, *, cal_type: str = "bandpass") -> None:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        self.db["caltables"].update((set_name, cal_type), {"status": status})

    def rows(self, *, limit: int = 20) -> list[dict]:
        """All rows, newest solution first."""
        return list(self.db.query("SELECT * FROM caltables ORDER BY mid_mjd DESC, created_at DESC LIMIT ?", [limit]))

    def set_names(self) -> set[str]:
        """The set names of every registered table."""
        return {r["set_name"] for r in self.db.query("SELECT set_name FROM caltables")}

    def row(self, set_name: str, cal_type: str = "bandpass") -> dict | None:
        try:
            return self.db["caltables"].get((set_name, cal_type))
        except sqlite_utils.db.NotFoundError:
            return None

    def candidates(self, *, mjd: float, margin_days: float = 1.0, cal_type: str | None = None) -> list[dict]:
        """Active rows (of ``cal_type``, or every type) whose window overlaps ``mjd ±
        margin_days`` (the shell hands these to a group's calibrate stage, which selects with
        the group's exact mid-time)."""
        of_type, args = ("AND cal_type = ? ", [cal_type]) if cal_type is not None else ("", [])
        return list(self.db.query(
            f"SELECT * FROM caltables WHERE status = 'active' {of_type}AND valid_end_mjd >= ? "
            "AND valid_start_mjd <= ? ORDER BY mid_mjd", [*args, mjd - margin_days, mjd + margin_days]))
