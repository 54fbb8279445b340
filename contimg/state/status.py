"""`contimg status`: the queue, the service's health, the latest products and the registered
calibration tables, from the files the service keeps under ``<root>/state`` (read-only; works
whether or not the service runs)."""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import sqlite_utils

__all__ = ["status_report", "format_status"]

STAGES = ("read", "flag", "calibrate", "image", "write")  # the pipeline's stages (contimg.pipeline.work)
MODES = {"serve": "always-on (watching the incoming folder)", "drain": "batch (stops when the queue is empty)"}
TASKS = {"drain": "stop-when-empty", "replay_feeder": "replay-feeder"}  # task names that are not words an operator knows


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _rows(path: Path, table: str, sql: str, args: list) -> list[dict]:
    """The rows of ``sql`` in the database at ``path`` ([] when it or its ``table`` does not exist yet)."""
    if not path.exists():
        return []
    db = sqlite_utils.Database(path)
    try:
        return list(db.query(sql, args)) if table in db.table_names() else []
    finally:
        db.close()


def status_report(root: Path, *, n_recent: int = 5) -> dict:
    """Everything `contimg status` prints, as one JSON-able dict. Raises FileNotFoundError
    (creating nothing) when ``root`` holds no ``state`` folder."""
    state = Path(root) / "state"
    if not state.is_dir():
        raise FileNotFoundError(f"no contimg root at {root} (no {state})")
    doc: dict = {"root": str(root), "service": None, "config": None, "queue": {}, "in_progress": [], "pending": [],
                 "recent_failures": [], "stage_median_s": {}, "pauses_max_ms": {}, "latest_images": [],
                 "caltables": []}
    config_path = state / "config.json"
    if config_path.is_file():
        doc["config"] = {"name": json.loads(config_path.read_text()).get("name"), "path": str(config_path)}
    health_path = state / "health.json"
    if health_path.exists():
        health = json.loads(health_path.read_text())
        health["alive"] = _pid_alive(health["pid"]) and not health.get("stopping", False)
        health["age_s"] = round(time.time() - health["updated_at"], 1)
        doc["service"] = health
    ingest_path = state / "ingest.sqlite3"
    if ingest_path.exists():
        db = sqlite_utils.Database(ingest_path)
        doc["queue"] = {r["state"]: r["n"] for r in db.query(
            "SELECT state, count(*) AS n FROM ingest_queue GROUP BY state")}
        doc["in_progress"] = list(db.query(
            "SELECT group_id, processing_stage, checkpoint, retry_count, started_at FROM ingest_queue "
            "WHERE state = 'in_progress' ORDER BY start_unix"))
        doc["pending"] = list(db.query(
            "SELECT group_id, present_subbands, expected_subbands, retry_count, checkpoint, error FROM ingest_queue "
            "WHERE state IN ('pending', 'collecting') ORDER BY start_unix LIMIT ?", [n_recent]))
        doc["recent_failures"] = list(db.query(
            "SELECT group_id, processing_stage, error, finished_at FROM ingest_queue WHERE state = 'failed' "
            "ORDER BY finished_at DESC LIMIT ?", [n_recent]))
        by_stage: dict[str, list[float]] = {}
        for r in db.query("SELECT stage, seconds FROM performance_metrics ORDER BY id DESC LIMIT 500"):
            by_stage.setdefault(r["stage"], []).append(r["seconds"])
        # per group: the stages' seconds, and the longest event-loop delay and garbage collection
        doc["stage_median_s"] = {k: round(statistics.median(by_stage[k]), 3) for k in STAGES if k in by_stage}
        if by_stage.get("catalogue_mosaic"):  # what the service runs after each group
            doc["after_group_median_s"] = round(statistics.median(by_stage["catalogue_mosaic"]), 3)
        doc["pauses_max_ms"] = {label: round(1e3 * max(by_stage[k]), 1) for label, k in
                                (("event_loop_delay", "loop_lag_max"), ("garbage_collection", "gc_max"))
                                if by_stage.get(k)}
        db.close()
    doc["latest_images"] = _rows(state / "products.sqlite3", "images",
                                 "SELECT group_id, path, noise_jy, peak_jy, dynamic_range, bmaj_arcsec, bmin_arcsec "
                                 "FROM images WHERE type = 'restored' ORDER BY group_id DESC LIMIT ?", [n_recent])
    doc["caltables"] = _rows(state / "cal_registry.sqlite3", "caltables",
                             "SELECT set_name, cal_type, status, calibrator, refant, mid_mjd, valid_start_mjd, "
                             "valid_end_mjd FROM caltables ORDER BY mid_mjd DESC, created_at DESC LIMIT ?", [n_recent])
    return doc


