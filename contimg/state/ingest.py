"""``<root>/state/ingest.sqlite3``: which subband files arrived, which group each belongs to, and
where every group stands. One writer (the service), sqlite-utils in WAL mode.

Tables:
- ``subband_files``: one row per file path (unique): group, subband, the timestamp in its name,
  size, mtime, when it was registered, and its ``role`` — ``member`` (used), ``duplicate`` (a
  second file for a subband the group already has) or ``late`` (arrived after the group started).
- ``ingest_queue``: one row per group: ``state`` (collecting → pending → in_progress →
  completed | failed), expected and present subbands, ``retry_count``, ``error``,
  ``processing_stage`` (the stage running), ``checkpoint`` (the last stage whose intermediate is
  stored), ``not_before`` (a retry's back-off), ``priority`` (calibrator groups first).
  ``kind``: ``subbands`` (a DSA-110 group) or ``file`` (`register_observation`: one visibility file
  of any array, its id the file's name, the file its one member in ``subband_files``).
- ``performance_metrics``: seconds per group, stage and attempt; ``replayed`` marks a stage that
  loaded its stored intermediate instead of computing it.

A group is named after its earliest file's timestamp and takes the files within
``group_tolerance_s`` of it, as `contimg.io.naming.group_files` does for a folder.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import sqlite_utils

from contimg.io.naming import TIME_FORMAT, Group, parse_subband_name
from contimg.state.db import open_state_db

__all__ = ["IngestDB", "STATES"]

STATES = ("collecting", "pending", "in_progress", "completed", "failed")


def _unix(group_id: str) -> float:
    return datetime.strptime(group_id, TIME_FORMAT).replace(tzinfo=timezone.utc).timestamp()


class IngestDB:
    def __init__(self, path: Path, *, n_subbands: int = 16, tolerance_s: float = 60.0):
        path = Path(path)
        self.path = path
        self.n_subbands = n_subbands
        self.tolerance_s = tolerance_s
        self.db = open_state_db(path, busy_timeout_ms=10000)
        self.db["subband_files"].create(
            {"path": str, "group_id": str, "subband": int, "file_time": str, "size": int, "mtime": float,
             "registered_at": float, "role": str}, pk="path", if_not_exists=True)
        self.db["subband_files"].create_index(["group_id"], if_not_exists=True)
        self.db["ingest_queue"].create(
            {"group_id": str, "start_unix": float, "state": str, "received_at": float, "last_file_at": float,
             "last_update": float, "expected_subbands": int, "present_subbands": int, "retry_count": int,
             "error": str, "processing_stage": str, "checkpoint": str, "not_before": float, "priority": int,
             "started_at": float, "finished_at": float, "problems": str, "kind": str},
            pk="group_id", if_not_exists=True, defaults={"retry_count": 0, "error": "", "processing_stage": "",
                                                         "checkpoint": "", "not_before": 0.0, "problems": "[]",
                                                         "kind": "subbands"})
        if "kind" not in self.db["ingest_queue"].columns_dict:  # a root from before file runs were queued
            self.db["ingest_queue"].add_column("kind", str, not_null_default="subbands")
        self.db["ingest_queue"].create_index(["state"], if_not_exists=True)
        self.db["ingest_queue"].create_index(["start_unix"], if_not_exists=True)
        self.db["performance_metrics"].create(
            {"id": int, "group_id": str, "stage": str, "seconds": float, "attempt": int, "replayed": int,
             "finished_at": float, "backend": str}, pk="id", if_not_exists=True)
        self.db["performance_metrics"].create_index(["group_id"], if_not_exists=True)

    # ---- files and groups -------------------------------------------------------------------
    def register_file(self, path: str | Path, *, size: int, mtime: float, now: float | None = None) -> str | None:
        """Record a complete subband file; returns its group id (None for a name that is not a
        subband file, or a path registered before). Moves a group to ``pending`` once it has
        every subband."""
        now = time.time() if now is None else now
        parsed = parse_subband_name(path)
        path = str(path)
        if parsed is None or self.db["subband_files"].count_where("path = ?", [path]):
            return None
        ts = parsed.timestamp.strftime(TIME_FORMAT)
        t = _unix(ts)
        with self.db.conn:
            row = next(iter(self.db.query(
                "SELECT * FROM ingest_queue WHERE kind = 'subbands' AND abs(start_unix - ?) <= ? "
                "ORDER BY abs(start_unix - ?) LIMIT 1",
                [t, self.tolerance_s, t])), None)
            if row is None:
                gid = ts
                self.db["ingest_queue"].insert(
                    {"group_id": gid, "start_unix": t, "state": "collecting", "received_at": now, "last_file_at": now,
                     "last_update": now, "expected_subbands": self.n_subbands, "present_subbands": 0,
                     "priority": None})
            else:
                gid = row["group_id"]
                if row["state"] == "collecting" and t < row["start_unix"]:
                    gid = self._rekey(gid, ts, t)
            state = self.db["ingest_queue"].get(gid)["state"]
            taken = self.db["subband_files"].count_where(
                "group_id = ? AND subband = ? AND role = 'member'", [gid, parsed.subband])
            if taken:
                role = "duplicate"
            elif state in ("collecting", "pending"):
                role = "member"
            else:
                role = "late"
            self.db["subband_files"].insert(
                {"path": path, "group_id": gid, "subband": parsed.subband, "file_time": ts, "size": int(size),
                 "mtime": float(mtime), "registered_at": now, "role": role})
            present = self.db["subband_files"].count_where("group_id = ? AND role = 'member'", [gid])
            update = {"present_subbands": present, "last_file_at": now, "last_update": now}
            if role != "member":
                update["problems"] = json.dumps(self._problems(gid) + [self._role_text(role, path, gid)])
            if state == "collecting" and present >= self.n_subbands:
                update["state"] = "pending"
            self.db["ingest_queue"].update(gid, update)
        return gid

    def register_observation(self, path: str | Path, *, group_id: str, now: float | None = None) -> dict | None:
        """Queue one visibility file of any array (``kind`` file) as group ``group_id``, pending
        at once. A group of that id queued before is queued again from the start (retries reset,
        its earlier outcome in ``problems``); returns its row as it was, or None when new.
        Raises ValueError when ``group_id`` is a DSA-110 group's, or names another file."""
        now = time.time() if now is None else now
        path = str(path)
        with self.db.conn:
            before = self.row(group_id)
            if before is not None and before.get("kind") != "file":
                raise ValueError(f"{path}: group {group_id} in {self.path} is a DSA-110 subband group, not this file")
            if before is not None:
                member = [f["path"] for f in self.files(group_id) if f["role"] == "member"]
                if member and member[0] != path:
                    raise ValueError(f"{path}: group {group_id} in {self.path} is another file ({member[0]}) "
                                     f"with the same name; use another --root")
                self.db["ingest_queue"].update(group_id, {
                    "state": "pending", "checkpoint": "", "retry_count": 0, "error": "", "not_before": 0.0,
                    "processing_stage": "", "last_update": now, "priority": 0,
                    "problems": "[]"})
            else:
                self.db["ingest_queue"].insert(
                    {"group_id": group_id, "start_unix": now, "state": "pending", "received_at": now,
                     "last_file_at": now, "last_update": now, "expected_subbands": 1, "present_subbands": 1,
                     "priority": 0, "kind": "file"})
            st = Path(path).stat() if Path(path).exists() else None
            self.db["subband_files"].upsert(
                {"path": path, "group_id": group_id, "subband": 0, "file_time": "", "size": st.st_size if st else 0,
                 "mtime": st.st_mtime if st else 0.0, "registered_at": now, "role": "member"}, pk="path")
        return before

    @staticmethod
    def _role_text(role: str, path: str, gid: str) -> str:
        if role == "duplicate":
            return f"{path}: a second file for a subband group {gid} already has (ignored)"
        return f"{path}: arrived after group {gid} had started (not used; reprocess the group to include it)"

    def _problems(self, gid: str) -> list[str]:
        return json.loads(self.db["ingest_queue"].get(gid)["problems"] or "[]")

    def _rekey(self, old: str, new: str, t: float) -> str:
        """A file earlier than a collecting group's first: the group takes its timestamp."""
        self.db.execute("UPDATE ingest_queue SET group_id = ?, start_unix = ? WHERE group_id = ?", [new, t, old])
        self.db.execute("UPDATE subband_files SET group_id = ? WHERE group_id = ?", [new, old])
        return new

    def group(self, group_id: str) -> Group:
        """The group's member files (subband → path) and its duplicates."""
        files, dups = {}, []
        for r in self.db["subband_files"].rows_where("group_id = ?", [group_id], order_by="registered_at"):
            if r["role"] == "member":
                files[r["subband"]] = Path(r["path"])
            else:
                dups.append(Path(r["path"]))
        row = self.row(group_id) or {}
        if row.get("kind") == "file":
            return Group(group_id=group_id, files=files, kind="file", registered_unix=row["start_unix"])
        return Group(group_id=group_id, files=files, duplicates=dups)

    def row(self, group_id: str) -> dict | None:
        try:
            return self.db["ingest_queue"].get(group_id)
        except sqlite_utils.db.NotFoundError:
            return None

    def rows(self, state: str | None = None) -> list[dict]:
        if state is None:
            return list(self.db["ingest_queue"].rows_where(order_by="group_id"))
        return list(self.db["ingest_queue"].rows_where("state = ?", [state], order_by="group_id"))

    def counts(self) -> dict[str, int]:
        c = Counter(r["state"] for r in self.db.query("SELECT state FROM ingest_queue"))
        return {s: c.get(s, 0) for s in STATES}

    def completed_since(self, unix_s: float) -> int:
        """How many groups completed at or after ``unix_s``."""
        return int(self.db.execute("SELECT count(*) FROM ingest_queue WHERE state = 'completed' AND finished_at >= ?",
                                   [unix_s]).fetchone()[0])

    def page(self, *, state: str | None = None, limit: int = 50, offset: int = 0) -> list[dict]:
        """Groups (of ``state``, or all), newest first."""
        where, args = ("WHERE state = ?", [state]) if state else ("", [])
        return list(self.db.query(f"SELECT * FROM ingest_queue {where} ORDER BY start_unix DESC LIMIT ? OFFSET ?",
                                  [*args, limit, offset]))

    def stage_totals(self, stages: tuple[str, ...]) -> list[dict]:
        """Per stage: total seconds ``s`` and runs ``n`` computed (not replayed)."""
        marks = ", ".join("?" * len(stages))
        return list(self.db.query(f"SELECT stage, sum(seconds) AS s, count(*) AS n FROM performance_metrics "
                                  f"WHERE replayed = 0 AND stage IN ({marks}) GROUP BY stage", list(stages)))

    def files(self, group_id: str | None = None) -> list[dict]:
        if group_id is None:
            return list(self.db["subband_files"].rows)
        return list(self.db["subband_files"].rows_where("group_id = ?", [group_id], order_by="subband"))

    # ---- state machine ------------------------------------------------------------------------
    def close_collecting(self, *, older_than_s: float, on_incomplete: str, now: float | None = None,
                         reason: str = "") -> list[str]:
        """Collecting groups whose last file is older than ``older_than_s``: ``pending`` with the
        missing subbands recorded ("flag"), or ``failed`` ("fail"). Returns their ids."""
        now = time.time() if now is None else now
        out = []
        for r in list(self.db["ingest_queue"].rows_where("state = 'collecting' AND last_file_at <= ?",
                                                          [now - older_than_s])):
            have = {f["subband"] for f in self.files(r["group_id"]) if f["role"] == "member"}
            missing = [f"sb{sb:02d}" for sb in range(self.n_subbands) if sb not in have]
            why = reason or f"no new file for {older_than_s:.0f} s"
            text = f"group {r['group_id']}: subbands {', '.join(missing)} missing ({why})"
            problems = json.loads(r["problems"] or "[]") + [text]
            if on_incomplete == "fail":
                self.db["ingest_queue"].update(r["group_id"], {"state": "failed", "error": text, "last_update": now,
                                                               "problems": json.dumps(problems), "finished_at": now})
            else:
                self.db["ingest_queue"].update(r["group_id"], {"state": "pending", "last_update": now,
                                                               "problems": json.dumps(problems)})
            out.append(r["group_id"])
        return out

    def pending_without_priority(self) -> list[str]:
        """Pending groups whose priority (calibrator or not) is not yet known."""
        return [r["group_id"] for r in self.db.query("SELECT group_id FROM ingest_queue WHERE state = 'pending' "
                                                     "AND priority IS NULL")]

    def set_priority(self, group_id: str, priority: int) -> None:
        self.db["ingest_queue"].update(group_id, {"priority": priority})

    def claim_next(self, *, now: float | None = None) -> dict | None:
        """Take the next pending group (highest priority, then oldest) into ``in_progress``."""
        now = time.time() if now is None else now
        with self.db.conn:
            row = next(iter(self.db.query(
                "SELECT * FROM ingest_queue WHERE state = 'pending' AND not_before <= ? "
                "ORDER BY priority DESC, start_unix LIMIT 1", [now])), None)
            if row is None:
                return None
            self.db["ingest_queue"].update(row["group_id"], {"state": "in_progress", "last_update": now,
                                                             "started_at": now, "processing_stage": "read"})
        return self.db["ingest_queue"].get(row["group_id"])

    def set_stage(self, group_id: str, stage: str) -> None:
        self.db["ingest_queue"].update(group_id, {"processing_stage": stage, "last_update": time.time()})

    def set_checkpoint(self, group_id: str, checkpoint: str) -> None:
        self.db["ingest_queue"].update(group_id, {"checkpoint": checkpoint, "last_update": time.time()})

    def complete(self, group_id: str) -> None:
        now = time.time()
        self.db["ingest_queue"].update(group_id, {"state": "completed", "processing_stage": "done",
                                                  "checkpoint": "write", "error": "", "last_update": now,
                                                  "finished_at": now})

    def fail(self, group_id: str, error: str, *, retry: bool, max_retries: int, backoff_s: float) -> str:
        """Record a failure: back to ``pending`` after a back-off while retries remain (and
        ``retry``), else ``failed``. Returns the new state."""
        now = time.time()
        row = self.db["ingest_queue"].get(group_id)
        n = row["retry_count"] + 1
        if retry and n <= max_retries:
            self.db["ingest_queue"].update(group_id, {"state": "pending", "retry_count": n, "error": error,
                                                      "not_before": now + backoff_s * 2 ** (n - 1),
                                                      "last_update": now})
            return "pending"
        self.db["ingest_queue"].update(group_id, {"state": "failed", "error": error, "last_update": now,
                                                  "finished_at": now})
        return "failed"

    def release(self, group_id: str) -> None:
        """Back to ``pending`` without counting an attempt (a clean shutdown); the checkpoint stays."""
        self.db["ingest_queue"].update(group_id, {"state": "pending", "processing_stage": "",
                                                  "last_update": time.time()})

    def recover_interrupted(self, *, max_retries: int) -> list[str]:
        """At start-up: ``in_progress`` groups were interrupted by a crash. Each goes back to
        ``pending`` (resumed from its checkpoint) and counts an attempt; a group that interrupted
        the service more than ``max_retries`` times is failed."""
        out = []
        for r in self.rows("in_progress"):
            n = r["retry_count"] + 1
            stage = r["processing_stage"]
            if n > max_retries + 1:
                self.db["ingest_queue"].update(r["group_id"], {
                    "state": "failed", "retry_count": n, "finished_at": time.time(),
                    "error": f"interrupted {n} times in stage {stage} (the service died each time)"})
            else:
                self.db["ingest_queue"].update(r["group_id"], {
                    "state": "pending", "retry_count": n, "processing_stage": "",
                    "error": f"interrupted in stage {stage}; resumed from checkpoint {r['checkpoint'] or 'none'}"})
            out.append(r["group_id"])
        return out

    def requeue_stuck(self, *, older_than_s: float, exclude: set[str]) -> list[str]:
        """``in_progress`` groups not updated for ``older_than_s`` and not held by this process."""
        now = time.time()
        out = []
        for r in self.db["ingest_queue"].rows_where("state = 'in_progress' AND last_update <= ?",
                                                    [now - older_than_s]):
            if r["group_id"] in exclude:
                continue
            self.db["ingest_queue"].update(r["group_id"], {"state": "pending", "processing_stage": "",
                                                           "error": "stuck in_progress; requeued",
                                                           "last_update": now})
            out.append(r["group_id"])
        return out

    def request_reprocess(self, group_id: str, *, checkpoint: str) -> None:
        """Queue a group again from ``checkpoint`` (its retries reset)."""
        if self.row(group_id) is None:
            raise KeyError(f"no group {group_id} in {self.path}")
        self.db["ingest_queue"].update(group_id, {"state": "pending", "checkpoint": checkpoint, "retry_count": 0,
                                                  "error": "", "not_before": 0.0, "processing_stage": "",
                                                  "last_update": time.time()})

    def requeue_failed(self, group_ids: list[str]) -> None:
        for gid in group_ids:
            row = self.row(gid)
            if row is not None and row["state"] == "failed":
                self.request_reprocess(gid, checkpoint=row["checkpoint"] if row["checkpoint"] != "write" else "")

    def busy(self) -> bool:
        """Whether any group is collecting, pending or in progress."""
        return bool(self.db.execute(
            "SELECT count(*) FROM ingest_queue WHERE state IN ('collecting', 'pending', 'in_progress')").fetchone()[0])

    def next_retry_at(self) -> float | None:
        r = self.db.execute("SELECT min(not_before) FROM ingest_queue WHERE state = 'pending'").fetchone()[0]
        return r

    # ---- metrics ------------------------------------------------------------------------------
    def record_metric(self, group_id: str, stage: str, seconds: float, *, attempt: int, replayed: bool = False,
                      backend: str = "cpu") -> None:
        """``replayed``: the stage loaded its stored result instead of computing it."""
        self.db["performance_metrics"].insert({"group_id": group_id, "stage": stage, "seconds": float(seconds),
                                               "attempt": attempt, "replayed": int(replayed),
                                               "finished_at": time.time(), "backend": backend})

    def metrics(self, group_id: str | None = None) -> list[dict]:
        if group_id is None:
            return list(self.db["performance_metrics"].rows)
        return list(self.db["performance_metrics"].rows_where("group_id = ?", [group_id], order_by="id"))

    def close(self) -> None:
        self.db.close()
