"""How every state database is opened."""

from __future__ import annotations

from pathlib import Path

import sqlite_utils

__all__ = ["open_state_db"]


def open_state_db(path: str | Path, *, busy_timeout_ms: int | None = None) -> sqlite_utils.Database:
    """One of the SQLite state databases (ingest, products, calibration registry), its folder
    made. WAL with synchronous=NORMAL: a commit does not wait for fsync (checkpoints do); the
    database stays consistent through a crash of the process or the machine, and only a power
    loss can drop the last commits. Commits run on the event loop's thread, where a busy disk's
    fsync stalled it for up to half a second."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite_utils.Database(path)
    db.enable_wal()
    db.execute("PRAGMA synchronous = NORMAL")
    if busy_timeout_ms is not None:
        db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    return db
