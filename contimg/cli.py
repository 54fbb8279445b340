"""The ``contimg`` command line: simulate, run, serve, replay, reprocess, status, demo."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import threading
import tempfile
import time
from pathlib import Path

__all__ = ["main"]

log = logging.getLogger("contimg")


EXIT_CODES = """exit codes:
  0  every group completed and passed its QA gates
  1  nothing could run (bad input or configuration, no subband files, every group failed)
  2  some groups failed (<root>/failures.json); for one file: a field could not be imaged
  3  every group completed, but some failed a QA gate (named in the summary; products are kept)"""


CONFIG_HELP = ("packaged config name (dsa110, quick, test) or TOML path (default: the configuration stored in the "
               "root by the command that processed it, else dsa110)")


class RootError(Exception):
    """``--root`` is not a folder contimg can use."""


def _root_to_write(root: str | Path) -> Path:
    """``--root`` of a command that writes there; refused when it, its ``state`` or a folder on
    its way is a file."""
    root = Path(root)
    for path in (root / "state", root, *root.parents):
        if path.exists() and not path.is_dir():
            where = f"--root {root}" if path == root else f"--root {root}: {path}"
            raise RootError(f"{where} is a file, not a folder")
    return root


def _existing_root(root: str | Path) -> Path:
    """``--root`` of a command that only reads it: a root that contimg processed (it has a
    ``state`` folder). Nothing is created when it is not."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise RootError(f"--root {root} is a file, not a folder")
    if not (root / "state").is_dir():
        raise RootError(f"no contimg root at {root} (no {root / 'state'})")
    return root


def _config(args, *, root: Path | None = None, default: str = "dsa110"):
    """The configuration a command runs with: ``--config`` when given; else, on a root that
    stored one (`contimg.state.rootconfig`), that one (said on stderr); else ``default``.
    ``reprocess`` refuses a ``--config`` that differs from the stored one unless ``--force-config``."""
    from contimg.config import ConfigError, config_from_dict, load_config
    from contimg.offline import use_iers_a_file
    from contimg.state.rootconfig import config_differences, config_path, stored_config

    try:
        raw = stored_config(root) if root is not None else None
    except ValueError as exc:  # not JSON: say which file, not a traceback
        raise ConfigError(f"{config_path(root)}: not a stored configuration ({exc}); give --config") from None
    stored = config_from_dict(raw, where=str(config_path(root))) if raw is not None else None
    if getattr(args, "config", None) is not None:
        cfg = load_config(args.config)
        if args.command == "reprocess" and stored is not None and not args.force_config:
            diff = config_differences(stored.model_dump(mode="json"), cfg.model_dump(mode="json"))
            if diff:
                raise ConfigError(f"--config {args.config} differs from the configuration {root} was processed with "
                                  f"({config_path(root)}): {'; '.join(diff)}. Leave out --config to use the stored "
                                  f"one, or add --force-config to reprocess with {args.config} anyway")
    elif stored is not None:
        print(f"contimg: using the configuration stored in {config_path(root)} ({stored.name})", file=sys.stderr)
        cfg = stored
    else:
        if root is not None and (root / "state").is_dir():  # a root processed before configurations were stored
            print(f"contimg: no configuration stored in {config_path(root)}; using {default} (give --config)",
                  file=sys.stderr)
        cfg = load_config(default)
    if cfg.astropy.iers_a_file:
        use_iers_a_file(cfg.astropy.iers_a_file)
    return cfg


def _remember_config(root: Path, cfg) -> None:
    """Store ``cfg`` as ``root``'s configuration (a processing command starts on it), with a
    warning when it replaces a different one; not while another service holds the root."""
    from contimg.state.lock import service_running
    from contimg.state.rootconfig import config_differences, config_path, store_config, stored_config

    if service_running(root):
        return  # the command is refused at the lock; the running service's configuration stays
    before = stored_config(root)
    if before is not None:
        diff = config_differences(before, cfg.model_dump(mode="json"))
        if diff:
            log.warning("%s: replacing the stored configuration (%s) with this command's (%s): %s",
                        config_path(root), before.get("name"), cfg.name, "; ".join(diff))
    store_config(root, cfg)


