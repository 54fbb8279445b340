"""Batch (`contimg run`) and replay (`contimg replay`): the service's own tasks and stage code,
run until the input is done, then a summary, ``failures.json`` and an exit code (0 every group
completed, 2 some failed, 1 nothing could run). A completed group that failed a QA gate keeps
its products and counts as completed here; `qa_failures` names them (the command line exits 3
when that is all that went wrong)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from contimg.config import Config
from contimg.io.naming import SubbandFile, scan_folder, subband_name
from contimg.service.core import Service

log = logging.getLogger(__name__)

__all__ = ["GroupResult", "qa_failures", "run_batch", "run_file", "run_replay", "replay_schedule"]


@dataclass
class GroupResult:
    group_id: str
    status: str  # "completed" | "failed" | "pending" (not started; error says why)
    stage: str  # the last stage reached
    error: str = ""
    files: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # flagged subbands and their reasons
    calibrator: str = ""
    cal_applied: bool = False
    products: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    image_stats: dict = field(default_factory=dict)
    worker: str = ""  # cluster mode: the Dask worker that ran it
    qa_passed: bool | None = None  # every gate passed (None: QA off or not reached)
    gates: dict = field(default_factory=dict)  # stage → Gate.to_dict()
    note: str = ""


def _result(svc: Service, gid: str) -> GroupResult:
    """This run's outcome for ``gid``, or the databases' record of an earlier run."""
    if gid in svc.outcomes:
        return GroupResult(**svc.outcomes[gid])
    row = svc.ingest.row(gid)
    files = [f["path"] for f in svc.ingest.files(gid) if f["role"] == "member"]
    if row["state"] == "completed":
        img = next((r for r in svc.products.images(gid) if r["type"] == "restored"), None)
        stats = {} if img is None else {"noise_jy": img["noise_jy"], "peak_jy": img["peak_jy"],
                                        "dynamic_range": img["dynamic_range"]}
        return GroupResult(gid, "completed", "done", files=files, image_stats=stats,
                           problems=json.loads(row["problems"] or "[]"),
                           note="completed before; not reprocessed (use contimg reprocess)")
    error = row["error"] or (svc.stop_reason if row["state"] == "pending" else "")
    return GroupResult(gid, row["state"], row["processing_stage"] or "", error or "", files=files)


def _summarise(svc: Service, gids: list[str], root: Path) -> tuple[list[GroupResult], int]:
    results = [_result(svc, gid) for gid in sorted(gids)]
    failed = [r for r in results if r.status != "completed"]
    (root / "failures.json").write_text(json.dumps(
        [{"group_id": r.group_id, "stage": r.stage, "error": r.error, "files": r.files} for r in failed], indent=2))
    (root / "summary.json").write_text(json.dumps([asdict(r) for r in results], indent=2, default=float))
    code = 0 if not failed else (1 if len(failed) == len(results) else 2)
    if svc.exit_code:
        code = 1
    return results, code


def qa_failures(results: list[GroupResult]) -> dict[str, dict[str, list[str]]]:
    """The completed groups that failed a QA gate: group id → {gate (stage) → its reasons}."""
    return {r.group_id: {stage: list(g.get("reasons", [])) for stage, g in r.gates.items() if not g.get("passed", True)}
            for r in results if r.status == "completed" and r.qa_passed is False}


def _nothing(root: Path, in_dir: Path) -> tuple[list[GroupResult], int]:
    log.error("no subband files (YYYY-MM-DDTHH:MM:SS_sbNN.hdf5) in %s", in_dir)
    (root / "failures.json").write_text(json.dumps(
        [{"group_id": None, "stage": "discover", "error": f"no subband files in {in_dir}"}], indent=2))
    return [], 1


def _groups_of(svc: Service, paths: set[str]) -> list[str]:
    return sorted({f["group_id"] for f in svc.ingest.files() if f["path"] in paths})


def run_batch(in_dir: str | Path, *, root: str | Path, cfg: Config, cluster=None,
              web: bool = False) -> tuple[list[GroupResult], int]:
    """Every group in ``in_dir`` as fast as possible (calibrator groups first), through the
    service's reader/processor/writer with prefetch — or, with ``cluster`` (a
    `contimg.pipeline.cluster.ClusterBackend`), as Dask tasks on its workers. Groups completed by an
    earlier run into the same root are not redone; failed ones are tried again. ``web``: serve the
    web view while it runs."""
    root, in_dir = Path(root), Path(in_dir)
    root.mkdir(parents=True, exist_ok=True)
    files = scan_folder(in_dir)
    if not files:
        return _nothing(root, in_dir)
    def queue(svc: Service) -> list[str]:
        svc.register_folder(in_dir)
        gids = _groups_of(svc, {str(f.path) for f in files})
        svc.ingest.requeue_failed(gids)
        return gids

    return _drain(Service(root, cfg, mode="drain", cluster=cluster, web=web or None), queue, root=root, cfg=cfg)


def _drain(svc: Service, queue, *, root: Path, cfg: Config) -> tuple[list[GroupResult], int]:
    """Open ``svc``, let ``queue(svc)`` queue the work and return its group ids, run until they
    are done, and summarise them (`_summarise`)."""
    svc.open()
    try:
        gids = queue(svc)
    except BaseException:
        svc.close()
        raise
    svc.input_done.set()
    asyncio.run(svc.run())
    svc.ingest, svc.products = _reopen(root, cfg)
    try:
        return _summarise(svc, gids, root)
    finally:
        svc.close()


def run_file(path: str | Path, *, root: str | Path, cfg: Config,
             say=log.info) -> tuple[GroupResult, dict | None, int]:
    """One visibility file of any array (UVH5, UVFITS, Measurement Set) through the service's
    own tasks as a file group (`contimg.pipeline.filestages`): queued in the ingest database
    under the file's name, its calibration tables registered, its images in the products
    database, so that `status`, the web view and `export-cal` know it. A file this root processed
    before is processed again from the start: ``say`` is told first what that replaces (its
    products, the products rows, its registered calibration tables), and those are removed, so no
    mixed set is left. Returns (the group's result, its ``summary.json`` or None when it failed,
    the exit code as `run_batch`'s)."""
    from contimg.pipeline.generic import input_kind, safe_name

    root, path = Path(root), Path(path).resolve()
    input_kind(path)  # not a visibility file: refused before anything is queued
    root.mkdir(parents=True, exist_ok=True)
    gid = safe_name(path.name)
    def queue(svc: Service) -> list[str]:
        before = svc.ingest.row(gid)
        if before is not None and before.get("kind") == "file":
            say(_replacing(svc, gid, before))
            _forget(svc, gid)
        svc.ingest.register_observation(path, group_id=gid)
        return [gid]

    results, code = _drain(Service(root, cfg, mode="drain"), queue, root=root, cfg=cfg)
    summary_path = root / "products" / gid / "summary.json"
    summary = json.loads(summary_path.read_text()) if results[0].status == "completed" else None
    return results[0], summary, code


def _replacing(svc: Service, gid: str, row: dict) -> str:
    """What processing file group ``gid`` again replaces, in words."""
    from datetime import datetime, timezone

    when = row.get("finished_at") or row.get("last_update")
    at = datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if when else "an unknown time"
    state = {"completed": f"completed at {at}", "failed": f"failed at {at} in {row.get('processing_stage') or '-'}: "
                                                          f"{row.get('error')}"}.get(row["state"], row["state"])
    images = svc.products.images(gid)
    tables = sorted((r for r in svc.calreg.rows(limit=10_000) if r["set_name"] == gid), key=lambda r: r["apply_order"])
    out_dir = svc.root / "products" / gid
    n_files = sum(1 for p in out_dir.iterdir()) if out_dir.is_dir() else 0
    parts = [f"{len(images)} image{'s' if len(images) != 1 else ''} in the products database",
             f"{n_files} entr{'ies' if n_files != 1 else 'y'} in {out_dir}"]
    if tables:
        parts.append("calibration tables " + ", ".join(f"{r['cal_type']} ({r['status']}, {r['path']})" for r in tables))
    return f"{gid}: processed in this root before ({state}); processing it again replaces " + "; ".join(parts)


def _forget(svc: Service, gid: str) -> None:
    """Remove file group ``gid``'s products, product rows, registry rows and its tables under
    this root (only there: a row's path elsewhere is not this root's to delete)."""
    svc.calreg.forget(gid)
    for path in (svc.root / "cal" / f"{gid}.zarr", svc.root / "cal" / "gains" / f"{gid}.zarr",
                 svc.root / "products" / gid):
        shutil.rmtree(path, ignore_errors=True)
    svc.products.forget_group(gid)


def _reopen(root: Path, cfg: Config):
    from contimg.state.ingest import IngestDB
    from contimg.state.products import ProductsDB

    return (IngestDB(root / "state" / "ingest.sqlite3", n_subbands=cfg.grouping.n_subbands,
                     tolerance_s=cfg.grouping.group_tolerance_s), ProductsDB(root / "state" / "products.sqlite3"))


def replay_schedule(files: list[SubbandFile], *, speed: float) -> list[tuple[float, SubbandFile]]:
    """(seconds after the start, file) for every file: the files' own timestamps (jitter and
    order kept) compressed by ``speed``; equal timestamps keep their name order."""
    files = sorted(files, key=lambda f: (f.timestamp, f.path.name))
    t0 = files[0].timestamp
    return [((f.timestamp - t0).total_seconds() / speed, f) for f in files]


def _deliver(src: Path, dest_dir: Path, name: str, incomplete_name: str) -> Path:
    """``src`` into ``dest_dir`` as ``incomplete_name``, then renamed to ``name``: a hard link
    where both are on one file system (a replay of archived files takes no second copy of
    them: 2 GB a real-size group), a copy otherwise."""
    tmp = dest_dir / incomplete_name
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    final = dest_dir / name
    os.replace(tmp, final)
    return final


def run_replay(in_dir: str | Path, *, root: str | Path, cfg: Config, speed: float, web: bool = False,
               keep_serving: bool = False, on_web=None) -> tuple[list[GroupResult], int]:
    """Feed ``in_dir``'s files into ``<root>/<incoming_dir>`` at ``speed``× their real cadence
    (written as ``_incomplete``, then renamed, as the correlator does) while the service watches
    that folder; stop when every fed group is done — or, with ``keep_serving``, go on serving
    (and watching) until SIGTERM/Ctrl-C. ``web`` serves the web view; ``on_web(url)`` is called
    once it is up."""
    root, in_dir = Path(root), Path(in_dir)
    root.mkdir(parents=True, exist_ok=True)
    files = scan_folder(in_dir)
    if not files:
        return _nothing(root, in_dir)
    incoming = Path(cfg.service.incoming_dir)
    incoming = incoming if incoming.is_absolute() else root / incoming
    incoming.mkdir(parents=True, exist_ok=True)
    schedule = replay_schedule(files, speed=speed)
    svc = Service(root, cfg, mode="serve" if keep_serving else "drain", watch_dir=incoming, timeout_scale=speed,
                  web=web)
    delivered: set[str] = set()

    async def feeder():
        loop = asyncio.get_running_loop()
        if web and on_web is not None:
            while svc.web_port is None and not svc.stopping.is_set():
                await svc._sleep(0.05)
            if svc.web_port is not None:
                on_web(f"http://{cfg.web.host}:{svc.web_port}/")
        start = loop.time()
        for due, f in schedule:
            wait = start + due - loop.time()
            if wait > 0:
                await svc._sleep(wait)
            if svc.stopping.is_set():
                return
            final = await svc.workers["misc"].run(_deliver, f.path, incoming, f.path.name,
                                        subband_name(f.timestamp, f.subband, incomplete=True))
            delivered.add(str(final))
        log.info("replay: all %d files delivered; waiting for the watcher", len(schedule))
        while not svc.stopping.is_set():
            have = {r["path"] for r in svc.ingest.files()}
            if delivered <= have:
                break
            await svc._sleep(0.1)
        svc.input_done.set()

    asyncio.run(svc.run(replay_feeder=feeder))
    svc.ingest, svc.products = _reopen(root, cfg)
    try:
        gids = _groups_of(svc, delivered)
        if not gids:
            return _nothing(root, in_dir)
        return _summarise(svc, gids, root)
    finally:
        svc.close()

