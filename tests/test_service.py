"""The service: replay with bad input, crash (SIGKILL) and resume, SIGTERM, reprocess, supervision,
bounded memory. Small groups (4 integrations, 2 channels per subband) and small images: these
tests are about state, not science (the science is asserted in test_pipeline)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from astropy.io import fits

from contimg.config import load_config
from contimg.io.naming import group_files, scan_folder, subband_name

SERVICE_TOML = """
base = "test"
name = "service-test"
[simulate]
n_times = 4
chans_per_subband = 2
group_interval_s = 300.0
n_faint_sources = 5
[image]
npix = {npix}
cell_arcsec = 10.0
niter = {niter}
products = ["dirty", "restored"]
[service]
settle_s = 0.2
poll_interval_s = 0.2
retry_backoff_s = 0.1
housekeeping_interval_s = 1.0
shutdown_grace_s = {grace}
"""


def _config_file(folder: Path, *, npix=256, niter=50, grace=20.0) -> Path:
    path = folder / "service.toml"
    path.write_text(SERVICE_TOML.format(npix=npix, niter=niter, grace=grace))
    return path


@pytest.fixture(scope="module")
def six_groups(tmp_path_factory) -> Path:
    from contimg.sim import simulate

    out = tmp_path_factory.mktemp("six")
    cfg = load_config(_config_file(out), use_env=False)
    simulate(out / "files", n_groups=6, cfg=cfg.simulate)
    return out / "files"


def _groups(folder):
    return group_files(scan_folder(folder), tolerance_s=60)


def _copy_groups(src: Path, dest: Path, indices) -> list:
    dest.mkdir(parents=True, exist_ok=True)
    groups = _groups(src)
    for i in indices:
        for p in groups[i].files.values():
            shutil.copy(p, dest / p.name)
    return [groups[i] for i in indices]


def _ingest_rows(root: Path) -> dict[str, dict]:
    con = sqlite3.connect(root / "state" / "ingest.sqlite3")
    con.row_factory = sqlite3.Row
    rows = {r["group_id"]: dict(r) for r in con.execute("SELECT * FROM ingest_queue")}
    con.close()
    return rows


def _query(db: Path, sql: str, args=()) -> list[dict]:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    rows = [dict(r) for r in con.execute(sql, args)]
    con.close()
    return rows


def _assert_products_consistent(root: Path) -> None:
    """Every image row points at a whole FITS file; no duplicate rows; databases intact."""
    for name in ("ingest.sqlite3", "products.sqlite3"):
        assert _query(root / "state" / name, "PRAGMA integrity_check")[0]["integrity_check"] == "ok"
    images = _query(root / "state" / "products.sqlite3", "SELECT path, group_id, type FROM images")
    assert len({(r["group_id"], r["type"]) for r in images}) == len(images)
    for r in images:
        with fits.open(r["path"]) as hdul:
            assert hdul[0].data.shape[-1] > 0 and hdul[0].header["OBJECT"] == r["group_id"]


def test_replay_delivers_by_hard_link_complete_and_under_the_final_name(tmp_path):
    """A replayed file appears under its final name with the source's bytes, as a second name of
    the same file where source and root share a file system (no second copy of the archive)."""
    from contimg.service.batch import _deliver

    src = tmp_path / "archive" / "2026-03-22T09:23:19_sb03.hdf5"
    src.parent.mkdir()
    src.write_bytes(os.urandom(4096))
    dest = tmp_path / "root" / "incoming"
    dest.mkdir(parents=True)
    final = _deliver(src, dest, src.name, src.name + "_incomplete")
    assert final == dest / src.name and final.read_bytes() == src.read_bytes()
    assert os.path.samefile(final, src) and not (dest / (src.name + "_incomplete")).exists()


def test_replay_with_bad_files(tmp_path, six_groups):
    """Six groups replayed at 300x: one garbage file, one truncated, one missing subband, one
    duplicate. Every group completes once; the bad subbands are flagged with their files named."""
    from contimg.service.batch import run_replay

    src = tmp_path / "in"
    groups = _copy_groups(six_groups, src, range(6))
    garbage = src / groups[1].files[5].name
    garbage.write_bytes(os.urandom(garbage.stat().st_size))
    truncated = src / groups[2].files[7].name
    truncated.write_bytes(truncated.read_bytes()[:5000])
    (src / groups[3].files[9].name).unlink()
    first = groups[4].files[2]
    ts = first.name.split("_sb")[0]
    from datetime import datetime, timedelta

    dup_name = subband_name(datetime.fromisoformat(ts) + timedelta(seconds=2), 2)
    shutil.copy(first, src / dup_name)

    cfg = load_config(_config_file(tmp_path), use_env=False)
    root = tmp_path / "root"
    results, code = run_replay(src, root=root, cfg=cfg, speed=300.0)
    assert code == 0
    by_id = {r.group_id: r for r in results}
    assert sorted(by_id) == sorted(g.group_id for g in groups)
    assert all(r.status == "completed" for r in results)
    incoming = root / "incoming"
    assert any(str(incoming / garbage.name) in p for p in by_id[groups[1].group_id].problems)
    assert any(str(incoming / truncated.name) in p for p in by_id[groups[2].group_id].problems)
    assert any("sb09" in p for p in by_id[groups[3].group_id].problems)
    assert any(str(incoming / dup_name) in p for p in by_id[groups[4].group_id].problems)

    rows = _ingest_rows(root)
    assert {r["state"] for r in rows.values()} == {"completed"} and len(rows) == 6
    reads = _query(root / "state" / "ingest.sqlite3",
                   "SELECT group_id, count(*) AS n FROM performance_metrics WHERE stage = 'write' GROUP BY group_id")
    assert {r["n"] for r in reads} == {1} and len(reads) == 6  # each written exactly once
    ms = _query(root / "state" / "products.sqlite3", "SELECT group_id, status, n_subbands FROM ms_index")
    assert len(ms) == 6 and {r["status"] for r in ms} == {"completed"}
    n_sb = {r["group_id"]: r["n_subbands"] for r in ms}
    assert [n_sb[g.group_id] for g in groups] == [16, 15, 15, 15, 16, 16]
    dup = _query(root / "state" / "ingest.sqlite3", "SELECT role FROM subband_files WHERE path = ?",
                 [str(incoming / dup_name)])
    assert dup == [{"role": "duplicate"}]
    _assert_products_consistent(root)

    # the same files again: nothing is processed twice, no row is added
    n_images = len(_query(root / "state" / "products.sqlite3", "SELECT path FROM images"))
    results2, code2 = run_replay(src, root=root, cfg=cfg, speed=1000.0)
    assert code2 == 0 and len(_query(root / "state" / "products.sqlite3", "SELECT path FROM images")) == n_images
    assert len(_query(root / "state" / "ingest.sqlite3",
                      "SELECT * FROM performance_metrics WHERE stage = 'write'")) == 6


def _serve(root: Path, config: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    log = open(root.parent / f"serve-{time.time():.0f}.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "contimg.cli", "serve", "--root", str(root), "--config",
                             str(config)], stdout=log, stderr=subprocess.STDOUT, env=env)


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    t_end = time.time() + timeout
    while time.time() < t_end:
        try:
            value = predicate()
        except (sqlite3.OperationalError, FileNotFoundError, KeyError):
            value = None
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"service exited ({proc.returncode}) while waiting for {what}")
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _in_stage(root: Path, stage: str):
    rows = _ingest_rows(root)
    hits = [g for g, r in rows.items() if r["state"] == "in_progress" and r["processing_stage"] == stage]
    return hits[0] if hits else None


def test_sigkill_mid_group_then_restart_resumes_from_checkpoint(tmp_path, six_groups):
    root = tmp_path / "root"
    groups = _copy_groups(six_groups, root / "incoming", [0, 1])
    config = _config_file(tmp_path, npix=1024, niter=3000)
    proc = _serve(root, config)
    try:
        victim = _wait_for(lambda: _in_stage(root, "image"), 240, "a group in the image stage", proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert _ingest_rows(root)[victim]["checkpoint"] == "calibrate"
        proc = _serve(root, config)
        _wait_for(lambda: {r["state"] for r in _ingest_rows(root).values()} == {"completed"}
                  and len(_ingest_rows(root)) == 2, 240, "both groups completed", proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    rows = _ingest_rows(root)
    assert rows[victim]["retry_count"] == 1 and rows[victim]["error"] == ""  # one interruption, then done
    metrics = _query(root / "state" / "ingest.sqlite3",
                     "SELECT stage, attempt FROM performance_metrics WHERE group_id = ? AND replayed = 0", [victim])
    stages = [(m["stage"], m["attempt"]) for m in metrics]
    # flag and calibrate were computed once (attempt 1); attempt 2 replayed them from the stored
    # intermediates and computed only the image
    assert [s for s in stages if s[0] in ("flag", "calibrate", "image")] == [("flag", 1), ("calibrate", 1),
                                                                            ("image", 2)]
    assert ("write", 1) not in stages and [s for s in stages if s[0] == "write"] == [("write", 2)]
    ms = _query(root / "state" / "products.sqlite3", "SELECT group_id, status FROM ms_index")
    assert sorted(r["group_id"] for r in ms) == sorted(g.group_id for g in groups)
    assert {r["status"] for r in ms} == {"completed"}
    _assert_products_consistent(root)


def test_sigterm_exits_0_within_grace_with_consistent_state(tmp_path, six_groups):
    root = tmp_path / "root"
    _copy_groups(six_groups, root / "incoming", [0, 1])
    grace = 5.0
    proc = _serve(root, _config_file(tmp_path, npix=1024, niter=3000, grace=grace))
    try:
        _wait_for(lambda: _in_stage(root, "calibrate") or _in_stage(root, "image"), 240, "a group in progress",
                  proc)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=grace + 30)  # the grace, plus interpreter start-up/teardown slack
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0
    rows = _ingest_rows(root)
    assert not [g for g, r in rows.items() if r["state"] == "in_progress"]
    assert {r["state"] for r in rows.values()} <= {"pending", "completed"}
    health = json.loads((root / "state" / "health.json").read_text())
    assert health["stopping"] and set(health["health"].values()) == {"stopped"}
    _assert_products_consistent(root)


def test_reprocess_from_image_replaces_products(tmp_path, six_groups):
    from contimg.cli import main
    from contimg.service.batch import run_batch

    src = tmp_path / "in"
    groups = _copy_groups(six_groups, src, [0])
    config = _config_file(tmp_path)
    root = tmp_path / "root"
    _, code = run_batch(src, root=root, cfg=load_config(config, use_env=False))
    assert code == 0
    gid = groups[0].group_id
    restored = root / "products" / gid / f"{gid}.restored.fits"
    before = restored.stat().st_mtime_ns
    assert main(["reprocess", gid, "--root", str(root), "--from-stage", "image", "--config", str(config)]) == 0
    assert restored.stat().st_mtime_ns > before
    metrics = _query(root / "state" / "ingest.sqlite3",
                     "SELECT stage FROM performance_metrics WHERE group_id = ? AND replayed = 0", [gid])
    stages = [m["stage"] for m in metrics]
    assert stages.count("flag") == 1 and stages.count("calibrate") == 1 and stages.count("image") == 2
    assert len(_query(root / "state" / "products.sqlite3", "SELECT * FROM images")) == 2
    _assert_products_consistent(root)
    # a stage whose inputs are not stored is refused with the file named
    shutil.rmtree(root / "products" / gid / "cal.zarr")
    assert main(["reprocess", gid, "--root", str(root), "--from-stage", "image", "--config", str(config)]) == 1
    assert main(["reprocess", "2000-01-01T00:00:00", "--root", str(root), "--config", str(config)]) == 1


def _drained_service(tmp_path, six_groups, n: int):
    """A drain-mode service (opened, not run) over the first ``n`` groups; (service, config)."""
    from contimg.service.core import Service

    src = tmp_path / "in"
    _copy_groups(six_groups, src, range(n))
    cfg = load_config(_config_file(tmp_path), use_env=False)
    svc = Service(tmp_path / "root", cfg, mode="drain", install_signal_handlers=False)
    svc.open()
    svc.register_folder(src)
    svc.input_done.set()
    return svc, cfg


def test_at_most_prefetch_plus_one_groups_in_memory(tmp_path, six_groups):
    """Groups' spans from their read to their written products (the slot is held through the
    write and the after-group update) never overlap more than prefetch + 1 deep; and with
    prefetch 1 a group is read only after the group before it has started imaging (its full
    visibilities dropped once Stokes I is formed), never beside its flagging or calibration."""
    svc, cfg = _drained_service(tmp_path, six_groups, 4)
    sub = svc.bus.subscribe(maxsize=10000, types={"stage_timing"})
    assert asyncio.run(svc.run()) == 0
    live, depth, order = set(), 0, []
    while not sub.queue.empty():
        ev = sub.queue.get_nowait()
        order.append((ev.group_id, ev.stage, ev.status))
        if ev.stage == "read" and ev.status == "started":
            live.add(ev.group_id)
        if ev.stage == "write" and ev.status in ("finished", "failed"):
            live.discard(ev.group_id)
        depth = max(depth, len(live))
    assert cfg.service.prefetch == 1 and depth == 2  # the prefetch is used, and bounded
    reads = [g for g, st, status in order if (st, status) == ("read", "started")]
    assert len(reads) == 4
    for before, after in zip(reads, reads[1:]):
        assert order.index((before, "image", "started")) < order.index((after, "read", "started"))


def test_a_crashing_task_is_restarted_and_reported(tmp_path):
    from contimg.service.core import Service

    cfg = load_config("test", use_env=False, overrides={"service": {"restart_backoff_s": 0.05}})
    svc = Service(tmp_path / "root", cfg, mode="drain", install_signal_handlers=False)
    sub = svc.bus.subscribe(maxsize=1000, types={"health", "alert"})
    calls = []

    async def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError(f"boom {len(calls)}")
        svc.input_done.set()

    assert asyncio.run(svc.run(flaky)) == 0
    events = []
    while not sub.queue.empty():
        events.append(sub.queue.get_nowait())
    extra = [(e.state, e.detail) for e in events if e.type == "health" and e.task == "extra0"]
    assert extra[:4] == [("ok", ""), ("degraded", "RuntimeError: boom 1"), ("ok", ""),
                         ("degraded", "RuntimeError: boom 2")]
    assert extra[-1][0] == "stopped" and len(calls) == 3
    assert sum(e.type == "alert" and e.category == "task_restarted" for e in events) == 2


def test_status_and_a_second_service_is_refused(tmp_path, six_groups, capsys):
    from contimg.cli import main
    from contimg.service.batch import run_batch
    from contimg.service.core import Service
    from contimg.state.lock import ServiceLockError

    src = tmp_path / "in"
    groups = _copy_groups(six_groups, src, [0])
    config = _config_file(tmp_path)
    root = tmp_path / "root"
    run_batch(src, root=root, cfg=load_config(config, use_env=False))
    assert main(["status", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "completed 1" in out and groups[0].group_id in out and "not running" in out
    holder = Service(root, load_config(config, use_env=False))
    holder.open()
    try:
        with pytest.raises(ServiceLockError, match=str(os.getpid())):
            Service(root, load_config(config, use_env=False)).open()
    finally:
        holder.close()


def test_low_disk_space_raises_an_alert_and_holds_new_groups(tmp_path):
    import shutil as sh

    from contimg.service.core import Service

    usage = sh.disk_usage(tmp_path)
    free = usage.free / usage.total
    cfg = load_config("test", use_env=False, overrides={"service": {
        "disk_warning_fraction": min(0.999, free + 0.01), "disk_critical_fraction": min(0.998, free + 0.005)}})
    svc = Service(tmp_path / "root", cfg, mode="drain", install_signal_handlers=False)
    (tmp_path / "root").mkdir()
    svc._set_disk_state(sh.disk_usage(tmp_path))
    assert svc.disk_state == "critical"
    alerts = [e for e in svc.bus.recent if e.type == "alert"]
    assert alerts and alerts[-1].category == "disk_space" and alerts[-1].severity == "critical"


def test_a_finished_group_is_freed_without_the_garbage_collector(tmp_path, six_groups):
    """A group's `GroupWork` (its images, its visibilities) is freed by reference counting as
    soon as the service lets go of it, not left to the cyclic garbage collector (which runs
    when it likes: over a real-size backlog each group kept ~0.5 GiB alive in the windows where
    it did not run). With the collector off, no `GroupWork` is left once the run is over."""
    import gc

    from contimg.pipeline.work import GroupWork

    svc, _ = _drained_service(tmp_path, six_groups, 2)
    gc.collect()
    gc.disable()
    try:
        assert asyncio.run(svc.run()) == 0
        left = [o for o in gc.get_objects() if isinstance(o, GroupWork)]
    finally:
        gc.enable()
    assert svc.outcomes and all(o["status"] == "completed" for o in svc.outcomes.values())
    assert left == []


def test_a_written_group_is_not_held_while_the_next_one_images(tmp_path, six_groups, monkeypatch):
    """When a group starts imaging, no `GroupWork` is alive of a group that is done with
    (completed, and out of the writer's after-group update). (The writer's loop
    variable held the last written group, images and all, through the next group's processing:
    0.45 GiB at real size in every window but the first.) Garbage collector off, so that only
    references count."""
    import gc

    from contimg.pipeline.work import GroupWork
    from contimg.service import flow

    svc, _ = _drained_service(tmp_path, six_groups, 4)
    stale: dict[str, set[str]] = {}
    run_stage = flow.run_stage

    def watched(stage, work, cfg):
        if stage == "image":
            live = {o.group_id for o in gc.get_objects() if isinstance(o, GroupWork)}
            writing = svc._current.get("writer")
            done = set(svc.outcomes) - {writing.group_id if writing is not None else None}
            stale[work.group_id] = live & done
        return run_stage(stage, work, cfg)

    monkeypatch.setattr(flow, "run_stage", watched)
    gc.collect()
    gc.disable()
    try:
        assert asyncio.run(svc.run()) == 0
    finally:
        gc.enable()
    assert len(stale) == 4 and all(o["status"] == "completed" for o in svc.outcomes.values())
    assert stale == {gid: set() for gid in stale}


def test_an_idle_worker_keeps_nothing_of_its_last_job():
    """A worker thread waiting for its next job holds no reference to the last one's arguments
    (an idle service's device thread kept the last group, images and all, until the next)."""
    import weakref

    from contimg.service.runtime import Worker

    class Payload:
        pass

    async def main() -> bool:
        worker = Worker("test-worker")
        payload = Payload()
        ref = weakref.ref(payload)
        await worker.run(lambda p: None, payload)
        del payload
        for _ in range(100):  # the thread ends its loop's turn just after the result is handed back
            if ref() is None:
                break
            await asyncio.sleep(0.01)
        worker.close()
        return ref() is None

    assert asyncio.run(main())


def test_the_writer_stores_image_zarr_and_only_then_the_image_checkpoint(tmp_path, six_groups, monkeypatch):
    """The processor's image stage leaves image.zarr to the writer (its checkpoint is still
    calibrate when the stage ends); the write stage stores it, then the checkpoint is image. A
    store that fails fails that group with the path in its reason, the checkpoint stays at
    calibrate (a retry re-images), and the next group completes."""
    from contimg.imaging import storage
    from contimg.pipeline import stages as stages_mod
    from contimg.service import flow

    svc, _ = _drained_service(tmp_path, six_groups, 2)
    seen = {}
    run_stage = flow.run_stage
    first = _groups(six_groups)[0].group_id

    def watched(stage, work, cfg):
        run_stage(stage, work, cfg)
        if stage in ("image", "write"):
            seen[(work.group_id, stage)] = ((work.out_dir / "image.zarr").is_dir(), work.checkpoint)

    save = storage.save_imageset

    def failing_for_the_first(path, imgs, **kw):
        if first in str(path):
            raise OSError(f"{path}: no space left on device")
        return save(path, imgs, **kw)

    monkeypatch.setattr(flow, "run_stage", watched)
    monkeypatch.setattr(stages_mod, "save_imageset", failing_for_the_first)
    assert asyncio.run(svc.run()) == 0  # a failed group does not stop the service
    rows = _ingest_rows(tmp_path / "root")
    second = next(g for g in rows if g != first)
    assert seen[(second, "image")] == (False, "calibrate")
    assert seen[(second, "write")] == (True, "image")
    assert rows[second]["state"] == "completed" and rows[second]["checkpoint"] == "write"  # (done: all stored)
    assert rows[first]["checkpoint"] == "calibrate" and "image.zarr" in rows[first]["error"]
    assert "no space left" in rows[first]["error"] and rows[first]["state"] != "completed"
    assert (first, "write") not in seen and not (tmp_path / "root" / "products" / first / "image.zarr").exists()


def test_diagnostic_plots_are_drawn_off_the_processors_thread(tmp_path, six_groups, monkeypatch):
    """The flag stage's PNGs are drawn in the service's misc worker, not the device thread that
    flags, and recorded in qa_artifacts; a plot that fails is logged and its group completes,
    with its other plots recorded."""
    import threading

    from contimg.pipeline import stages as stages_mod

    svc, _ = _drained_service(tmp_path, six_groups, 2)
    threads = {}
    flags_png, uv_png = stages_mod.flags_png, stages_mod.uv_coverage_png
    first = _groups(six_groups)[0].group_id

    def watched_flags(path, **kw):
        threads.setdefault("flags", set()).add(threading.current_thread().name)
        return flags_png(path, **kw)

    def failing_uv_for_the_first(path, **kw):
        threads.setdefault("uv", set()).add(threading.current_thread().name)
        if first in str(path):
            raise RuntimeError("no uv for you")
        return uv_png(path, **kw)

    monkeypatch.setattr(stages_mod, "flags_png", watched_flags)
    monkeypatch.setattr(stages_mod, "uv_coverage_png", failing_uv_for_the_first)
    assert asyncio.run(svc.run()) == 0
    assert threads == {"flags": {"contimg-misc"}, "uv": {"contimg-misc"}}
    rows = _ingest_rows(tmp_path / "root")
    assert all(r["state"] == "completed" for r in rows.values()) and len(rows) == 2
    arts = _query(tmp_path / "root" / "state" / "products.sqlite3", "SELECT group_id, kind, path FROM qa_artifacts")
    kinds = {(a["group_id"], a["kind"]) for a in arts}
    second = next(g for g in rows if g != first)
    assert {(first, "flags"), (second, "flags"), (second, "uv_coverage")} <= kinds
    assert (first, "uv_coverage") not in kinds
    assert all(Path(a["path"]).read_bytes()[:4] == b"\x89PNG" for a in arts)