def _cmd_simulate(args) -> int:
    from contimg.sim import simulate

    cfg = _config(args)
    sim_cfg = cfg.simulate
    updates = {k: v for k, v in {"seed": args.seed, "n_antennas": args.antennas,
                                 "chans_per_subband": args.chans_per_subband, "n_times": args.times}.items()
               if v is not None}
    if args.no_rfi:
        updates["rfi"] = False
    if updates:
        sim_cfg = sim_cfg.model_validate({**sim_cfg.model_dump(), **updates})
    t0 = time.perf_counter()
    groups = simulate(args.out, n_groups=args.groups, cfg=sim_cfg)
    print(f"simulated {len(groups)} group(s) into {args.out} in {time.perf_counter() - t0:.1f} s "
          f"(truth: {Path(args.out) / 'truth.h5'})")
    return 0


def _print_summary(results, root: Path, code: int) -> int:
    """Print one line per group, the QA gates that failed, where the products are; returns the
    exit code: ``code`` (0/1/2 of `run_batch`), or 3 when every group completed but some failed
    a QA gate."""
    from contimg.service.batch import qa_failures

    qa = qa_failures(results)
    for r in results:
        line = f"  {r.group_id}  {r.status:9s}"
        if r.status == "completed" and r.note:
            line += f"  {r.note}"
        elif r.status == "completed":
            st = r.image_stats
            line += (f"  cal={'yes (' + r.calibrator + ')' if r.cal_applied else 'no'}"
                     f"  rms={st['noise_jy'] * 1e3:.2f} mJy  peak={st['peak_jy']:.3f} Jy  "
                     f"time={sum(r.timings_s.values()):.1f} s")
            if r.group_id in qa:
                line += "  QA FAILED: " + "; ".join(f"{gate} gate ({', '.join(why) or 'failed'})"
                                                    for gate, why in qa[r.group_id].items())
        else:
            line += f"  stage={r.stage}  {r.error}"
        print(line)
    if qa:
        print(f"QA: {len(qa)} of {len(results)} group(s) failed a gate: "
              + ", ".join(f"{gid} ({', '.join(gates)})" for gid, gates in qa.items()))
    print(f"products: {root / 'products'}  database: {root / 'state' / 'products.sqlite3'}")
    return 3 if code == 0 and qa else code


def _cmd_run_file(args, cfg) -> int:
    """One file of any array as a file group through the service's tasks (`run_file`):
    products and summary.json under the root, its tables in the registry."""
    from contimg.service.batch import run_file

    result, s, code = run_file(Path(args.input), root=Path(args.root), cfg=cfg, say=print)
    if s is None:
        print(f"contimg: {args.input}: failed in stage {result.stage}: {result.error}", file=sys.stderr)
        print(f"failures: {Path(args.root) / 'failures.json'}")
        return code
    cal = s["calibration"]
    print(f"{s['input']}: {s['telescope']}, {s['rows']} rows, {s['channels']} channels, {s['scans']} scans, "
          f"{s['flagged_fraction']:.1%} flagged")
    if cal:
        print(f"  calibrated: bandpass on {cal['bandpass_field']}, flux scale from "
              f"{cal['flux_standard'] or 'the calibrator list'}, refant {cal['refant']}")
        for name, f in cal["transferred_fluxes"].items():
            print(f"  {name}: {f['flux_jy']:.4f} +/- {f['flux_err_jy']:.4f} Jy (transferred, {f['n']} ratios)")
    for problem in (cal or {}).get("problems", []):
        print(f"  problem: {problem}")
    failed = [name for name, f in s["fields"].items() if "error" in f]
    for name, f in s["fields"].items():
        if "error" in f:
            print(f"  field {name}: NOT imaged: {f['error']}")
            continue
        print(f"  field {name}{' (calibrator ' + f['calibrator'] + ')' if f['calibrator'] else ''}: "
              f"peak {f['peak_jy']:.4g} Jy/beam, noise {f['noise_jy']:.3g} Jy/beam, beam "
              f"{f['beam_arcsec'][0]:.1f}\" x {f['beam_arcsec'][1]:.1f}\"")
    for t in (cal or {}).get("registered", []):
        print(f"  calibration table {t['cal_type']} {t['status']}: {t['path']}")
    print(f"products: {Path(args.root) / 'products' / s['group_id']}  database: "
          f"{Path(args.root) / 'state' / 'products.sqlite3'}")
    return 2 if failed else 0  # as for a folder: 2 = something failed, the rest is done


