"""The ingest state machine and the folder watcher, on empty files with real names (no data)."""

import os
import time

import pytest

from contimg.state.ingest import IngestDB
from contimg.service.watch import settled_files


def _touch(folder, name, size=10):
    path = folder / name
    path.write_bytes(b"x" * size)
    return path


@pytest.fixture
def db(tmp_path):
    d = IngestDB(tmp_path / "state" / "ingest.sqlite3", n_subbands=4, tolerance_s=60)
    yield d
    d.close()


def _register(db, path, now=None):
    st = path.stat()
    return db.register_file(path, size=st.st_size, mtime=st.st_mtime, now=now)


def test_group_collects_then_pends_and_names_the_earliest_file(tmp_path, db):
    # files arrive out of order and with per-node clock jitter; the group takes the earliest name
    names = ["2026-03-21T10:00:05_sb02.hdf5", "2026-03-21T10:00:02_sb00.hdf5", "2026-03-21T10:00:03_sb01.hdf5"]
    gids = [_register(db, _touch(tmp_path, n)) for n in names]
    assert gids == ["2026-03-21T10:00:05", "2026-03-21T10:00:02", "2026-03-21T10:00:02"]
    row = db.row("2026-03-21T10:00:02")
    assert row["state"] == "collecting" and row["present_subbands"] == 3 and db.row("2026-03-21T10:00:05") is None
    _register(db, _touch(tmp_path, "2026-03-21T10:00:09_sb03.hdf5"))
    assert db.row("2026-03-21T10:00:02")["state"] == "pending"
    assert sorted(db.group("2026-03-21T10:00:02").files) == [0, 1, 2, 3]
    # a file 5 minutes later opens the next group
    assert _register(db, _touch(tmp_path, "2026-03-21T10:05:10_sb00.hdf5")) == "2026-03-21T10:05:10"
    assert db.counts() == {"collecting": 1, "pending": 1, "in_progress": 0, "completed": 0, "failed": 0}


def test_same_path_twice_is_one_file_and_a_second_file_for_a_subband_is_a_duplicate(tmp_path, db):
    first = _touch(tmp_path, "2026-03-21T10:00:00_sb01.hdf5")
    assert _register(db, first) is not None
    assert _register(db, first) is None  # re-delivery / rescan of the same path
    dup = _touch(tmp_path, "2026-03-21T10:00:04_sb01.hdf5")
    _register(db, dup)
    roles = {r["path"]: r["role"] for r in db.files()}
    assert roles == {str(first): "member", str(dup): "duplicate"}
    group = db.group("2026-03-21T10:00:00")
    assert group.files == {1: first} and group.duplicates == [dup]
    assert str(dup) in db.row("2026-03-21T10:00:00")["problems"]


def test_timeout_flags_or_fails_an_incomplete_group(tmp_path):
    for mode, state in (("flag", "pending"), ("fail", "failed")):
        d = IngestDB(tmp_path / mode / "ingest.sqlite3", n_subbands=4, tolerance_s=60)
        for sb in (0, 1, 3):
            _register(d, _touch(tmp_path, f"2026-03-21T10:00:0{sb}_sb0{sb}.hdf5"), now=1000.0)
        assert d.close_collecting(older_than_s=600, on_incomplete=mode, now=1500.0) == []
        assert d.close_collecting(older_than_s=600, on_incomplete=mode, now=1700.0) == ["2026-03-21T10:00:00"]
        row = d.row("2026-03-21T10:00:00")
        assert row["state"] == state and "sb02" in row["problems"]
        if mode == "fail":
            assert "sb02" in row["error"]
        d.close()


