"""contimg's CPU imaging beside WSClean on the same group (issue 6, CPU part).

    python tools/bench_image.py run --data /tmp/rs2 --work /tmp/imgbench \\
        --cal-group 2026-03-22T09:23:19 --group 2026-03-22T09:28:29 --json docs/benchmarks/imaging.json
    python tools/bench_image.py report --json docs/benchmarks/imaging.json     # the Markdown tables

`run`:
1. ``contimg run`` on the calibrator group alone (so the root holds its bandpass/gains), then on
   the imaged group alone, each in a child process: wall time, peak RSS (getrusage of the child,
   as tools/bench_cpu_group.py) and the per-stage seconds of summary.json. contimg's imaging
   time is the ``image`` stage of the second run.
2. ``contimg export-ms`` of the imaged group (midtime phasing).
3. WSClean on that MS: same size, cell, weighting, iterations, loop gain, major-cycle fraction,
   3-sigma auto threshold, CORRECTED_DATA, 2 threads, wgridder, no primary-beam correction.
4. Both restored images compared on their grids (WCS checked), residual robust RMS of each,
   RMS of the difference relative to the noise, and point-source fits at the truth positions.
Every child runs under ``nice -n -20`` (needs root; otherwise plain). Results in one JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

_WRAP = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
         "print('PEAK_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")


def _nice() -> list[str]:
    return ["nice", "-n", "-20"] if os.geteuid() == 0 else []


def _run(cmd: list[str], log: Path) -> dict:
    """Run ``cmd`` (niced) under a wrapper that reports the peak RSS of that command alone."""
    load = Path("/proc/loadavg").read_text().split()[:3]
    t0 = time.perf_counter()
    proc = subprocess.run([*_nice(), sys.executable, "-c", _WRAP, *cmd], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - t0
    log.write_text(proc.stdout)
    peak_kib = next((int(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("PEAK_KIB")), 0)
    if proc.returncode != 0:
        print(f"{cmd[:3]} exit {proc.returncode}:\n{proc.stdout[-3000:]}", file=sys.stderr)
    return {"cmd": " ".join(cmd), "wall_s": wall, "peak_rss_gib": peak_kib / 1024**2, "exit": proc.returncode,
            "loadavg_before": load}


def _link_group(data: Path, group: str, dest: Path) -> None:
    """Symlink the group's 16 subband files (their names start within a few seconds of the id)."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    stem = group[:-2]  # YYYY-MM-DDTHH:MM:
    s0 = int(group[-2:])
    for p in sorted(data.glob(f"{stem}*_sb*.hdf5")):
        if 0 <= int(p.name[len(stem):len(stem) + 2]) - s0 < 10:
            (dest / p.name).symlink_to(p)


def _versions() -> dict:
    import astropy
    import ducc0

    ws = subprocess.run(["wsclean", "--version"], capture_output=True, text=True).stdout
    m = re.search(r"WSClean version (\S+)", ws)
    try:
        import contimg
        ci = getattr(contimg, "__version__", "")
    except Exception:  # noqa: BLE001
        ci = ""
    commit = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent.parent), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    return {"wsclean": m.group(1) if m else ws.strip()[:80], "ducc0": ducc0.__version__, "numpy": np.__version__,
            "astropy": astropy.__version__, "python": platform.python_version(), "contimg": ci,
            "branch_commit": commit}


def _machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gib": round(mem / 1024**2, 1), "gpu": None,
            "os": platform.platform()}


def _wsclean_times(log: str) -> dict:
    """WSClean's own split: 'Inversion: 00:01:02, prediction: ..., deconvolution: ...'."""
    out = {}
    for key in ("Inversion", "prediction", "deconvolution"):
        m = re.search(rf"{key}: (\d+):(\d+):(\d+(?:\.\d+)?)", log)
        if m:
            out[key.lower() + "_s"] = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    m = re.findall(r"(\d+) iterations", log)
    if m:
        out["iterations_logged"] = int(m[-1])
    m = re.findall(r"Major loop|major iteration", log)
    out["major_loop_mentions"] = len(m)
    return out