def _cmd_run(args) -> int:
    from contimg.pipeline.generic import is_single_file
    from contimg.service.batch import run_batch

    root = _root_to_write(args.root)
    cfg = _config(args, root=root)
    if not Path(args.input).exists():
        raise FileNotFoundError(f"{args.input}: no such file or folder")
    if Path(args.input).is_file() or is_single_file(Path(args.input)):
        if args.cluster or args.workers or args.web:
            raise ValueError("run: --cluster, --workers and --web are for folders of subband files, not one file")
        _remember_config(root, cfg)
        return _cmd_run_file(args, cfg)
    _remember_config(root, cfg)
    cluster = None
    if args.cluster or args.workers:
        from contimg.pipeline.cluster import ClusterBackend

        cluster = ClusterBackend(address=args.cluster, n_workers=args.workers, cfg=cfg)
    results, code = run_batch(args.input, root=root, cfg=cfg, cluster=cluster, web=args.web)
    exit_code = _print_summary(results, root, code)
    if code:
        print(f"failures: {root / 'failures.json'}")
    return exit_code


def _incoming(cfg, root: Path) -> Path:
    folder = Path(cfg.service.incoming_dir)
    return folder if folder.is_absolute() else root / folder


def _cmd_serve(args) -> int:
    import asyncio

    from contimg.service.core import Service

    root = _root_to_write(args.root)
    cfg = _config(args, root=root)
    _remember_config(root, cfg)
    svc = Service(root, cfg, mode="serve", watch_dir=_incoming(cfg, root))
    print(f"contimg serve: watching {_incoming(cfg, root)}; state in {root / 'state'}; SIGTERM or Ctrl-C stops")
    return asyncio.run(svc.run())


def _cmd_replay(args) -> int:
    from contimg.service.batch import run_replay

    root = _root_to_write(args.root)
    cfg = _config(args, root=root)
    if args.port is not None:
        cfg = cfg.model_validate({**cfg.model_dump(), "web": {**cfg.web.model_dump(), "port": args.port}})
    _remember_config(root, cfg)
    results, code = run_replay(args.input, root=root, cfg=cfg, speed=args.speed, web=args.web,
                               on_web=lambda url: print(f"web view: {url}", flush=True))
    exit_code = _print_summary(results, root, code)
    if code:
        print(f"failures: {root / 'failures.json'}")
    return exit_code


def _cmd_reprocess(args) -> int:
    import asyncio

    from contimg.state.ingest import IngestDB
    from contimg.service.core import Service
    from contimg.state.lock import service_running
    from contimg.pipeline.stages import reprocess_checkpoint

    root = _existing_root(args.root)
    cfg = _config(args, root=root)
    db_path = root / "state" / "ingest.sqlite3"
    if not db_path.exists():
        raise FileNotFoundError(f"{db_path} does not exist: nothing was processed under {root}")
    checkpoint = reprocess_checkpoint(root / "products" / args.group, args.from_stage)
    ingest = IngestDB(db_path, n_subbands=cfg.grouping.n_subbands, tolerance_s=cfg.grouping.group_tolerance_s)
    try:
        ingest.request_reprocess(args.group, checkpoint=checkpoint)
    except KeyError as exc:
        raise FileNotFoundError(str(exc.args[0])) from None
    finally:
        ingest.close()
    if service_running(root):
        print(f"group {args.group} queued for the running service (from stage {args.from_stage})")
        return 0
    svc = Service(root, cfg, mode="drain")
    svc.input_done.set()
    code = asyncio.run(svc.run())
    outcome = svc.outcomes.get(args.group, {"status": "not run", "error": ""})
    failed_gates = [stage for stage, g in outcome.get("gates", {}).items() if not g.get("passed", True)]
    print(f"  {args.group}  {outcome['status']}  {outcome.get('error', '')}"
          + (f"  QA FAILED: {', '.join(failed_gates)} gate" if failed_gates else ""))
    return code or (2 if outcome["status"] != "completed" else 3 if failed_gates else 0)


