"""Reprocessing on a local Dask cluster of 2 worker processes against the single-process batch:
the same products bit for bit, the same failures, every group exactly once when a worker is
killed in the middle of a group."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from contimg.config import load_config

pytest.importorskip("distributed")


def _config(**image):
    # one gridding thread: ducc0 with several threads sums in a different order each run (float32
    # results differ in the last bit, even between two single-process runs), one is deterministic
    return load_config("test", use_env=False, overrides={
        "simulate": {"n_times": 5, "group_interval_s": 75.0, "n_faint_sources": 10},
        "image": {"npix": 256, "cell_arcsec": 20.0, "niter": 50, "products": ["dirty", "restored"], **image},
        "runtime": {"nthreads": 1}, "qa": {"plots": False}})


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """8 small groups; the last one lost 9 of its 16 subbands (it must fail, naming why)."""
    from contimg.sim import simulate

    out = tmp_path_factory.mktemp("cluster") / "in"
    groups = simulate(out, n_groups=8, cfg=_config().simulate)
    for path in sorted(groups[-1].files)[:9]:
        Path(path).unlink()
    return out, groups


def _db_counts(root: Path) -> dict:
    from contimg.state.ingest import IngestDB

    db = IngestDB(root / "state" / "ingest.sqlite3", n_subbands=16, tolerance_s=60)
    try:
        writes = dict(db.db.execute("SELECT group_id, COUNT(*) FROM performance_metrics WHERE stage = 'write' "
                                    "GROUP BY group_id").fetchall())
        states = dict(db.db.execute("SELECT group_id, state FROM ingest_queue").fetchall())
    finally:
        db.close()
    return {"writes": writes, "states": states}


def test_two_workers_give_the_single_process_products_bit_for_bit(archive, tmp_path):
    from contimg.pipeline.cluster import ClusterBackend
    from contimg.service.batch import run_batch

    src, groups = archive
    cfg = _config()
    single, code1 = run_batch(src, root=tmp_path / "single", cfg=cfg)
    dask, code2 = run_batch(src, root=tmp_path / "dask", cfg=cfg, cluster=ClusterBackend(n_workers=2, cfg=cfg))
    assert code1 == code2 == 2  # the broken group fails in both
    assert [(r.group_id, r.status, r.stage, r.error) for r in single] == \
           [(r.group_id, r.status, r.stage, r.error) for r in dask]
    assert [r.status for r in dask] == ["completed"] * 7 + ["failed"]
    assert "only 7 usable subbands" in dask[-1].error
    assert json.loads((tmp_path / "single" / "failures.json").read_text()) == \
           json.loads((tmp_path / "dask" / "failures.json").read_text().replace(str(tmp_path / "dask"),
                                                                                  str(tmp_path / "single")))
    assert len({r.worker for r in dask if r.status == "completed"}) == 2  # both workers had groups
    for a, b in zip(single, dask):
        assert [Path(p).name for p in a.products] == [Path(p).name for p in b.products]
        for pa, pb in zip(a.products, b.products):
            assert np.array_equal(fits.getdata(pa), fits.getdata(pb)), (pa, pb)
        if a.status == "completed":
            assert a.calibrator == b.calibrator and a.cal_applied == b.cal_applied
    counts = _db_counts(tmp_path / "dask")
    assert all(n == 1 for n in counts["writes"].values()) and len(counts["writes"]) == 7
    health = json.loads((tmp_path / "dask" / "state" / "health.json").read_text())
    assert len(health["cluster"]["workers"]) == 2 and health["cluster"]["completed_last_hour"] == 7
    # back-pressure: never more than workers × max(prefetch, 1) groups in flight, and that many used
    assert health["cluster"]["max_in_flight"] == health["cluster"]["capacity"] == 2 * max(cfg.service.prefetch, 1)
    from contimg.state.status import format_status, status_report

    assert "2 workers" in format_status(status_report(tmp_path / "dask"))


def test_a_killed_worker_loses_no_group(archive, tmp_path):
    """SIGKILL the worker process running a group: Dask reruns it elsewhere; every good group
    completes exactly once, with one row each."""
    from distributed import Client, LocalCluster

    from contimg.pipeline.cluster import ClusterBackend
    from contimg.service.batch import run_batch

    src, groups = archive
    cfg = _config(npix=1024, cell_arcsec=5.0, niter=3000)  # a few seconds a group: time to kill one
    killed = {}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:

        def killer():
            deadline = time.time() + 120
            while time.time() < deadline and not killed:
                for addr, keys in client.processing().items():
                    if any(str(k).startswith("group-") for k in keys):
                        time.sleep(1.0)  # well into the group
                        pid = client.run(os.getpid, workers=[addr])[addr]
                        os.kill(pid, signal.SIGKILL)
                        killed.update(pid=pid, keys=[str(k) for k in keys])
                        return
                time.sleep(0.05)

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        results, code = run_batch(src, root=tmp_path / "root", cfg=cfg,
                                  cluster=ClusterBackend(address=cluster.scheduler_address, cfg=cfg))
        thread.join(5)
    assert killed, "no group was seen running on a worker"
    assert code == 2 and [r.status for r in results] == ["completed"] * 7 + ["failed"]
    assert all(f"pid {killed['pid']})" not in r.worker for r in results)  # the killed worker returned nothing
    counts = _db_counts(tmp_path / "root")
    assert counts["writes"] == {g.group_id: 1 for g in groups[:7]}
    assert set(counts["states"].values()) == {"completed", "failed"}
    for r in results[:7]:
        for path in r.products:
            with fits.open(path) as hdul:
                assert np.isfinite(hdul[0].data).any()


def test_cluster_needs_an_address_or_workers_with_the_resources():
    import asyncio

    from distributed import LocalCluster

    from contimg.pipeline.cluster import ClusterBackend, ClusterError

    with pytest.raises(ValueError, match="scheduler address or a number of local workers"):
        ClusterBackend(cfg=_config())
    cfg = _config().model_validate({**_config().model_dump(), "cluster": {"worker_resources": {"GPU": 1}}})
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        backend = ClusterBackend(address=cluster.scheduler_address, cfg=cfg)

        async def start():
            try:
                await backend.start()
            finally:
                await backend.close()

        with pytest.raises(ClusterError, match="no worker offers them"):
            asyncio.run(start())


def test_run_command_refuses_an_unreachable_scheduler(archive, tmp_path, capsys):
    from contimg.cli import main

    src, _ = archive
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text('base = "test"\n[cluster]\nconnect_timeout_s = 2.0\n')
    assert main(["run", str(src), "--root", str(tmp_path / "root"), "--config", str(cfg_path),
                 "--cluster", "tcp://127.0.0.1:9"]) == 1
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in capsys.readouterr().err
    from contimg.state.lock import RootLock

    lock = RootLock(tmp_path / "root")
    lock.acquire()  # the failed run let go of the root (raises ServiceLockError if it had not)
    lock.release()


def test_run_command_with_workers(archive, tmp_path, capsys):
    from contimg.cli import main

    src, groups = archive
    good = tmp_path / "in"
    good.mkdir()
    for path in groups[0].files:
        shutil.copy(path, good / Path(path).name)
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text('base = "test"\n[image]\nnpix = 256\ncell_arcsec = 20.0\nniter = 50\n'
                        'products = ["restored"]\n[runtime]\nnthreads = 1\n'
                        '[cluster]\nworker_resources = {GPU = 1}\n')  # tasks need the resource the workers offer
    assert main(["run", str(good), "--root", str(tmp_path / "root"), "--config", str(cfg_path), "--workers", "1"]) == 0
    assert "completed" in capsys.readouterr().out
