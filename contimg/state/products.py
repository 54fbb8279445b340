"""``<root>/state/products.sqlite3`` through sqlite-utils in WAL mode: ``ms_index`` (one row per
group), ``images`` (one row per image file), and the QA tables — ``qa`` (one gate per group and
stage), ``qa_artifacts`` (diagnostic PNGs), ``detections`` (sources found per group, with their
catalogue match), ``photometry`` (forced photometry per group and catalogue source),
``variables`` (variability statistics per source) and ``alerts`` (every alert sent). Rows are
upserted, so a replay of the same files creates no duplicates; a row points only at a file that
was written whole."""

from __future__ import annotations

import json
import time
from pathlib import Path

from contimg.state.db import open_state_db

__all__ = ["ProductsDB"]


class ProductsDB:
    def __init__(self, path: Path):
        self.db = open_state_db(path)
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
        self.db["qa"].create({"group_id": str, "stage": str, "passed": int, "metrics": str, "reasons": str,
                              "created_at": float}, pk=("group_id", "stage"), if_not_exists=True)
        self.db["qa_artifacts"].create({"path": str, "group_id": str, "kind": str, "created_at": float}, pk="path",
                                       if_not_exists=True)
        self.db["qa_artifacts"].create_index(["group_id"], if_not_exists=True)
        self.db["detections"].create({"group_id": str, "n": int, "ra_deg": float, "dec_deg": float, "x": float,
                                      "y": float, "peak_jy": float, "flux_jy": float, "rms_jy": float, "snr": float,
                                      "pb": float, "match": str}, pk=("group_id", "n"), if_not_exists=True)
        self.db["photometry"].create({"group_id": str, "source": str, "mid_mjd": float, "ra_deg": float,
                                      "dec_deg": float, "x": float, "y": float, "pb": float, "flux_jy": float,
                                      "noise_jy": float, "err_jy": float, "catalogue_flux_jy": float,
                                      "freq_hz": float}, pk=("group_id", "source"), if_not_exists=True)
        self.db["photometry"].create_index(["source"], if_not_exists=True)
        self.db["variables"].create({"source": str, "n": int, "mean_flux_jy": float, "eta": float, "v": float,
                                     "candidate": int, "updated_at": float}, pk="source", if_not_exists=True)
        self.db["alerts"].create({"id": int, "severity": str, "category": str, "message": str, "at": float},
                                 pk="id", if_not_exists=True)

    def upsert_group(self, **row) -> None:
        row["updated_at"] = time.time()
        self.db["ms_index"].upsert(row, pk="group_id", alter=True)

    def forget_group(self, group_id: str) -> dict[str, int]:
        """Delete the rows of ``group_id``'s products (images, QA gates and plots, detections,
        photometry) before it is processed again from the start; how many went, per table.
        Its ``ms_index`` row stays (it is updated as the group runs)."""
        out = {}
        with self.db.conn:
            for table in ("images", "qa", "qa_artifacts", "detections", "photometry"):
                out[table] = self.db.execute(f"DELETE FROM {table} WHERE group_id = ?", [group_id]).rowcount
        return out

    def upsert_image(self, **row) -> None:
        row["created_at"] = time.time()
        self.db["images"].upsert(row, pk="path", alter=True)

    def record_qa(self, *, group_id: str, gates: list, artifacts: list[tuple[str, str]]) -> None:
        """Gates (`contimg.qa.gates.Gate`) and diagnostic PNGs (kind, path) of one group."""
        now = time.time()
        with self.db.conn:
            for gate in gates:
                self.db["qa"].upsert({"group_id": group_id, "stage": gate.stage, "passed": int(gate.passed),
                                      "metrics": json.dumps(gate.metrics), "reasons": json.dumps(gate.reasons),
                                      "created_at": now}, pk=("group_id", "stage"))
            for kind, path in artifacts:
                self.db["qa_artifacts"].upsert({"path": path, "group_id": group_id, "kind": kind, "created_at": now},
                                               pk="path")

    def record_sources(self, *, group_id: str, mid_mjd: float, freq_hz: float, detections: list[dict],
                       photometry: list[dict]) -> None:
        """A group's detections and forced photometry, replacing what an earlier run stored."""
        with self.db.conn:
            self.db.execute("DELETE FROM detections WHERE group_id = ?", [group_id])
            self.db.execute("DELETE FROM photometry WHERE group_id = ?", [group_id])
            if detections:
                self.db["detections"].insert_all([{"group_id": group_id, **d} for d in detections],
                                                 pk=("group_id", "n"), alter=True)
            if photometry:
                self.db["photometry"].insert_all([{"group_id": group_id, "mid_mjd": mid_mjd, "freq_hz": freq_hz, **r}
                                                  for r in photometry], pk=("group_id", "source"), alter=True)

    def lightcurve(self, source: str) -> list[dict]:
        """The forced-photometry rows of ``source``, in time order (only completed groups)."""
        return list(self.db.query(
            "SELECT p.* FROM photometry p JOIN ms_index m ON m.group_id = p.group_id "
            "WHERE p.source = ? AND m.status = 'completed' ORDER BY p.mid_mjd", [source]))

    def upsert_variable(self, **row) -> None:
        row["updated_at"] = time.time()
        self.db["variables"].upsert(row, pk="source")

    def record_alert(self, *, severity: str, category: str, message: str, at: float) -> None:
        self.db["alerts"].insert({"severity": severity, "category": category, "message": message, "at": at})

    def recent_beams(self, n: int = 10) -> list[tuple[float, float]]:
        """(bmaj, bmin) arcsec of the last ``n`` images whose image gate passed."""
        rows = self.db.query("SELECT metrics FROM qa WHERE stage = 'image' AND passed = 1 "
                             "ORDER BY created_at DESC LIMIT ?", [n])
        out = []
        for r in rows:
            m = json.loads(r["metrics"])
            if m.get("bmaj_arcsec") and m.get("bmin_arcsec"):
                out.append((m["bmaj_arcsec"], m["bmin_arcsec"]))
        return out

    def groups(self) -> list[dict]:
        return list(self.db["ms_index"].rows_where(order_by="group_id"))

    def images(self, group_id: str | None = None) -> list[dict]:
        if group_id is None:
            return list(self.db["images"].rows)
        return list(self.db["images"].rows_where("group_id = ?", [group_id]))

    # ---- reads for the web view and the service ----------------------------------------------
    def image_by_id(self, image_id: int) -> dict | None:
        rows = list(self.db.query("SELECT rowid AS id, * FROM images WHERE rowid = ?", [image_id]))
        return rows[0] if rows else None

    def image_rows(self, *, group_id: str | None = None, image_type: str | None = None, limit: int = 50) -> list[dict]:
        """Image rows (with their ``id``), newest group first."""
        clauses, args = [], []
        if group_id:
            clauses.append("group_id = ?")
            args.append(group_id)
        if image_type:
            clauses.append("type = ?")
            args.append(image_type)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        return list(self.db.query(f"SELECT rowid AS id, * FROM images {where} ORDER BY group_id DESC, type LIMIT ?",
                                  [*args, limit]))

    def image_ids(self, group_id: str) -> list[int]:
        return [r["id"] for r in self.db.query("SELECT rowid AS id FROM images WHERE group_id = ?", [group_id])]

    def ms_index(self, *, limit: int = 100) -> list[dict]:
        return list(self.db.query("SELECT * FROM ms_index ORDER BY group_id DESC LIMIT ?", [limit]))

    def gates(self, group_id: str) -> list[dict]:
        """The QA gate rows of a group, metrics and reasons decoded, in stage order."""
        order = {"read": 0, "flag": 1, "calibrate": 2, "image": 3}
        rows = [{"stage": r["stage"], "passed": bool(r["passed"]), "metrics": json.loads(r["metrics"]),
                 "reasons": json.loads(r["reasons"])}
                for r in self.db.query("SELECT * FROM qa WHERE group_id = ?", [group_id])]
        return sorted(rows, key=lambda g: order.get(g["stage"], 9))

    def qa_summary(self, *, limit: int = 50) -> list[dict]:
        """Completed groups, newest first, with their restored image's figures."""
        return list(self.db.query(
            "SELECT m.group_id, m.cal_applied, m.calibrator, i.noise_jy, i.peak_jy, i.dynamic_range, i.bmaj_arcsec, "
            "i.bmin_arcsec FROM ms_index m LEFT JOIN images i ON i.group_id = m.group_id AND i.type = 'restored' "
            "WHERE m.status = 'completed' ORDER BY m.group_id DESC LIMIT ?", [limit]))

    def artifacts(self, group_id: str) -> list[dict]:
        return list(self.db.query("SELECT kind, path FROM qa_artifacts WHERE group_id = ? ORDER BY kind", [group_id]))

    def n_detections(self, group_id: str) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM detections WHERE group_id = ?", [group_id]).fetchone()[0])

    def photometry(self, group_id: str) -> list[dict]:
        return list(self.db.query("SELECT * FROM photometry WHERE group_id = ? ORDER BY source", [group_id]))

    def detections(self, group_id: str) -> list[dict]:
        """The sources found in a group's image (pixel x, y 0-based), brightest first."""
        return list(self.db.query("SELECT * FROM detections WHERE group_id = ? ORDER BY peak_jy DESC", [group_id]))

    def candidate_sources(self) -> set[str]:
        """The names of the sources flagged as variability candidates."""
        return {r["source"] for r in self.db.query("SELECT source FROM variables WHERE candidate = 1")}

    def restored_image_ids(self, group_ids: list[str]) -> dict[str, int]:
        """group → the id of its restored image (where it has one)."""
        if not group_ids:
            return {}
        marks = ",".join("?" * len(group_ids))
        return {r["group_id"]: r["id"] for r in self.db.query(
            f"SELECT rowid AS id, group_id FROM images WHERE type = 'restored' AND group_id IN ({marks})", group_ids)}

    def variables(self, *, candidates_only: bool = False, limit: int = 100) -> list[dict]:
        where = "WHERE candidate = 1 " if candidates_only else ""
        return list(self.db.query(f"SELECT * FROM variables {where}ORDER BY eta DESC LIMIT ?", [limit]))

    def variable(self, source: str) -> dict | None:
        rows = list(self.db["variables"].rows_where("source = ?", [source]))
        return rows[0] if rows else None

    def flag_fraction(self, group_id: str) -> float | None:
        """The flagged fraction recorded for a group (None before its flag stage is recorded)."""
        if "flag_fraction" not in self.db["ms_index"].columns_dict:
            return None
        row = self.db.execute("SELECT flag_fraction FROM ms_index WHERE group_id = ?", [group_id]).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def close(self) -> None:
        self.db.close()