def _cmd_status(args) -> int:
    from contimg.state.status import status_report

    doc = status_report(_existing_root(args.root))
    if args.json:
        print(json.dumps(doc, indent=1, default=str))
    else:
        from contimg.state.status import format_status

        print(format_status(doc))
    return 0


def _cmd_export_ms(args) -> int:
    from contimg.pipeline.exports import export_ms

    root = _existing_root(args.root)
    cfg = _config(args, root=root)
    path = export_ms(args.group, root=root, out=Path(args.out), cfg=cfg, phasing=args.phasing)
    print(f"{path}")
    return 0


def _cmd_export_uv(args) -> int:
    from contimg.pipeline.exports import export_calibrated

    root = _existing_root(args.root)
    print(export_calibrated(args.group, root=root, out=Path(args.out), cfg=_config(args, root=root)))
    return 0


def _cmd_export_cal(args) -> int:
    from contimg.interop.caltable import (CALTABLE_SUFFIXES, UVCAL_SUFFIXES, stored_solution, stored_time_gains,
                                          write_casa_caltable, write_uvcal)

    out = Path(args.out)
    if out.suffix not in CALTABLE_SUFFIXES + UVCAL_SUFFIXES:
        raise ValueError(f"{out}: the name must end in one of {', '.join(CALTABLE_SUFFIXES + UVCAL_SUFFIXES)}")
    root = _existing_root(args.root)
    sol, _ = stored_solution(args.group, root=root)
    per_time = stored_time_gains(args.group, root=root)  # the calibrator group's own time gains
    if out.suffix in CALTABLE_SUFFIXES:
        path = write_casa_caltable(out, sol=sol, ms=Path(args.ms) if args.ms else None, time_gains=per_time)
    else:
        path = write_uvcal(out, sol=sol, time_gains=per_time)
    print(f"{path}")
    return 0


def _lightcurve_points(root: Path, db_path: Path, source: list[str]) -> tuple[str, list[dict]]:
    """(the source's name, its measurements in time order) for ``source``: a name of the
    pipeline's own catalogue, else of the external catalogue's photometry, or "RA DEC" in
    degrees (the nearest own-catalogue source within 60"). FileNotFoundError naming what was
    looked for when there is none."""
    from contimg.pipeline.catalogue import catalogue_lightcurve
    from contimg.state.products import ProductsDB

    keys = ("group_id", "mid_mjd", "flux_jy", "err_jy", "noise_jy", "pb", "catalogue_flux_jy", "freq_hz")
    if len(source) == 2:
        try:
            ra, dec = float(source[0]), float(source[1])
        except ValueError:
            raise ValueError(f"lightcurve: {' '.join(source)!r}: give one catalogue name, or RA DEC in degrees") from None
        where = {"ra_deg": ra, "dec_deg": dec}
    elif len(source) == 1:
        where = {"name": source[0]}
    else:
        raise ValueError("lightcurve: give one catalogue name, or RA DEC in degrees")
    try:
        src, rows = catalogue_lightcurve(root, **where)
    except KeyError:
        src, rows = None, []
    if rows:
        return src["name"], [{"group_id": r["image"], **{k: r.get(k) for k in keys[1:]}} for r in rows]
    if "name" in where:  # an external catalogue's source (the QA stage's photometry)
        db = ProductsDB(db_path)
        try:
            ext = db.lightcurve(where["name"])
        finally:
            db.close()
        if ext:
            return where["name"], [{k: r[k] for k in keys} for r in ext]
    what = where.get("name") or f"RA {where['ra_deg']} Dec {where['dec_deg']} (within 60\")"
    raise FileNotFoundError(f"no measurements of {what} in {db_path} (the pipeline's catalogue and the external "
                            "catalogue's photometry)")