def format_status(doc: dict) -> str:
    lines = [f"contimg status — {doc['root']}"]
    svc = doc["service"]
    if svc is None:
        lines.append("service: never ran here")
    else:
        running = "running" if svc["alive"] else "not running"
        lines.append(f"service: {running} (pid {svc['pid']}, {MODES.get(svc['mode'], svc['mode'])}, "
                     f"health updated {svc['age_s']} s ago, backend {svc['backend']}, disk {svc['disk']})")
        if svc.get("backends"):
            lines.append("  stages on: " + ", ".join(f"{stage} {c['backend']} ({c['reason']})"
                                                     for stage, c in svc["backends"].items()))
            for stage, c in svc["backends"].items():  # the self-checks' figures, passed or not
                if c.get("figures"):
                    lines.append(f"    {stage} self-check ({c.get('seconds', 0):.1f} s): " + ", ".join(
                        f"{name} {f['value']:.3g} {'≤' if f['ok'] else '>'} {f['limit']:.3g}"
                        for name, f in c["figures"].items()))
        lines.append("  tasks: " + ", ".join(f"{TASKS.get(k, k)} {v}" for k, v in sorted(svc["health"].items())))
        lines.append(f"  queues: {', '.join(f'{k} {v}' for k, v in svc['queues'].items())}  event-loop delay (p99) {svc['loop_lag_ms']['p99']:.1f} ms, "
                     f"(max) {svc['loop_lag_ms']['max']:.1f} ms  garbage-collection pause (max) "
                     f"{svc.get('gc_max_ms', 0):.0f} ms  memory {(svc['rss_bytes'] or 0) / 2**30:.2f} GiB")
        cl = svc.get("cluster")
        if cl:
            lines.append(f"  cluster {cl['scheduler']}: {len(cl['workers'])} workers "
                         f"({', '.join(w['name'] for w in cl['workers'])}), {len(cl['in_flight'])} groups in flight, "
                         f"{cl['completed_last_hour']} completed in the last hour")
    if doc.get("config"):
        lines.append(f"configuration: {doc['config']['name']} ({doc['config']['path']})")
    q = doc["queue"]
    lines.append("queue: " + (", ".join(f"{k} {v}" for k, v in sorted(q.items())) or "empty"))
    for r in doc["in_progress"]:
        lines.append(f"  in progress  {r['group_id']}  stage {r['processing_stage']}  "
                     f"checkpoint {r['checkpoint'] or '-'}  attempt {r['retry_count'] + 1}")
    for r in doc["pending"]:
        lines.append(f"  waiting      {r['group_id']}  {r['present_subbands']}/{r['expected_subbands']} subbands"
                     + (f"  ({r['error']})" if r["error"] else ""))
    for r in doc["recent_failures"]:
        lines.append(f"  failed       {r['group_id']}  {r['processing_stage'] or '-'}: {r['error']}")
    if doc["stage_median_s"]:
        lines.append("median stage time: " + ", ".join(f"{k} {v:.2f} s" for k, v in doc["stage_median_s"].items()))
    if doc.get("after_group_median_s") is not None:
        lines.append(f"after each group: catalogue and mosaic update {doc['after_group_median_s']:.2f} s (median)")
    pauses = doc.get("pauses_max_ms", {})
    if pauses:
        words = {"event_loop_delay": "event-loop delay (max)", "garbage_collection": "garbage-collection pause (max)"}
        lines.append("while groups ran: " + ", ".join(f"{words[k]} {v:.0f} ms" for k, v in pauses.items()))
    for r in doc["latest_images"]:
        lines.append(f"  image {r['group_id']}  rms {r['noise_jy'] * 1e3:.2f} mJy  peak {r['peak_jy']:.3f} Jy  "
                     f"DR {r['dynamic_range']:.0f}  beam {r['bmaj_arcsec']:.1f}\" x {r['bmin_arcsec']:.1f}\"  "
                     f"{r['path']}")
    for r in doc.get("caltables", []):
        lines.append(f"  caltable {r['set_name']}  {r['cal_type']}  {r['status']:10s}  on {r['calibrator']}  "
                     f"refant {r['refant']}  valid MJD {r['valid_start_mjd']:.4f} - {r['valid_end_mjd']:.4f}")
    return "\n".join(lines)