def test_claim_order_retries_and_recovery(tmp_path, db):
    for t in ("10:00:00", "10:05:00", "10:10:00"):
        for sb in range(4):
            _register(db, _touch(tmp_path, f"2026-03-21T{t}_sb0{sb}.hdf5"))
    db.set_priority("2026-03-21T10:00:00", 0)
    db.set_priority("2026-03-21T10:05:00", 1)  # the calibrator group goes first
    db.set_priority("2026-03-21T10:10:00", 0)
    order = []
    while (row := db.claim_next()) is not None:
        order.append(row["group_id"])
    assert order == ["2026-03-21T10:05:00", "2026-03-21T10:00:00", "2026-03-21T10:10:00"]
    # a transient failure goes back to pending after a back-off, until max_retries
    assert db.fail("2026-03-21T10:00:00", "OSError: x", retry=True, max_retries=1, backoff_s=100) == "pending"
    assert db.claim_next() is None  # still backing off
    assert db.claim_next(now=time.time() + 101)["group_id"] == "2026-03-21T10:00:00"
    assert db.fail("2026-03-21T10:00:00", "OSError: x", retry=True, max_retries=1, backoff_s=100) == "failed"
    # a read error is not retried
    assert db.fail("2026-03-21T10:10:00", "ReadError: bad", retry=False, max_retries=5, backoff_s=0) == "failed"
    # a crash while in progress: resumed from the checkpoint, counted as an attempt
    db.set_checkpoint("2026-03-21T10:05:00", "calibrate")
    assert db.recover_interrupted(max_retries=1) == ["2026-03-21T10:05:00"]
    row = db.row("2026-03-21T10:05:00")
    assert row["state"] == "pending" and row["checkpoint"] == "calibrate" and row["retry_count"] == 1
    db.claim_next()
    assert db.recover_interrupted(max_retries=1) == ["2026-03-21T10:05:00"]
    db.claim_next()
    db.recover_interrupted(max_retries=1)
    assert db.row("2026-03-21T10:05:00")["state"] == "failed"  # it killed the service 3 times


def test_late_file_for_a_started_group_is_kept_aside(tmp_path, db):
    for sb in range(3):
        _register(db, _touch(tmp_path, f"2026-03-21T10:00:00_sb0{sb}.hdf5"))
    db.close_collecting(older_than_s=0, on_incomplete="flag")
    db.claim_next()
    late = _touch(tmp_path, "2026-03-21T10:00:01_sb03.hdf5")
    _register(db, late)
    assert {r["path"]: r["role"] for r in db.files()}[str(late)] == "late"
    assert 3 not in db.group("2026-03-21T10:00:00").files


def test_stuck_groups_are_requeued_unless_held(tmp_path, db):
    for sb in range(4):
        _register(db, _touch(tmp_path, f"2026-03-21T10:00:00_sb0{sb}.hdf5"))
    db.claim_next()
    assert db.requeue_stuck(older_than_s=-1, exclude={"2026-03-21T10:00:00"}) == []
    assert db.requeue_stuck(older_than_s=-1, exclude=set()) == ["2026-03-21T10:00:00"]
    assert db.row("2026-03-21T10:00:00")["state"] == "pending"


def test_watcher_ignores_incomplete_and_growing_files(tmp_path):
    seen, done = {}, set()
    _touch(tmp_path, "2026-03-21T10:00:00_sb00_incomplete.hdf5")
    _touch(tmp_path, "notes.txt")
    growing = _touch(tmp_path, "2026-03-21T10:00:00_sb01.hdf5", size=10)
    old = time.time() - 10
    os.utime(growing, (old, old))
    assert settled_files(tmp_path, seen=seen, done=done, settle_s=1.0) == []  # first sighting
    growing.write_bytes(b"x" * 20)  # still being written
    os.utime(growing, (old, old))
    assert settled_files(tmp_path, seen=seen, done=done, settle_s=1.0) == []
    found = settled_files(tmp_path, seen=seen, done=done, settle_s=1.0)  # unchanged since the last scan
    assert [p.name for p, _ in found] == ["2026-03-21T10:00:00_sb01.hdf5"]
    fresh = _touch(tmp_path, "2026-03-21T10:00:00_sb02.hdf5")  # mtime now: not settled yet
    settled_files(tmp_path, seen=seen, done=done | {growing.name}, settle_s=1.0)
    assert settled_files(tmp_path, seen=seen, done=done | {growing.name}, settle_s=1.0) == []
    os.utime(fresh, (old, old))
    settled_files(tmp_path, seen=seen, done=done | {growing.name}, settle_s=1.0)
    assert [p.name for p, _ in settled_files(tmp_path, seen=seen, done=done | {growing.name}, settle_s=1.0)] == [
        fresh.name]