def _cmd_lightcurve(args) -> int:
    from contimg.qa.photometry import variability, write_lightcurve

    root = _existing_root(args.root)
    db_path = root / "state" / "products.sqlite3"
    if not db_path.is_file():
        print(f"contimg: {db_path}: no products database under this root", file=sys.stderr)
        return 1
    try:
        name, points = _lightcurve_points(root, db_path, args.source)
    except FileNotFoundError as exc:
        print(f"contimg: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else root / "lightcurves"
    out.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "+-._" else "_" for c in name)
    stats = variability(flux_jy=[r["flux_jy"] for r in points], err_jy=[r["err_jy"] for r in points])
    written = write_lightcurve(points, csv_path=out / f"{safe}.csv", png_path=None if args.no_plot else out / f"{safe}.png",
                               title=f"{name}: eta {stats['eta']:.2f}, V {stats['v']:.3f}, {stats['n']} points")
    print(f"{name}: {stats['n']} measurements, mean {stats['mean_flux_jy'] * 1e3:.2f} mJy, "
          f"eta {stats['eta']:.2f}, V {stats['v']:.3f}")
    for path in written:
        print(f"  {path}")
    return 0


@contextlib.contextmanager
def _dask_client(address: str | None, n_workers: int | None):
    """A Dask client of the scheduler at ``address``, or of a local cluster of ``n_workers``
    processes, closed after use; None (work in this process) when neither is given."""
    if not address and not n_workers:
        yield None
        return
    from distributed import Client, LocalCluster

    cluster = None if address else LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                                  dashboard_address=None)
    client = Client(address or cluster)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _cmd_mosaic(args) -> int:
    """A mosaic of a processed root's groups after the fact, or every span's; optionally the
    pipeline's catalogue rebuilt first."""
    from contimg.pipeline.mosaic import build_mosaic, build_span_mosaics

    root = _existing_root(args.root)
    cfg = _config(args, root=root)
    if args.catalogue:
        from contimg.pipeline.catalogue import build_catalogue

        cat = build_catalogue(root, cfg=cfg)
        print(f"catalogue rebuilt from {cat['n_groups']} groups: {cat['n_detections']} detections, "
              f"{len(cat['candidates'])} transient candidates, {len(cat['variables'])} variability candidates")
    if args.spans:
        with _dask_client(args.cluster, args.workers) as client:
            rows = build_span_mosaics(root, cfg=cfg, client=client)
    elif args.cluster or args.workers:
        raise ValueError("mosaic: --cluster and --workers build the spans (--spans) in parallel, one task per span")
    else:
        rows = [build_mosaic(root, cfg=cfg, start_mjd=args.start_mjd, end_mjd=args.end_mjd, groups=args.groups,
                             name=args.name)]
    for r in rows:
        print(f"mosaic {r['name']}: {len(r['groups'])} groups, {r['status']}  "
              f"{r.get('image_path') or r.get('zarr_path', '')}")
    return 0


