"""The benchmark of the whole system against its peers, one command (docs/benchmarks/README.md).

    python tools/bench.py run --data /tmp/rs2 --work /tmp/bench      # ~45 min on 2 cores
    python tools/bench.py report docs/benchmarks/bench.json          # the Markdown again
    python tools/bench.py regress [--sim-dir D] [--out F]            # seconds: what CI records

``run`` on two real-size simulated groups (96 antennas, 768 channels, 24 integrations, XX/YY;
the first with a calibrator transit; ``contimg simulate --config dsa110 --groups 2`` into
``--data`` when it holds none), every step a child process (wall time, peak RSS of that process
alone), under ``nice -n -20`` where allowed:

1. **Chain, per mode** (``--config quick`` and ``dsa110``, full): ``contimg run`` of each group
   alone, as the service meets them one every 309 s (the calibrator group, then the field group
   into the same root): per-stage seconds (the run's summary.json), the processing time (their
   sum), the real-time factor 309.2 s / processing time; then both groups in one run (a
   backlog: wall time per group).
2. **Peers on the field group** (the second), same data, same run: contimg's flagger (numba
   twin) and AOFlagger (PyPI ``aoflagger``, generic strategy, 2 threads) on the group as read,
   median of ``--repeats`` after a warm-up; one bare ducc0 ``vis2dirty`` pass (the full mode's
   4096² at 3", epsilon 1e-4, 2 threads) on the visibilities contimg images; WSClean (Debian)
   on ``contimg export-ms`` of the group with the full mode's size, cell, weighting,
   iterations, loop gain, major-cycle fraction and 3-sigma threshold. (CASA's calibration beside
   contimg's: tools/bench_calibrate.py, docs/benchmarks/calibrate.md — not rerun here.)
3. **Latency**: ``contimg replay`` of both groups (quick mode) at ``--replay-speed`` times their
   real cadence: per group, the last subband file's arrival to its FITS files written
   (ingest.sqlite3: ``last_file_at`` to the write stage's end).
4. **Profile**: the full mode's stages of both groups in one thread under cProfile, the
   functions with the most own time (numba kernels are one entry each).
5. **Memory over a replay** (the always-on service): ``contimg replay`` of ``--replay-groups``
   real-size groups (``--replay-data``, simulated when it holds fewer; full mode, prefetch 1,
   at 1000x their cadence so groups queue behind each other) with the child's RSS sampled every
   0.25 s (tools/bench_service.py): the peak in each group's window, the curve, and the last
   five windows' peak over the first five's (flat: <= 1.05).

GPU rows stay empty unless a CUDA device is present (none on the development machine); they are
never estimated.

``regress`` times read, flag, calibrate, image and write on one small simulated group (the
``test`` config) in this process, median of 3 after a warm-up, and sets the figures beside
``docs/benchmarks/regress_baseline.json``: a stage twice as slow shows as 2.0x. The test suite
runs it (tests/test_bench_regress.py) and prints the table at the end of CI's log; it never
fails on time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import pstats
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import bench_image as _bi  # noqa: E402  (_run: child process with its peak RSS; _versions, _machine)

GROUP_S = 24 * 12.884902  # one group's duration: the real-time budget
BASELINE = ROOT / "docs/benchmarks/regress_baseline.json"
CI = [sys.executable, "-m", "contimg.cli"]


def _stats(times: list[float]) -> dict:
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "runs": times}


def _groups(data: Path) -> list[str]:
    from contimg.io.naming import group_files, scan_folder

    return [g.group_id for g in group_files(scan_folder(data), tolerance_s=60)]


def _summary_of(root: Path, gid: str) -> dict:
    summary = json.loads((root / "summary.json").read_text())
    mine = next(x for x in summary if x["group_id"] == gid)
    stages = mine.get("timings_s", {})
    total = float(sum(stages.values()))
    return {"status": mine.get("status"), "stages_s": stages, "processing_s": total,
            "real_time_factor": GROUP_S / total if total else None, "calibrator": mine.get("calibrator")}


def _chain(*, data: Path, work: Path, config: str, groups: list[str]) -> dict:
    """Each group alone, as the always-on service meets them (one every 309 s: no overlap):
    ``contimg run`` of the calibrator group, then of the field group into the same root (its
    registry holds the calibrator's solution); then both in one run, back to back (a backlog:
    throughput, the stages of one group overlapping the other's)."""
    out = {}
    root = work / f"root-{config}"
    shutil.rmtree(root, ignore_errors=True)
    for role, gid in (("calibrator", groups[0]), ("field", groups[1])):
        inc = work / f"in-{role}"
        _bi._link_group(data, gid, inc)
        r = _bi._run([*CI, "run", str(inc), "--root", str(root), "--config", config], work / f"chain-{config}-{role}.log")
        r.update(_summary_of(root, gid))
        out[role] = r
    out["root"] = str(root)
    backlog = work / f"root-{config}-backlog"
    shutil.rmtree(backlog, ignore_errors=True)
    r = _bi._run([*CI, "run", str(data), "--root", str(backlog), "--config", config], work / f"chain-{config}-backlog.log")
    r["groups"] = {gid: _summary_of(backlog, gid) for gid in groups[:2]}
    r["wall_per_group_s"] = r["wall_s"] / 2
    out["backlog"] = r
    return out


def _profile(*, data: Path, groups: list[str], out: Path) -> dict:
    """Both groups through the stages in this process's main thread under cProfile (the service
    runs them in worker threads, which cProfile does not see); the calibrator group's
    registration handed to the field group as the service would."""
    import cProfile
    import tempfile

    from contimg.config import load_config
    from contimg.io.naming import group_files, scan_folder
    from contimg.pipeline.stages import STAGES, GroupWork, run_stage

    cfg = load_config("dsa110", use_env=False)
    found = {g.group_id: g for g in group_files(scan_folder(data), tolerance_s=60)}
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rows: list[dict] = []
        for gid in groups[:2]:
            work = GroupWork(group=found[gid], root=Path(tmp))
            work.cal_candidates = list(rows)
            prof.enable()
            for stage in STAGES:
                run_stage(stage, work, cfg)
            prof.disable()
            rows += work.cal_registrations
    wall = time.perf_counter() - t0
    prof.dump_stats(str(out))
    return {"wall_s": wall, "top": _profile_top(out)}


def _peers(*, data: Path, work: Path, field_group: str, full_root: Path, repeats: int, threads: int) -> dict:
    """contimg's flagger and AOFlagger on the field group as read; a bare ducc0 pass; WSClean."""
    from bench_flag import aoflagger_flags

    from contimg.config import load_config
    from contimg.flag import flag_group
    from contimg.imaging.grid import dirty_image
    from contimg.imaging.prep import rephase_stokes_i
    from contimg.io.naming import group_files, scan_folder
    from contimg.io.reader import read_group
    from contimg.sky.geometry import hadec_to_icrs

    cfg = load_config("dsa110", use_env=False)
    group = next(g for g in group_files(scan_folder(data), tolerance_s=60) if g.group_id == field_group)
    chunk = read_group(group, n_subbands=16, on_bad_subband="flag", min_subbands=8, read_threads=4)
    out = {"shape": list(chunk.vis.shape), "cross_visibilities": int(chunk.vis[:, chunk.cross].size)}
    nchan = chunk.vis.shape[2]

    def contimg_flag():
        return flag_group(vis=chunk.vis, flags=chunk.flags, ant1=chunk.ant1, ant2=chunk.ant2,
                          n_antennas=chunk.antenna_enu_m.shape[0], chans_per_subband=nchan // 16, cfg=cfg.flag,
                          backend="cpu")

    def timed(fn, n):
        fn()  # warm-up (numba compiles; AOFlagger loads its strategy)
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return _stats(times)

    out["flag_contimg_s"] = timed(contimg_flag, repeats)
    out["flag_aoflagger_s"] = timed(lambda: aoflagger_flags(vis=chunk.vis, cross=chunk.cross, threads=threads),
                                    max(1, repeats - 1))
    ic = cfg.image
    mid = float(np.mean(chunk.time_jd))
    ra, dec = hadec_to_icrs(ha_rad=0.0, dec_rad=chunk.pointing_dec_rad, time_jd=mid)
    uvw, vis, wgt = rephase_stokes_i(chunk=chunk, ra_rad=ra, dec_rad=dec)
    freq = chunk.freq_hz.copy()
    del chunk
    cell = np.radians(ic.cell_arcsec / 3600)
    out["ducc0_vis2dirty_s"] = timed(lambda: dirty_image(uvw_m=uvw, freq_hz=freq, vis=vis, wgt=wgt, npix=ic.npix,
                                                         cell_rad=cell, epsilon=ic.epsilon, nthreads=threads),
                                     repeats)
    out["ducc0_visibilities"] = int(np.count_nonzero(wgt))
    del uvw, vis, wgt
    ms = work / "field.ms"
    shutil.rmtree(ms, ignore_errors=True)
    out["export_ms"] = _bi._run([*CI, "export-ms", field_group, "--root", str(full_root), "--out", str(ms),
                                 "--config", "dsa110", "--phasing", "midtime"], work / "export_ms.log")
    wsdir = work / "wsclean"
    shutil.rmtree(wsdir, ignore_errors=True)
    wsdir.mkdir()
    cmd = ["wsclean", "-name", str(wsdir / "field"), "-size", str(ic.npix), str(ic.npix),
           "-scale", f"{ic.cell_arcsec}asec", "-weight", ic.weighting, str(ic.robust), "-niter", str(ic.niter),
           "-gain", str(ic.loop_gain), "-mgain", f"{1 - ic.cycle_fraction:.2f}",
           "-auto-threshold", str(ic.threshold_sigma), "-pol", "I", "-data-column", "CORRECTED_DATA",
           "-j", str(threads), "-use-wgridder", "-wgridder-accuracy", str(ic.epsilon), "-no-update-model-required",
           "-temp-dir", str(wsdir), str(ms)]
    r = _bi._run(cmd, work / "wsclean.log")
    r.update(_bi._wsclean_times((work / "wsclean.log").read_text()))
    out["wsclean"] = r
    shutil.rmtree(ms, ignore_errors=True)
    return out


def _latency(*, data: Path, work: Path, speed: float) -> dict:
    root = work / "root-replay"
    shutil.rmtree(root, ignore_errors=True)
    r = _bi._run([*CI, "replay", str(data), "--root", str(root), "--config", "quick", "--speed", str(speed)],
                 work / "replay.log")
    con = sqlite3.connect(root / "state" / "ingest.sqlite3")
    con.row_factory = sqlite3.Row
    queue = {row["group_id"]: dict(row) for row in con.execute("SELECT * FROM ingest_queue")}
    writes = {row["group_id"]: row["finished_at"] for row in
              con.execute("SELECT group_id, finished_at FROM performance_metrics WHERE stage = 'write'")}
    con.close()
    r["groups"] = {gid: {"state": q["state"], "latency_s": writes[gid] - q["last_file_at"] if gid in writes else None}
                   for gid, q in queue.items()}
    r["speed"] = speed
    return r


def _replay_memory(*, data: Path, work: Path, n_groups: int, speed: float = 1000.0, config: str = "dsa110") -> dict:
    """The service's resident memory over a replay of ``n_groups`` real-size groups (full mode,
    prefetch 1): each group's window peak (MiB), the curve every ~5 s, and the group states."""
    import bench_service as _bs

    if not data.is_dir() or len(_groups(data)) < n_groups:
        shutil.rmtree(data, ignore_errors=True)
        subprocess.run([*CI, "simulate", str(data), "--groups", str(n_groups), "--config", config], check=True)
    work.mkdir(parents=True, exist_ok=True)
    ns = argparse.Namespace(work=work, mode="replay", size="real", config=config, speed=speed)
    n_groups = len(_groups(data))  # the replay takes every group in the folder
    r = _bs.run_once(ns, data, prefetch=1)
    windows, _ = _bs.window_peaks(r)
    con = sqlite3.connect(work / "root-replay-real-p1" / "state" / "ingest.sqlite3")
    states = [row[0] for row in con.execute("SELECT state FROM ingest_queue")]
    con.close()
    every = max(1, int(5.0 / 0.25))
    return {"exit": r["code"], "wall_s": r["wall"], "groups": n_groups, "speed": speed, "prefetch": 1,
            "states": {st: states.count(st) for st in sorted(set(states))},
            "written": len(r["done"]), "window_peak_mib": windows,
            "peak_mib": max(m for _, m in r["samples"]),
            "curve_t_s_rss_mib": [(round(t, 1), round(m)) for t, m in r["samples"][::every]],
            "groups_per_hour": 3600 * (len(r["done"]) - 1) / (r["done"][-1] - r["done"][0]) if len(r["done"]) > 1 else None,
            "last5_over_first5": max(windows[-5:]) / max(windows[:5]) if len(windows) >= 10 else None}


def _profile_top(path: Path, n: int = 20) -> list[dict]:
    st = pstats.Stats(str(path))
    rows = []
    for (file, line, func), (cc, nc, tt, ct, _) in st.stats.items():
        rows.append({"function": f"{Path(file).name}:{line}({func})" if line else func, "calls": nc,
                     "own_s": tt, "cumulative_s": ct})
    total = sum(r["own_s"] for r in rows)
    rows.sort(key=lambda r: -r["own_s"])
    for r in rows:
        r["own_fraction"] = r["own_s"] / total if total else 0.0
    return rows[:n]


def _gpu() -> dict | None:
    from contimg.device.backend import gpu_available

    if not gpu_available():
        return None
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(0)
    return {"name": props["name"].decode(), "driver": cupy.cuda.runtime.driverGetVersion(),
            "runtime": cupy.cuda.runtime.runtimeGetVersion(), "cupy": cupy.__version__,
            "memory_gib": props["totalGlobalMem"] / 2**30}


def _warm_page_cache(data: Path) -> float:
    """Read every file of ``data`` once (seconds): the first step would otherwise read from the
    disk what every later step and the peers' Measurement Set read from memory (after the
    replay data was simulated, the quick chain's read took twice as long as the full chain's)."""
    t0 = time.perf_counter()
    for path in sorted(data.glob("*.hdf5")):
        with open(path, "rb") as fh:
            while fh.read(1 << 24):
                pass
    return time.perf_counter() - t0


def cmd_run(args: argparse.Namespace) -> int:
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    data = args.data.resolve()
    if not list(data.glob("*_sb00.hdf5")):
        subprocess.run([*CI, "simulate", str(data), "--groups", "2", "--config", "dsa110"], check=True)
    _warm_page_cache(data)
    groups = _groups(data)
    if len(groups) < 2:
        raise SystemExit(f"{data}: needs two groups (a calibrator group, then a field group), has {groups}")
    result = {"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3], "machine": _bi._machine(),
              "versions": _bi._versions(), "gpu": _gpu(), "niced": bool(_bi._nice()),
              "command": " ".join(["python", "tools/bench.py", *sys.argv[1:]]), "data": str(data),
              "groups": groups[:2], "group_duration_s": GROUP_S}
    state = work / "steps.json"  # each step's result as soon as it is measured (--resume skips those)
    steps = json.loads(state.read_text()) if args.resume and state.is_file() else {}
    prof = work / "chain.prof"
    todo = {
        "chain_quick": lambda: _chain(data=data, work=work, config="quick", groups=groups),
        "chain_dsa110": lambda: _chain(data=data, work=work, config="dsa110", groups=groups),
        "peers": lambda: _peers(data=data, work=work, field_group=groups[1],
                                full_root=Path(steps["chain_dsa110"]["root"]), repeats=args.repeats,
                                threads=args.threads),
        "latency": lambda: _latency(data=data, work=work, speed=args.replay_speed),
        "profile": lambda: _profile(data=data, groups=groups, out=prof),
        "replay_memory": lambda: _replay_memory(data=args.replay_data.resolve(), work=work,
                                                n_groups=args.replay_groups),
    }
    for name, step in todo.items():
        if name in steps:
            continue
        print(f"{name} ...", flush=True)
        steps[name] = step()
        steps[name]["measured"] = {"utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                   "commit": result["versions"].get("branch_commit", "")}
        state.write_text(json.dumps(steps, indent=1, default=float))
    result["steps"] = steps
    result["summary"] = summarize(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(f"wrote {args.out}")
    write_report(args.out, args.out.with_suffix(".md"))
    for line in _ratio_lines(result["summary"]):
        print(line)
    return 0


def summarize(r: dict) -> dict:
    """The figures the issue asks for, from the steps."""
    s = r["steps"]
    full, quick = s["chain_dsa110"]["field"], s["chain_quick"]["field"]
    p = s["peers"]
    ao = p["flag_aoflagger_s"]["median"]
    ws = p["wsclean"]["wall_s"]
    out = {
        "full_processing_s": full["processing_s"], "quick_processing_s": quick["processing_s"],
        "full_real_time_factor": full["real_time_factor"], "quick_real_time_factor": quick["real_time_factor"],
        "full_stages_s": full["stages_s"], "quick_stages_s": quick["stages_s"],
        "aoflagger_plus_wsclean_s": ao + ws,
        "full_over_peers": full["processing_s"] / (ao + ws),
        "flag_contimg_over_aoflagger": p["flag_contimg_s"]["median"] / ao,
        "image_contimg_over_wsclean": full["stages_s"].get("image", float("nan")) / ws,
        "image_contimg_over_one_ducc0_pass": (full["stages_s"].get("image", float("nan"))
                                              / p["ducc0_vis2dirty_s"]["median"]) if p.get("ducc0_vis2dirty_s") else None,
        "peak_rss_gib": {"quick": full_quick_rss(s, "chain_quick"), "full": full_quick_rss(s, "chain_dsa110"),
                         "wsclean": p["wsclean"]["peak_rss_gib"]},
        "backlog_peak_rss_gib": {"quick": s["chain_quick"]["backlog"]["peak_rss_gib"],
                                 "full": s["chain_dsa110"]["backlog"]["peak_rss_gib"]},
        "backlog_wall_per_group_s": {"quick": s["chain_quick"]["backlog"]["wall_per_group_s"],
                                     "full": s["chain_dsa110"]["backlog"]["wall_per_group_s"]},
        "latency_s": {g: v["latency_s"] for g, v in s["latency"]["groups"].items()},
        "replay_peak_gib": s["replay_memory"]["peak_mib"] / 1024 if "replay_memory" in s else None,
        "replay_last5_over_first5": s["replay_memory"]["last5_over_first5"] if "replay_memory" in s else None,
        # issue 25's targets (the design's first ones were 0.5 and 60 s)
        "targets": {"full_le_0.3_of_aoflagger_plus_wsclean": full["processing_s"] <= 0.3 * (ao + ws),
                    "quick_le_30_s": quick["processing_s"] <= 30.0,
                    "peak_rss_le_2.5_gib": max(full_quick_rss(s, "chain_dsa110"), full_quick_rss(s, "chain_quick")) <= 2.5,
                    "backlog_rss_le_4_gib": max(s["chain_dsa110"]["backlog"]["peak_rss_gib"],
                                                s["chain_quick"]["backlog"]["peak_rss_gib"]) <= 4.0},
    }
    if "replay_memory" in s:
        rm = s["replay_memory"]
        out["targets"]["replay_le_4_gib"] = rm["peak_mib"] / 1024 <= 4.0
        out["targets"]["replay_flat"] = rm["last5_over_first5"] is not None and rm["last5_over_first5"] <= 1.05
    return out


def full_quick_rss(steps: dict, key: str) -> float:
    """The larger peak RSS of the two single-group runs (GiB)."""
    return max(steps[key]["calibrator"]["peak_rss_gib"], steps[key]["field"]["peak_rss_gib"])


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _ratio_lines(sm: dict) -> list[str]:
    t, rss = sm["targets"], sm["peak_rss_gib"]
    lines = [f"full chain per group {sm['full_processing_s']:.1f} s (real-time factor {sm['full_real_time_factor']:.1f}); "
             f"AOFlagger + WSClean {sm['aoflagger_plus_wsclean_s']:.1f} s: ratio {sm['full_over_peers']:.2f} "
             f"(target <= 0.3: {_met(t['full_le_0.3_of_aoflagger_plus_wsclean'])})",
             f"quick chain per group {sm['quick_processing_s']:.1f} s (real-time factor "
             f"{sm['quick_real_time_factor']:.1f}; target <= 30 s: {_met(t['quick_le_30_s'])})",
             f"peak resident memory of one group: full {rss['full']:.2f} GiB, quick {rss['quick']:.2f} GiB "
             f"(target <= 2.5: {_met(t['peak_rss_le_2.5_gib'])}); two groups back to back: full "
             f"{sm['backlog_peak_rss_gib']['full']:.2f} GiB, quick {sm['backlog_peak_rss_gib']['quick']:.2f} GiB "
             f"(target <= 4: {_met(t['backlog_rss_le_4_gib'])})",
             f"flagging contimg / AOFlagger {sm['flag_contimg_over_aoflagger']:.2f}; imaging contimg / WSClean "
             f"{sm['image_contimg_over_wsclean']:.2f}"
             + (f"; imaging / one ducc0 pass {sm['image_contimg_over_one_ducc0_pass']:.1f}"
                if sm.get("image_contimg_over_one_ducc0_pass") else "")]
    if "replay_flat" in t:
        lines.append(f"the service over a replay of real-size groups: peak {sm['replay_peak_gib']:.2f} GiB (target <= 4: "
                     f"{_met(t['replay_le_4_gib'])}); the last five groups' peak over the first five's "
                     + (f"{sm['replay_last5_over_first5']:.3f}" if sm["replay_last5_over_first5"] is not None
                        else "not measured (fewer than 10 groups)")
                     + f" (flat, <= 1.05: {_met(t['replay_flat'])})")
    return lines


def _reductions_line() -> str:
    """What contimg's full mode does to the data before gridding that WSClean, run here on the
    exported measurement set at full resolution, does not (the packaged dsa110 configuration)."""
    from contimg.config import load_config

    ic = load_config("dsa110", use_env=False).image
    return (f"Before gridding, contimg's full mode averages {ic.average_channels} adjacent channels "
            f"(`image.average_channels`) and, per baseline, up to {ic.average_times_max} integrations "
            f"(`image.average_times_max`: baseline-dependent averaging, each sample's time smearing at most "
            f"{ic.average_times_step_fraction:g} of the fastest baseline's unaveraged, "
            f"`image.average_times_step_fraction`); WSClean grids the exported measurement set's 768 channels and "
            f"24 integrations as they are (its own `-baseline-averaging` and channel averaging not used here).")


def write_report(json_path: Path, md_path: Path) -> None:
    r = json.loads(Path(json_path).read_text())
    r["summary"] = summarize(r)  # the targets as the code states them now
    s, sm, m = r["steps"], r["summary"], r["machine"]
    p = s["peers"]

    def t(x):
        return f"{x['median']:.2f} | {x['min']:.2f} | {x['max']:.2f}"

    L = ["# The system against its peers (`tools/bench.py`)", "",
         "Generated by `tools/bench.py` from `bench.json` (no number here is typed by hand).", "",
         "```bash", r["command"], "python tools/bench.py report docs/benchmarks/bench.json", "```", "",
         f"{r['date_utc']}; {m['cpu']}, {m['cores']} cores, {m['mem_gib']} GiB; load average at the start "
         f"{r['loadavg_at_start']}; children {'niced (-20)' if r['niced'] else 'not niced'}. Versions: "
         + ", ".join(f"{k} {v}" for k, v in r["versions"].items()) + ".", "",
         f"Data: `{r['data']}`, groups {r['groups'][0]} (calibrator transit) and {r['groups'][1]} (field; the "
         f"figures below are this group's), shape {tuple(p['shape'])}, {p['cross_visibilities'] / 1e6:.1f} M "
         f"cross-correlation visibilities; a group lasts {r['group_duration_s']:.1f} s.", "",
         "## Against the targets", ""]
    if "--resume" in r.get("command", ""):
        when = {k: v.get("measured") for k, v in s.items() if isinstance(v, dict)}
        L += ["Run with `--resume`: a step measured by an earlier run of the same command (same data and "
              "machine) was kept. When each step was measured: "
              + "; ".join(f"{k} {w['utc']} ({w['commit']})" if w else f"{k} not recorded" for k, w in when.items())
              + ".", ""]
    L += [f"- {x}" for x in _ratio_lines(sm)]
    L += ["", "## The chain per group (s)", "",
          "Each group alone (`contimg run` of its 16 files; the field group calibrated from the registry the "
          "calibrator group's run left): the service's own per-stage seconds, their sum the processing time; "
          "the child's wall time adds the process start-up (imports, catalogue, Earth orientation).", "",
          "| mode | group | read | flag | calibrate | image | write | total | real-time factor | child wall | peak RSS (GiB) |",
          "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for mode, key in (("quick", "chain_quick"), ("full (dsa110)", "chain_dsa110")):
        for role in ("calibrator", "field"):
            g = s[key][role]
            st = g["stages_s"]
            L += [f"| {mode} | {role} | " + " | ".join(f"{st.get(k, float('nan')):.1f}" for k in
                                                        ("read", "flag", "calibrate", "image", "write"))
                  + f" | {g['processing_s']:.1f} | {g['real_time_factor']:.1f} | {g['wall_s']:.1f} | "
                  f"{g['peak_rss_gib']:.2f} |"]
    L += ["", "Both groups in one run, back to back (a backlog: one group's read and write overlap the other's "
          "processing on the same 2 cores): "
          + "; ".join(f"{mode} {s[key]['backlog']['wall_s']:.1f} s wall, {s[key]['backlog']['wall_per_group_s']:.1f} s "
                      f"per group, peak RSS {s[key]['backlog']['peak_rss_gib']:.2f} GiB"
                      for mode, key in (("quick", "chain_quick"), ("full", "chain_dsa110"))) + ".", "",
          "## Peers on the same group (s; median | min | max)", "",
          "| what | median | min | max |", "| --- | ---: | ---: | ---: |",
          f"| contimg flagger (numba, {len(p['flag_contimg_s']['runs'])} runs) | {t(p['flag_contimg_s'])} |",
          f"| AOFlagger, generic strategy ({len(p['flag_aoflagger_s']['runs'])} runs) | {t(p['flag_aoflagger_s'])} |"]
    if p.get("ducc0_vis2dirty_s"):
        L += [f"| one bare ducc0 `vis2dirty` pass ({p['ducc0_visibilities'] / 1e6:.0f} M Stokes I visibilities) | "
              f"{t(p['ducc0_vis2dirty_s'])} |"]
    ws = p["wsclean"]
    L += [f"| WSClean, same image (one run; inversion {ws.get('inversion_s', float('nan')):.0f} s, prediction "
          f"{ws.get('prediction_s', float('nan')):.0f} s, deconvolution {ws.get('deconvolution_s', float('nan')):.0f} s) "
          f"| {ws['wall_s']:.2f} | | |",
          f"| contimg image stage (full mode) | {sm['full_stages_s'].get('image', float('nan')):.2f} | | |", "",
          _reductions_line(), "",
          f"Peak RSS of one group: contimg full {sm['peak_rss_gib']['full']:.2f} GiB, quick "
          f"{sm['peak_rss_gib']['quick']:.2f} GiB, WSClean {sm['peak_rss_gib']['wsclean']:.2f} GiB. Device memory: "
          + ("see the GPU section" if r.get("gpu") else "not measured (no GPU)") + ".", "",
          "## Latency (replay, quick mode)", "",
          f"`contimg replay` at {s['latency']['speed']:g}x the real cadence: from the last subband file's arrival to "
          "the group's FITS files written: "
          + "; ".join(f"{g} {v['latency_s']:.1f} s" if v["latency_s"] is not None else f"{g} not written"
                      for g, v in s["latency"]["groups"].items()) + ".", "",
          "## Where the time goes (full mode, both groups, cProfile)", "",
          f"The stages of both groups in one thread under cProfile: {s['profile']['wall_s']:.1f} s. Own time per "
          "function (a numba kernel is one entry):", "",
          "| function | calls | own (s) | share |", "| --- | ---: | ---: | ---: |"]
    for row in s["profile"]["top"]:
        L += [f"| `{row['function']}` | {row['calls']} | {row['own_s']:.2f} | {row['own_fraction']:.1%} |"]
    if "replay_memory" in s:
        from bench_service import _sparkline

        rm = s["replay_memory"]
        w = rm["window_peak_mib"]
        L += ["", f"## Memory over a replay of {rm['groups']} real-size groups (the service)", "",
              f"`contimg replay` of {rm['groups']} real-size groups, full mode, prefetch 1, at {rm['speed']:g}x their "
              f"cadence (they queue: the service is never idle), the child's resident memory sampled every 0.25 s "
              f"(tools/bench_service.py). Exit {rm['exit']}" + (" (every group done, some failed a QA gate)" if rm["exit"] == 3
                                                             else "") + f", {rm['wall_s']:.0f} s wall, "
              f"{rm['groups_per_hour']:.0f} groups per hour; group states "
              + ", ".join(f"{k} {v}" for k, v in rm["states"].items()) + ". Peak "
              f"{rm['peak_mib']:.0f} MiB"
              + (f"; the last five groups' peak over the first five's {rm['last5_over_first5']:.3f}"
                 if rm["last5_over_first5"] is not None else "") + ".", "",
              "Peak resident memory in each group's window (from the previous group's completion to its own), MiB:", "",
              "| group | " + " | ".join(str(i + 1) for i in range(len(w))) + " |",
              "| --- |" + " ---: |" * len(w),
              "| peak RSS (MiB) | " + " | ".join(f"{x:.0f}" for x in w) + " |", "",
              "The curve, resident memory (MiB) against time since launch (s), one sample every 5 s "
              "(each bar one sample, scaled between the smallest and largest):", "",
              f"`{_sparkline([m for _, m in rm['curve_t_s_rss_mib']])}`", "",
              "| time since launch (s) | " + " | ".join(f"{t:.0f}" for t, _ in rm["curve_t_s_rss_mib"][::12]) + " |",
              "| --- |" + " ---: |" * len(rm["curve_t_s_rss_mib"][::12]),
              "| RSS (MiB) | " + " | ".join(f"{m:.0f}" for _, m in rm["curve_t_s_rss_mib"][::12]) + " |"]
    L += ["", "## GPU", "",
          (f"Device {r['gpu']}." if r.get("gpu") else
           "No GPU on this machine: every GPU row (the chain on the device, gridding rate, device memory, the "
           "per-kernel profile) is empty, not estimated."), ""]
    Path(md_path).write_text("\n".join(L))
    print(f"wrote {md_path}")


# ---------------------------------------------------------------------------------------- regress

def regress(sim_dir: Path, *, repeats: int = 3) -> dict:
    """Per-stage seconds (median of ``repeats`` after a warm-up) of the first group of
    ``sim_dir`` (small, the ``test`` config) through read, flag, calibrate, image and write, in
    this process; each repeat into a fresh root."""
    import tempfile

    from contimg.config import load_config
    from contimg.io.naming import group_files, scan_folder
    from contimg.pipeline.stages import STAGES, GroupWork, run_stage

    cfg = load_config("test", use_env=False, overrides={"qa": {"plots": False},
                                                        "image": {"npix": 512, "niter": 300}})
    group = group_files(scan_folder(sim_dir), tolerance_s=60)[0]
    times: dict[str, list[float]] = {s: [] for s in STAGES}
    for k in range(1 + repeats):
        with tempfile.TemporaryDirectory() as tmp:
            work = GroupWork(group=group, root=Path(tmp))
            for stage in STAGES:
                t0 = time.perf_counter()
                run_stage(stage, work, cfg)
                if k:
                    times[stage].append(time.perf_counter() - t0)
    med = {s: statistics.median(v) for s, v in times.items()}
    return {"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "group": group.group_id,
            "repeats": repeats, "stages_s": med, "total_s": sum(med.values()),
            "machine": {"cores": os.cpu_count(), "platform": platform.platform()}}


def regress_table(res: dict, baseline: dict | None) -> list[str]:
    """Lines: each stage's seconds and its ratio to the baseline's."""
    lines = [f"regression benchmark (tools/bench.py regress, group {res['group']}, median of {res['repeats']}):"]
    for stage, v in [*res["stages_s"].items(), ("total", res["total_s"])]:
        b = None
        if baseline:
            b = baseline["total_s"] if stage == "total" else baseline["stages_s"].get(stage)
        lines.append(f"  {stage:10s} {v:8.3f} s" + (f"   {v / b:5.2f}x the baseline ({b:.3f} s, "
                                                    f"{baseline['date_utc'][:10]})" if b else ""))
    return lines


def cmd_regress(args: argparse.Namespace) -> int:
    import tempfile

    sim = args.sim_dir
    tmp = None
    if sim is None:
        from contimg.config import load_config
        from contimg.sim import simulate

        tmp = tempfile.TemporaryDirectory()
        sim = Path(tmp.name)
        simulate(sim, n_groups=1, cfg=load_config("test", use_env=False).simulate)
    res = regress(sim, repeats=args.repeats)
    baseline = json.loads(BASELINE.read_text()) if BASELINE.is_file() else None
    print("\n".join(regress_table(res, baseline)))
    if args.out:
        args.out.write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {args.out}")
    if tmp is not None:
        tmp.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--data", type=Path, default=Path("/tmp/rs2"), help="two real-size groups (simulated if empty)")
    r.add_argument("--work", type=Path, default=Path("/tmp/bench"))
    r.add_argument("--repeats", type=int, default=3)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--replay-speed", type=float, default=5.0)
    r.add_argument("--replay-data", type=Path, default=Path("/tmp/svcbench/in-real-20"),
                   help="real-size groups for the memory replay (simulated if it holds fewer)")
    r.add_argument("--replay-groups", type=int, default=20)
    r.add_argument("--out", type=Path, default=ROOT / "docs/benchmarks/bench.json")
    r.add_argument("--resume", action="store_true", help="keep the steps already in <work>/steps.json")
    r.set_defaults(func=cmd_run)
    p = sub.add_parser("report")
    p.add_argument("json", type=Path)
    p.set_defaults(func=lambda a: write_report(a.json, a.json.with_suffix(".md")) or 0)
    g = sub.add_parser("regress")
    g.add_argument("--sim-dir", type=Path, default=None, help="a simulated folder (default: simulate one small group)")
    g.add_argument("--repeats", type=int, default=3)
    g.add_argument("--out", type=Path, default=None)
    g.set_defaults(func=cmd_regress)
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