# --------------------------------------------------------------------------------------------- compare
def _load(path: Path):
    from astropy.io import fits
    from astropy.wcs import WCS

    with fits.open(path) as h:
        data = np.asarray(h[0].data, dtype=np.float64).reshape(h[0].data.shape[-2:])
        hdr = h[0].header
    return data, hdr, WCS(hdr).celestial


def _mad(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return 1.4826 * float(np.median(np.abs(x - np.median(x))))


def compare(*, ci_stem: Path, ws_stem: Path, truth: Path, min_snr: float = 10.0, edge_px: int = 20) -> dict:
    from contimg.imaging.measure import fit_point_source
    import h5py

    ci, ci_h, ci_w = _load(Path(f"{ci_stem}.restored.fits"))
    ci_res = _load(Path(f"{ci_stem}.residual.fits"))[0]
    ci_pbcor = _load(Path(f"{ci_stem}.pbcor.fits"))[0]
    ws, ws_h, ws_w = _load(Path(f"{ws_stem}-image.fits"))
    ws_res = _load(Path(f"{ws_stem}-residual.fits"))[0]
    out: dict = {}
    # the grids: phase centre, cell, reference pixel
    n = ci.shape[0]
    centre = [n / 2, n / 2]
    ra_c, dec_c = (float(v) for v in ci_w.pixel_to_world_values(*centre))
    x_ws, y_ws = (float(v) for v in ws_w.world_to_pixel_values(ra_c, dec_c))
    out["grid"] = {
        "contimg": {"crval_deg": [ci_h["CRVAL1"], ci_h["CRVAL2"]], "crpix": [ci_h["CRPIX1"], ci_h["CRPIX2"]],
                    "cdelt_deg": [ci_h["CDELT1"], ci_h["CDELT2"]], "shape": list(ci.shape),
                    "ctype": [ci_h["CTYPE1"], ci_h["CTYPE2"]]},
        "wsclean": {"crval_deg": [ws_h["CRVAL1"], ws_h["CRVAL2"]], "crpix": [ws_h["CRPIX1"], ws_h["CRPIX2"]],
                    "cdelt_deg": [ws_h["CDELT1"], ws_h["CDELT2"]], "shape": list(ws.shape),
                    "ctype": [ws_h["CTYPE1"], ws_h["CTYPE2"]]},
        "contimg_centre_pixel_in_wsclean_px": [x_ws - centre[0], y_ws - centre[1]],
    }
    dra = ((ws_h["CRVAL1"] - ci_h["CRVAL1"] + 180.0) % 360.0 - 180.0) * np.cos(np.radians(ci_h["CRVAL2"])) * 3600
    ddec = (ws_h["CRVAL2"] - ci_h["CRVAL2"]) * 3600
    out["grid"]["phase_centre_offset_arcsec"] = float(np.hypot(dra, ddec))
    shift = np.array([x_ws - centre[0], y_ws - centre[1]])
    same = ws.shape == ci.shape and np.all(np.abs(shift) < 0.05) and np.isclose(abs(ws_h["CDELT1"]), abs(ci_h["CDELT1"]))
    out["grid"]["same_grid"] = bool(same)
    beams = {k: tuple(float(np.radians(h[b])) for b in ("BMAJ", "BMIN", "BPA")) for k, h in (("contimg", ci_h),
                                                                                            ("wsclean", ws_h))}
    out["beam_arcsec_deg"] = {k: [np.degrees(b[0]) * 3600, np.degrees(b[1]) * 3600, np.degrees(b[2])]
                              for k, b in beams.items()}
    s_ci, s_ws = _mad(ci_res), _mad(ws_res)
    out["residual_mad_rms_jy"] = {"contimg": s_ci, "wsclean": s_ws}
    out["residual_std_jy"] = {"contimg": float(np.nanstd(ci_res)), "wsclean": float(np.nanstd(ws_res))}
    out["restored_peak_jy"] = {"contimg": float(np.nanmax(ci)), "wsclean": float(np.nanmax(ws))}
    if same:
        d = ws - ci
        sig = s_ci
        inner = d[n // 4:3 * n // 4, n // 4:3 * n // 4]
        out["difference"] = {
            "rms_jy": float(np.sqrt(np.nanmean(d ** 2))), "mad_rms_jy": _mad(d),
            "rms_over_noise": float(np.sqrt(np.nanmean(d ** 2)) / sig), "mad_rms_over_noise": _mad(d) / sig,
            "inner_half_rms_over_noise": float(np.sqrt(np.nanmean(inner ** 2)) / sig),
            "max_abs_jy": float(np.nanmax(np.abs(d))), "noise_used": "contimg residual MAD rms",
        }
    # point sources at the truth positions: each image fitted with its own restoring beam
    pb = np.where(np.isfinite(ci_pbcor) & (ci_pbcor != 0), ci / np.where(ci_pbcor != 0, ci_pbcor, 1), np.nan)
    cell = np.radians(abs(ci_h["CDELT1"]))
    cell_ws = np.radians(abs(ws_h["CDELT1"]))
    with h5py.File(truth) as f:
        s = f["sources"]
        src = {k: s[k][()] for k in ("ra_rad", "dec_rad", "flux_jy", "spectral_index", "name")}
        ref = float(s.attrs["ref_freq_hz"])
    rows = []
    for i in range(src["ra_rad"].size):
        ra, dec = np.degrees(src["ra_rad"][i]), np.degrees(src["dec_rad"][i])
        x, y = (float(v) for v in ci_w.world_to_pixel_values(ra, dec))
        if not (edge_px <= x < n - edge_px and edge_px <= y < n - edge_px):
            continue
        att = float(pb[int(round(y)), int(round(x))])
        flux = float(src["flux_jy"][i] * (ci_h["CRVAL3"] / ref) ** src["spectral_index"][i])
        if not np.isfinite(att) or flux * att < min_snr * s_ci:
            continue
        xw, yw = (float(v) for v in ws_w.world_to_pixel_values(ra, dec))
        fc = fit_point_source(image=ci, x0=x, y0=y, beam_rad=beams["contimg"], cell_rad=cell)
        fw = fit_point_source(image=ws, x0=xw, y0=yw, beam_rad=beams["wsclean"], cell_rad=cell_ws)
        rows.append({
            "name": src["name"][i].decode(), "truth_jy": flux, "pb": att, "truth_apparent_jy": flux * att,
            "snr": flux * att / s_ci,
            "contimg_apparent_jy": fc.flux, "wsclean_apparent_jy": fw.flux,
            "wsclean_over_contimg": fw.flux / fc.flux,
            "contimg_over_truth": fc.flux / (flux * att), "wsclean_over_truth": fw.flux / (flux * att),
            "contimg_offset_px": float(np.hypot(fc.x - x, fc.y - y)),
            "wsclean_offset_px": float(np.hypot(fw.x - xw, fw.y - yw)),
        })
    rows.sort(key=lambda r: -r["truth_apparent_jy"])
    out["sources"] = rows

    def stats(key):
        v = np.array([r[key] for r in rows])
        return {"median": float(np.median(v)), "worst_abs_dev": float(np.max(np.abs(v - 1)))} if v.size else {}
    out["source_summary"] = {"n": len(rows), "min_snr": min_snr,
                             **{k: stats(k) for k in ("wsclean_over_contimg", "contimg_over_truth", "wsclean_over_truth")}}
    return out


# --------------------------------------------------------------------------------------------- run
def cmd_run(args) -> int:
    work, data = args.work.resolve(), args.data.resolve()
    work.mkdir(parents=True, exist_ok=True)
    state_path = work / "steps.json"
    steps = json.loads(state_path.read_text()) if (args.resume and state_path.exists()) else {}
    if not args.resume:
        shutil.rmtree(work / "root", ignore_errors=True)

    def save():
        state_path.write_text(json.dumps(steps, indent=2, default=float))

    root = work / "root"
    ci = [sys.executable, "-m", "contimg.cli"]
    # the first invocation's date and load are kept in steps.json: --resume only adds steps
    meta = steps.setdefault("_meta", {"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                      "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3]})
    result = {"date_utc": meta["date_utc"], "loadavg_at_start": meta["loadavg_at_start"],
              "machine": _machine(), "versions": _versions(), "niced": bool(_nice()),
              "groups": {"calibrator": args.cal_group, "imaged": args.group}, "data": str(data), "work": str(work),
              "config": args.config}
    for name, gid in (("contimg_cal_group", args.cal_group), ("contimg_group", args.group)):
        if name not in steps:
            inc = work / f"in-{name}"
            _link_group(data, gid, inc)
            r = _run([*ci, "run", str(inc), "--root", str(root), "--config", args.config], work / f"{name}.log")
            summary = json.loads((root / "summary.json").read_text())
            mine = next(s for s in summary if s["group_id"] == gid)
            r.update(n_files=len(list(inc.iterdir())), stages_s=mine.get("timings_s", {}),
                     image_stats=mine.get("image_stats", {}), status=mine.get("status"))
            steps[name] = r
            save()
    ms = work / "group.ms"
    if "export_ms" not in steps:
        steps["export_ms"] = _run([*ci, "export-ms", args.group, "--root", str(root), "--out", str(ms),
                                   "--config", args.config, "--phasing", "midtime"], work / "export_ms.log")
        save()
    wsdir = work / "wsclean"
    if "wsclean" not in steps:
        shutil.rmtree(wsdir, ignore_errors=True)
        wsdir.mkdir()
        import tomllib
        from importlib.resources import files
        icfg = tomllib.loads((files("contimg") / "configs" / f"{args.config}.toml").read_text())["image"]
        cmd = ["wsclean", "-name", str(wsdir / "field"), "-size", str(icfg["npix"]), str(icfg["npix"]),
               "-scale", f"{icfg['cell_arcsec']}asec", "-weight", icfg["weighting"], str(icfg["robust"]),
               "-niter", str(icfg["niter"]), "-gain", str(icfg["loop_gain"]),
               "-mgain", f"{1 - icfg['cycle_fraction']:.2f}", "-auto-threshold", str(icfg["threshold_sigma"]),
               "-pol", "I", "-data-column", "CORRECTED_DATA", "-j", "2", "-use-wgridder",
               "-wgridder-accuracy", str(icfg["epsilon"]), "-no-update-model-required",
               "-temp-dir", str(wsdir), str(ms)]
        r = _run(cmd, work / "wsclean.log")
        r.update(_wsclean_times((work / "wsclean.log").read_text()))
        steps["wsclean"] = r
        save()
    ci_stem = root / "products" / args.group / args.group
    wsdir_b = work / "wsclean-contimg-beam"
    if args.also_contimg_beam and "wsclean_contimg_beam" not in steps:
        # the same WSClean command, its restoring beam forced to contimg's (isolates the beam fit)
        from astropy.io import fits
        hb = fits.getheader(f"{ci_stem}.restored.fits")
        cmd = [c.replace(str(wsdir), str(wsdir_b)) for c in steps["wsclean"]["cmd"].split()]
        cmd[-1:-1] = ["-beam-shape", f"{hb['BMAJ'] * 3600:.3f}asec", f"{hb['BMIN'] * 3600:.3f}asec", f"{hb['BPA']:.3f}deg"]
        shutil.rmtree(wsdir_b, ignore_errors=True)
        wsdir_b.mkdir()
        r = _run(cmd, work / "wsclean_contimg_beam.log")
        r.update(_wsclean_times((work / "wsclean_contimg_beam.log").read_text()))
        steps["wsclean_contimg_beam"] = r
        save()
    try:
        result["compare"] = compare(ci_stem=ci_stem, ws_stem=wsdir / "field", truth=data / "truth.h5")
    except Exception as exc:  # noqa: BLE001 - record what failed, keep the timings
        result["compare"] = {"error": f"{type(exc).__name__}: {exc}"}
    if args.also_deep and "wsclean_deep" not in steps:
        # supplementary: contimg's beam and N components (to the 3-sigma stop): is the gap the clean depth?
        from astropy.io import fits
        hb = fits.getheader(f"{ci_stem}.restored.fits")
        wsdir_d = work / "wsclean-deep"
        cmd = [c.replace(str(wsdir), str(wsdir_d)) for c in steps["wsclean"]["cmd"].split()]
        cmd[cmd.index("-niter") + 1] = str(args.also_deep)
        cmd[-1:-1] = ["-beam-shape", f"{hb['BMAJ'] * 3600:.3f}asec", f"{hb['BMIN'] * 3600:.3f}asec", f"{hb['BPA']:.3f}deg"]
        shutil.rmtree(wsdir_d, ignore_errors=True)
        wsdir_d.mkdir()
        r = _run(cmd, work / "wsclean_deep.log")
        r.update(_wsclean_times((work / "wsclean_deep.log").read_text()))
        steps["wsclean_deep"] = r
        save()
    if "wsclean_deep" in steps:
        try:
            result["compare_deep"] = compare(ci_stem=ci_stem, ws_stem=work / "wsclean-deep" / "field", truth=data / "truth.h5")
        except Exception as exc:  # noqa: BLE001
            result["compare_deep"] = {"error": f"{type(exc).__name__}: {exc}"}
    if "wsclean_contimg_beam" in steps:
        try:
            result["compare_contimg_beam"] = compare(ci_stem=ci_stem, ws_stem=wsdir_b / "field", truth=data / "truth.h5")
        except Exception as exc:  # noqa: BLE001
            result["compare_contimg_beam"] = {"error": f"{type(exc).__name__}: {exc}"}
    result["steps"] = {k: v for k, v in steps.items() if k != "_meta"}
    img = steps["contimg_group"]["stages_s"].get("image")
    ws = steps["wsclean"]
    result["headline"] = {
        "contimg_image_stage_s": img, "contimg_group_run_wall_s": steps["contimg_group"]["wall_s"],
        "contimg_group_run_peak_rss_gib": steps["contimg_group"]["peak_rss_gib"],
        "wsclean_wall_s": ws["wall_s"], "wsclean_peak_rss_gib": ws["peak_rss_gib"], "wsclean_exit": ws["exit"],
        "ratio_contimg_image_over_wsclean": (img / ws["wall_s"]) if img and ws["exit"] == 0 else None,
        "meets_half_of_wsclean": bool(img and ws["exit"] == 0 and img <= 0.5 * ws["wall_s"]),
        "gpu": None,
    }
    args.json.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(report(result))
    return 0


# --------------------------------------------------------------------------------------------- report
def report(r: dict) -> str:
    h, st, c = r["headline"], r["steps"], r.get("compare", {})
    f = lambda v, p=1: "—" if v is None else f"{v:.{p}f}"  # noqa: E731
    lines = [f"Measured {r['date_utc']} on {r['machine']['cpu']}, {r['machine']['cores']} cores, "
             f"{r['machine']['mem_gib']} GiB; load average at start {' '.join(r['loadavg_at_start'])}; "
             f"children {'under nice -n -20' if r['niced'] else 'not niced'}. "
             f"WSClean {r['versions']['wsclean']}, ducc0 {r['versions']['ducc0']}, numpy {r['versions']['numpy']}.", "",
             "| step | wall (s) | peak RSS (GiB) | exit | notes |", "| --- | ---: | ---: | ---: | --- |"]
    for key, label in (("contimg_cal_group", "contimg run, calibrator group (not compared)"),
                       ("contimg_group", "contimg run, imaged group"), ("export_ms", "contimg export-ms"),
                       ("wsclean", "wsclean (whole command)"),
                       ("wsclean_contimg_beam", "wsclean, restoring beam forced to contimg's (supplementary)"),
                       ("wsclean_deep", "wsclean, contimg's beam, deeper -niter (supplementary)")):
        s = st.get(key)
        if not s:
            continue
        note = ", ".join(f"{k} {v:.1f}" for k, v in s.get("stages_s", {}).items())
        if key.startswith("wsclean"):
            note = ", ".join(f"{k[:-2]} {s[k]:.1f}" for k in ("inversion_s", "prediction_s", "deconvolution_s") if k in s)
        lines.append(f"| {label} | {s['wall_s']:.1f} | {s['peak_rss_gib']:.2f} | {s['exit']} | {note} |")
    lines += ["", "| imaging, same group and image | contimg (CPU, `image` stage) | WSClean | contimg / WSClean |",
              "| --- | ---: | ---: | ---: |",
              f"| wall time (s) | {f(h['contimg_image_stage_s'])} | {f(h['wsclean_wall_s'])} | "
              f"{f(h['ratio_contimg_image_over_wsclean'], 2)} |",
              f"| peak RSS (GiB), whole child process | {f(h['contimg_group_run_peak_rss_gib'], 2)} (whole `contimg run`) | "
              f"{f(h['wsclean_peak_rss_gib'], 2)} | "
              f"{f(h['contimg_group_run_peak_rss_gib'] / h['wsclean_peak_rss_gib'] if h['wsclean_peak_rss_gib'] else None, 2)} |",
              f"| GPU | not measured (no GPU on this machine) | — | — |", "",
              f"At most half WSClean's time: **{'yes' if h['meets_half_of_wsclean'] else 'no'}**."]
    if "error" in c:
        lines += ["", f"Comparison failed: `{c['error']}`"]
        return "\n".join(lines)
    if c:
        g = c["grid"]
        b = c["beam_arcsec_deg"]
        lines += ["", "| image | contimg | WSClean |", "| --- | ---: | ---: |",
                  f"| phase centre (deg) | {g['contimg']['crval_deg'][0]:.6f}, {g['contimg']['crval_deg'][1]:.6f} | "
                  f"{g['wsclean']['crval_deg'][0]:.6f}, {g['wsclean']['crval_deg'][1]:.6f} |",
                  f"| restoring beam (″, ″, °) | {b['contimg'][0]:.2f} × {b['contimg'][1]:.2f}, {b['contimg'][2]:.1f} | "
                  f"{b['wsclean'][0]:.2f} × {b['wsclean'][1]:.2f}, {b['wsclean'][2]:.1f} |",
                  f"| residual robust RMS (mJy/beam) | {c['residual_mad_rms_jy']['contimg'] * 1e3:.3f} | "
                  f"{c['residual_mad_rms_jy']['wsclean'] * 1e3:.3f} |",
                  f"| restored peak (Jy/beam) | {c['restored_peak_jy']['contimg']:.3f} | {c['restored_peak_jy']['wsclean']:.3f} |",
                  "", f"Phase centres {g['phase_centre_offset_arcsec']:.3f}″ apart; same grid: "
                  f"{'yes' if g['same_grid'] else 'no'} (contimg's centre at WSClean pixel offset "
                  f"{g['contimg_centre_pixel_in_wsclean_px'][0]:+.3f}, {g['contimg_centre_pixel_in_wsclean_px'][1]:+.3f})."]
        d = c.get("difference")
        if d:
            lines += ["", f"Difference WSClean − contimg restored: RMS {d['rms_jy'] * 1e3:.3f} mJy/beam = "
                      f"{d['rms_over_noise']:.2f} × contimg's noise (robust RMS {d['mad_rms_over_noise']:.2f} ×; "
                      f"inner half of the image {d['inner_half_rms_over_noise']:.2f} ×); largest |difference| "
                      f"{d['max_abs_jy'] * 1e3:.1f} mJy/beam."]
        ss = c["source_summary"]
        if ss["n"]:
            lines += ["", f"Sources above {ss['min_snr']:.0f}σ (truth flux × contimg's averaged primary beam): {ss['n']}; "
                      f"median WSClean/contimg {ss['wsclean_over_contimg']['median']:.3f}, "
                      f"contimg/truth {ss['contimg_over_truth']['median']:.3f} (worst {ss['contimg_over_truth']['worst_abs_dev']:.1%}), "
                      f"WSClean/truth {ss['wsclean_over_truth']['median']:.3f} (worst {ss['wsclean_over_truth']['worst_abs_dev']:.1%}).",
                      "", "| source | truth (Jy) | PB | apparent truth (mJy) | contimg (mJy) | WSClean (mJy) | "
                      "WSClean/contimg | contimg/truth | WSClean/truth |",
                      "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
            for s in c["sources"]:
                lines.append(f"| {s['name']} | {s['truth_jy']:.3f} | {s['pb']:.3f} | {s['truth_apparent_jy'] * 1e3:.1f} | "
                             f"{s['contimg_apparent_jy'] * 1e3:.1f} | {s['wsclean_apparent_jy'] * 1e3:.1f} | "
                             f"{s['wsclean_over_contimg']:.3f} | {s['contimg_over_truth']:.3f} | {s['wsclean_over_truth']:.3f} |")
    for key, title in (("compare_contimg_beam", "the same WSClean command with `-beam-shape` set to contimg's "
                        "restoring beam"),
                       ("compare_deep", "WSClean with contimg's restoring beam and -niter "
                        + (st.get("wsclean_deep", {}).get("cmd", "").split("-niter ")[-1].split()[0] if "wsclean_deep" in st else "")
                        + " (not the same iterations: how deep WSClean must clean)")):
      cb = r.get(key)
      if cb and "error" not in cb:
        b, d, ss = cb["beam_arcsec_deg"], cb.get("difference", {}), cb["source_summary"]
        lines += ["", f"Supplementary: {title} "
                  f"(WSClean beam {b['wsclean'][0]:.2f}″ × {b['wsclean'][1]:.2f}″, {b['wsclean'][2]:.1f}°):", "",
                  "| figure | value |", "| --- | ---: |",
                  f"| WSClean residual robust RMS (mJy/beam) | {cb['residual_mad_rms_jy']['wsclean'] * 1e3:.3f} |"]
        if d:
            lines += [f"| difference RMS / contimg noise | {d['rms_over_noise']:.2f} |",
                      f"| difference robust RMS / contimg noise | {d['mad_rms_over_noise']:.2f} |",
                      f"| difference RMS / noise, inner half | {d['inner_half_rms_over_noise']:.2f} |",
                      f"| largest abs. difference (mJy/beam) | {d['max_abs_jy'] * 1e3:.1f} |"]
        if ss["n"]:
            lines += [f"| sources > {ss['min_snr']:.0f}σ | {ss['n']} |",
                      f"| median WSClean / contimg (apparent) | {ss['wsclean_over_contimg']['median']:.3f} |",
                      f"| median WSClean / truth (worst) | {ss['wsclean_over_truth']['median']:.3f} "
                      f"({ss['wsclean_over_truth']['worst_abs_dev']:.1%}) |"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run")
    p.add_argument("--data", type=Path, required=True, help="folder of subband files with truth.h5")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--cal-group", required=True)
    p.add_argument("--group", required=True, help="the group imaged by both")
    p.add_argument("--config", default="dsa110")
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--resume", action="store_true", help="reuse the steps already in <work>/steps.json")
    p.add_argument("--also-deep", type=int, metavar="N",
                   help="also run WSClean with contimg's beam and -niter N (supplementary: clean depth)")
    p.add_argument("--also-contimg-beam", action="store_true",
                   help="also run WSClean with its restoring beam forced to contimg's (-beam-shape) and compare")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("report")
    p.add_argument("--json", type=Path, required=True)
    p.set_defaults(func=lambda a: print(report(json.loads(a.json.read_text()))) or 0)
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