def _cmd_demo(args) -> int:
    import webbrowser

    from contimg.service.batch import run_replay
    from contimg.sim import simulate

    root = _root_to_write(args.root) if args.root else None
    cfg = _config(args, root=root, default="test")
    if args.port is not None:
        cfg = cfg.model_validate({**cfg.model_dump(), "web": {**cfg.web.model_dump(), "port": args.port}})
    root = root or Path(tempfile.mkdtemp(prefix="contimg-demo-"))
    archive = root / "simulated"
    print(f"contimg demo: simulating {args.groups} small group(s) into {archive}")
    simulate(archive, n_groups=args.groups, cfg=cfg.simulate)
    if not cfg.sky.catalogue:  # cross-match and photometry against the simulated sky
        cfg = cfg.model_validate({**cfg.model_dump(), "sky": {"catalogue": str(archive / "catalogue.csv")}})
    _remember_config(root, cfg)
    print(f"replaying them into {root / cfg.service.incoming_dir} at {args.speed:g}x their cadence; the service "
          f"watches it (read -> flag -> calibrate -> image -> FITS)")

    def opened(url: str) -> None:
        print(f"web view: {url}" + ("" if args.exit_when_done else "   (Ctrl-C stops the demo)"), flush=True)
        if not args.exit_when_done and not args.no_browser:
            webbrowser.open(url)

    results, code = run_replay(archive, root=root, cfg=cfg, speed=args.speed, web=True,
                               keep_serving=not args.exit_when_done, on_web=opened)
    code = _print_summary(results, root, code)
    print(json.dumps({"root": str(root), "exit_code": code}))
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="contimg", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="write simulated DSA-110 subband files and a truth file")
    p.add_argument("out", help="output folder")
    p.add_argument("--groups", type=int, default=1)
    p.add_argument("--config", default="dsa110", help="packaged config name or TOML path (default dsa110)")
    p.add_argument("--seed", type=int)
    p.add_argument("--antennas", type=int, help="number of active antennas (default all 96)")
    p.add_argument("--chans-per-subband", type=int)
    p.add_argument("--times", type=int, help="integrations per group")
    p.add_argument("--no-rfi", action="store_true")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("run", help="process every group in a folder as fast as possible, or one UVH5/UVFITS/MS file of any array",
                       description="Process every group in a folder as fast as possible (the service's own tasks, "
                                   "no watcher), or one UVH5/UVFITS/MS file of any array.",
                       epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="folder of subband files, or one .uvh5/.uvfits/.fits file or .ms directory")
    p.add_argument("--root", required=True, help="output root (products/, state/, cal/)")
    p.add_argument("--config", help=CONFIG_HELP)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--cluster", metavar="ADDRESS", help="run the groups as tasks on this Dask scheduler (tcp://host:8786)")
    where.add_argument("--workers", type=int, metavar="N", help="run the groups on a local Dask cluster of N worker processes")
    p.add_argument("--web", action="store_true", help="serve the web view (web.port) while the run lasts")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("serve", help="the always-on service: watch <root>/incoming and process every group")
    p.add_argument("--root", required=True, help="service root (incoming/, products/, state/, cal/)")
    p.add_argument("--config", help=CONFIG_HELP)
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("replay", help="feed a folder's files into the service at N x their real cadence",
                       epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="folder of archived subband files")
    p.add_argument("--root", required=True)
    p.add_argument("--speed", type=float, default=1.0, help="N x the real cadence (default 1)")
    p.add_argument("--config", help=CONFIG_HELP)
    p.add_argument("--web", action="store_true", help="serve the web view while replaying")
    p.add_argument("--port", type=int, help="web view port (default: web.port of the config)")
    p.set_defaults(func=_cmd_replay)

    p = sub.add_parser("reprocess", help="re-run a group from a stage with its stored intermediates")
    p.add_argument("group", help="group id (YYYY-MM-DDTHH:MM:SS)")
    p.add_argument("--root", required=True)
    p.add_argument("--from-stage", default="read", choices=["read", "flag", "calibrate", "image", "write"])
    p.add_argument("--force-config", action="store_true",
                   help="reprocess with --config even where it differs from the configuration stored in the root")
    p.add_argument("--config", help=CONFIG_HELP)
    p.set_defaults(func=_cmd_reprocess)

    p = sub.add_parser("status", help="the queue, the service's health and the latest products")
    p.add_argument("--root", required=True)
    p.add_argument("--json", action="store_true", help="machine-readable")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("export-ms", help="one processed group as a Measurement Set (DATA, CORRECTED_DATA, MODEL_DATA)")
    p.add_argument("group", help="group id, e.g. 2026-03-22T07:48:54")
    p.add_argument("--root", required=True)
    p.add_argument("--out", required=True, help="the .ms folder to write (replaced)")
    p.add_argument("--config", help=CONFIG_HELP)
    p.add_argument("--phasing", choices=["midtime", "per_integration"], help="default: interop.ms_phasing")
    p.set_defaults(func=_cmd_export_ms)

    p = sub.add_parser("export-uv", help="one processed group's calibrated data as UVFITS or UVH5 (pyuvdata)")
    p.add_argument("group", help="group id")
    p.add_argument("--root", required=True)
    p.add_argument("--out", required=True, help="X.uvfits or X.uvh5")
    p.add_argument("--config", help=CONFIG_HELP)
    p.set_defaults(func=_cmd_export_uv)

    p = sub.add_parser("export-cal", help="the gains applied to one group as a CASA caltable or pyuvdata UVCal")
    p.add_argument("group", help="group id")
    p.add_argument("--root", required=True)
    p.add_argument("--out", required=True, help="X.bcal (CASA B Jones table) or X.calh5 / X.calfits (UVCal)")
    p.add_argument("--ms", help="CASA table: copy ANTENNA, FIELD, SPECTRAL_WINDOW, OBSERVATION from this MS")
    p.set_defaults(func=_cmd_export_cal)

    p = sub.add_parser("lightcurve", help="one source's forced photometry across groups: CSV and PNG")
    p.add_argument("source", nargs="+", metavar="NAME | RA DEC",
                   help="a catalogue name (the pipeline's own, or the external catalogue's), or RA DEC in degrees")
    p.add_argument("--root", required=True)
    p.add_argument("--out", help="output folder (default: <root>/lightcurves)")
    p.add_argument("--no-plot", action="store_true", help="CSV only")
    p.set_defaults(func=_cmd_lightcurve)

    p = sub.add_parser("mosaic", help="a strip mosaic of a processed root's groups (or every span's), after the fact")
    p.add_argument("--root", required=True)
    p.add_argument("--config", help="packaged config name or TOML path (default: the one stored in --root)")
    p.add_argument("--start-mjd", type=float, help="groups whose mid-time is at or after this")
    p.add_argument("--end-mjd", type=float, help="... and before this")
    p.add_argument("--groups", nargs="+", help="these group ids instead")
    p.add_argument("--name", help="the mosaic's name (default: from its time range)")
    p.add_argument("--spans", action="store_true", help="every span's fixed mosaic (mosaic.span_hours), rebuilt")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--cluster", metavar="ADDRESS", help="with --spans: one task per span on this Dask scheduler (workers share the root)")
    where.add_argument("--workers", type=int, metavar="N", help="with --spans: one task per span on a local Dask cluster of N processes")
    p.add_argument("--catalogue", action="store_true", help="rebuild the pipeline's catalogue from every group first")
    p.set_defaults(func=_cmd_mosaic)

    p = sub.add_parser("demo", help="simulate a few small groups and run them end to end")
    p.add_argument("--groups", type=int, default=2)
    p.add_argument("--config", help="packaged config name or TOML path (default: the one stored in --root, else test)")
    p.add_argument("--root", help="output root (default: a fresh temporary folder)")
    p.add_argument("--exit-when-done", action="store_true", help="exit once every group is done (for scripts)")
    p.add_argument("--speed", type=float, default=60.0, help="replay at this many times the real cadence")
    p.add_argument("--port", type=int, help="web view port (default: web.port of the config)")
    p.add_argument("--no-browser", action="store_true", help="do not try to open a browser")
    p.set_defaults(func=_cmd_demo)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code = args.func(args)
    except Exception as exc:  # a clear message, not a traceback, for bad input at the top level
        from contimg.pipeline.cluster import ClusterError
        from contimg.config import ConfigError
        from contimg.state.lock import ServiceLockError

        from contimg.pipeline.generic import GenericInputError

        if isinstance(exc, (ConfigError, RootError, FileNotFoundError, ServiceLockError, ClusterError,
                            GenericInputError)) or (
                isinstance(exc, ValueError) and (args.command.startswith("export") or args.command in ("run", "mosaic"))):
            print(f"contimg: {exc}", file=sys.stderr)
            return 1
        raise
    if argv is None and any(t.daemon and t.is_alive() for t in threading.enumerate()
                            if t is not threading.main_thread()):
        # a stage left running past the shutdown grace: its group is back at its checkpoint in the
        # database, which is closed; do not let interpreter teardown race the worker thread
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
