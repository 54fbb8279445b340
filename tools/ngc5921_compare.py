"""contimg's calibration of the VLA NGC5921 data set beside CASA's: the flux density each
transfers to 1445+099, and the per-antenna gains.

Runs in contimg's environment (never CASA's). CASA's side is read from the committed
``docs/benchmarks/ngc5921_casa.json`` (made by ``tools/casa_ngc5921.py calibrate`` in the CASA
venv), or, with ``--run-casa``, rerun first as a subprocess with the CASA venv's python so that
both sides run in this one tool run:

    python tools/ngc5921_compare.py run [--run-casa] \\
        [--out docs/benchmarks/ngc5921_compare.json] [--md docs/benchmarks/ngc5921.md]
    python tools/ngc5921_compare.py summary docs/benchmarks/ngc5921_compare.json \\
        [--md docs/benchmarks/ngc5921.md]   # the markdown figures (between the doc's markers)

contimg's side, with CASA's choices (``contimg.calibrate.fluxscale``): the UVFITS read by pyuvdata;
scans from field changes and time gaps (pyuvdata merges 1445+099's scans 4 and 5); antennas
matched to CASA's by station; 3C286 = Perley-Butler 2017 per channel, a point source at the phase
centre; bandpass on 3C286 over its scan, all 63 channels, not normalised, refant VLA:N2 (CASA's
"15"); per-scan amplitude+phase gains on both calibrators with the bandpass applied, on data
averaged over channels 6~56 (1445+099 with a 1 Jy model, as gaincal without a model); the flux
transfer as CASA's fluxscale computes it. Autocorrelations are left out by the solver. The data
weights are not used: they are constant over each calibrator's rows in this file (6 on the
calibrators, 12 on NGC5921), so CASA's weighted solves weigh every calibrator sample the same.

Compared per solution (scan), antenna and polarization: the band-averaged gains g * mean(B over
6~56) (independent of how the bandpass is normalised), before the flux transfer (3C286's scale on
both fields) and after it (1445+099's gains divided by sqrt(flux), each side by its own flux):
amplitude ratio contimg / CASA and phase difference, each side's phases referred to VLA:N2.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "tools"))

import casa_ngc5921 as casa_tool  # noqa: E402  (stdlib + numpy at import: no CASA needed)

from contimg.calibrate.fluxscale import (flux_transfer, perley_butler_2017_3c286, solve_bandpass,  # noqa: E402
                               solve_scan_gain, split_scans)

DATA = casa_tool.DATA
CASA_JSON = ROOT / "docs/benchmarks/ngc5921_casa.json"
CASA_PYTHON = Path(os.environ.get("CASA_VENV", "/work/casa-venv")) / "bin/python"
FLUXCAL, PHASECAL = "1331+305", "1445+099"
REFANT_STATION = "VLA:N2"  # CASA's "15"
CHANS = (6, 56)
MAX_GAP_S = 300.0  # a new scan after a gap longer than this: data are 30-60 s apart within scans
MIN_SNR_BANDPASS, MIN_SNR_GAIN = 3.0, 1.0  # CASA's minsnr for bandpass and gaincal in its run


def _mjd_s(jd: np.ndarray) -> np.ndarray:
    return (np.asarray(jd, np.float64) - 2400000.5) * 86400.0


def read_uvfits(path: Path) -> dict:
    """The UVFITS through pyuvdata: per row (time, baseline) data (in the file's conjugation, which
    is CASA's), flags, fields; antenna names (stations) indexed by antenna number; frequencies."""
    from pyuvdata import UVData

    with warnings.catch_warnings():  # "uvw_array does not match": known for this file, unused here
        warnings.simplefilter("ignore")
        uv = UVData.from_file(str(path), file_type="uvfits")
    tel = uv.telescope
    names = np.array([""] * (int(tel.antenna_numbers.max()) + 1), dtype=object)
    names[tel.antenna_numbers] = tel.antenna_names
    cat = {int(k): v["cat_name"] for k, v in uv.phase_center_catalog.items()}
    pols = {-1: "RR", -2: "LL", -3: "RL", -4: "LR"}
    # pyuvdata conjugates UVFITS visibilities on read (and flips the uvws: its convention is the
    # opposite of FITS's, pyuvdata/uvdata/uvfits.py) and back on MS write. Undo it: the data as in
    # the file and in CASA's MS, so that gains come out in CASA's convention (else conj(g_CASA)).
    return {"data": np.conj(uv.data_array), "flags": uv.flag_array, "ant1": uv.ant_1_array, "ant2": uv.ant_2_array,
            "time_s": _mjd_s(uv.time_array), "field": np.array([cat[int(i)] for i in uv.phase_center_id_array]),
            "freq_hz": np.asarray(uv.freq_array).ravel(), "antenna_names": names.astype(str),
            "pols": [pols[int(p)] for p in uv.polarization_array]}


def scan_arrays(d: dict, rows: np.ndarray) -> dict:
    """Rows of one scan as (ntime, nbl, nchan, npol) arrays over its cross-correlation baselines;
    absent (time, baseline) samples are flagged."""
    a1, a2 = d["ant1"][rows], d["ant2"][rows]
    cross = a1 != a2
    rows, a1, a2 = rows[cross], a1[cross], a2[cross]
    bl, kb = np.unique(np.stack([a1, a2], 1), axis=0, return_inverse=True)
    ut, kt = np.unique(d["time_s"][rows], return_inverse=True)
    nchan, npol = d["data"].shape[1:]
    vis = np.zeros((ut.size, len(bl), nchan, npol), np.complex64)
    flags = np.ones(vis.shape, bool)
    vis[kt, kb.ravel()] = d["data"][rows]
    flags[kt, kb.ravel()] = d["flags"][rows]
    return {"vis": vis, "flags": flags, "ant1": bl[:, 0], "ant2": bl[:, 1], "time_s": ut}


def contimg_side(fits: Path = DATA, *, flux_scale: float = 1.0) -> dict:
    """contimg's calibration of the file (module docstring). ``flux_scale`` multiplies 3C286's
    model (1 for the real run; tests perturb it to see the comparison fail)."""
    t = {}
    t0 = time.perf_counter()
    d = read_uvfits(fits)
    t["read_uvfits"] = time.perf_counter() - t0
    scans = split_scans(time_s=d["time_s"], field=d["field"], max_gap_s=MAX_GAP_S)
    freq = d["freq_hz"]
    model_fc = flux_scale * perley_butler_2017_3c286(freq_hz=freq)
    names = d["antenna_names"]
    refant = names[np.flatnonzero(names == REFANT_STATION)[0]]
    scan_list = []
    for s in np.unique(scans):
        rows = np.flatnonzero(scans == s)
        f = str(d["field"][rows[0]])
        scan_list.append({"scan": int(s), "field": f, "rows": rows,
                          "start_mjd_s": float(d["time_s"][rows].min()), "end_mjd_s": float(d["time_s"][rows].max())})
    fc_scans = [x for x in scan_list if x["field"].startswith(FLUXCAL)]
    pc_scans = [x for x in scan_list if x["field"].startswith(PHASECAL)]
    if len(fc_scans) != 1:
        raise SystemExit(f"expected one {FLUXCAL} scan, found {len(fc_scans)}")

    t0 = time.perf_counter()
    fc = scan_arrays(d, fc_scans[0]["rows"])
    bp = solve_bandpass(vis=fc["vis"], flags=fc["flags"], ant1=fc["ant1"], ant2=fc["ant2"], model_jy=model_fc,
                        antenna_names=names, refant=refant, min_snr=MIN_SNR_BANDPASS)
    t["bandpass"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    sols = []
    for x, model in [(fc_scans[0], model_fc)] + [(x, np.ones_like(freq)) for x in pc_scans]:
        a = fc if x is fc_scans[0] else scan_arrays(d, x["rows"])
        g = solve_scan_gain(vis=a["vis"], flags=a["flags"], ant1=a["ant1"], ant2=a["ant2"], model_jy=model,
                            bandpass=bp, chan_lo=CHANS[0], chan_hi=CHANS[1], antenna_names=names, refant=refant,
                            min_snr=MIN_SNR_GAIN)
        if not np.array_equal(g["antenna_numbers"], bp["antenna_numbers"]):
            raise SystemExit(f"scan {x['scan']}: antennas differ from the bandpass's")
        sols.append({"scan": x["scan"], "field": x["field"], "time_mjd_s": float(a["time_s"].mean()),
                     "start_mjd_s": x["start_mjd_s"], "end_mjd_s": x["end_mjd_s"], "ntime": int(a["time_s"].size),
                     "gains": g["gains"], "flags": g["flags"], "snr": g["snr"], "refant": g["refant"],
                     "iterations": g["iterations"]})
    t["gaincal"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    ref = [s for s in sols if s["field"].startswith(FLUXCAL)]
    tran = [s for s in sols if s["field"].startswith(PHASECAL)]
    ft = flux_transfer(ref_amp=np.abs([s["gains"] for s in ref]), ref_flags=np.array([s["flags"] for s in ref]),
                       tran_amp=np.abs([s["gains"] for s in tran]), tran_flags=np.array([s["flags"] for s in tran]))
    t["fluxscale"] = time.perf_counter() - t0
    t["total"] = sum(t.values())

    b = bp["gains"][:, CHANS[0]:CHANS[1] + 1, :]
    bf = bp["flags"][:, CHANS[0]:CHANS[1] + 1, :]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        bmean = np.nanmean(np.where(bf, np.nan, b), axis=1)  # (nant, npol), as CASA's JSON's g * mean(B)
    for s in sols:
        s["bandavg"] = np.where(s["flags"], np.nan, s["gains"] * bmean)
        scale = 1.0 / np.sqrt(ft.flux_jy) if s["field"].startswith(PHASECAL) else 1.0
        s["bandavg_fluxscaled"] = s["bandavg"] * scale
    return {"antenna_numbers": bp["antenna_numbers"], "antenna_names": names, "pols": d["pols"],
            "scans": [{k: v for k, v in x.items() if k != "rows"} | {"nrows": int(x["rows"].size)} for x in scan_list],
            "bandpass": bp, "solutions": sols, "flux": ft, "model_3c286_jy": model_fc, "freq_hz": freq,
            "timings_s": t}


def _casa_array(sol: dict, key: str) -> np.ndarray:
    """[antenna][pol] list with nulls -> (nant, npol) float (NaN)."""
    return np.array([[np.nan if v is None else v for v in a] for a in sol[key]], float)


def compare(c: dict, casa: dict) -> dict:
    """contimg (``contimg_side``) against CASA's JSON: flux, and band-averaged gains per solution,
    antenna (CASA's IDs, matched by station) and polarization."""
    if casa["pols"] != c["pols"]:
        raise SystemExit(f"polarizations differ: CASA {casa['pols']}, contimg {c['pols']}")
    station_to_k = {str(c["antenna_names"][n]): k for k, n in enumerate(c["antenna_numbers"])}
    ants = casa["antennas"]
    refid = casa["choices"]["refant"]["id"]
    if ants[refid]["station"] != REFANT_STATION:
        raise SystemExit(f"CASA's refant is {ants[refid]['station']}, contimg's {REFANT_STATION}")
    fs = casa["fluxscale"]
    out = {"flux_1445": {"contimg_jy": c["flux"].flux_jy, "contimg_err_jy": c["flux"].flux_err_jy,
                         "contimg_n": c["flux"].n, "casa_jy": fs["flux_jy"], "casa_err_jy": fs["flux_err_jy"],
                         "casa_n": fs["n_solutions"], "ratio_contimg_over_casa": c["flux"].flux_jy / fs["flux_jy"]}}
    for kind, ckey, casakey in [("before_fluxscale", "bandavg", "gains"),
                                ("after_fluxscale", "bandavg_fluxscaled", "gains_fluxscaled")]:
        per_sol = []
        all_ratio, all_dph = [], []
        for cs in casa[casakey]["solutions"]:
            # the contimg solution of the same field nearest in time (CASA's time: the scan's mean)
            cand = [s for s in c["solutions"] if cs["field"].startswith(s["field"][:8])]
            s = min(cand, key=lambda x: abs(x["time_mjd_s"] - cs["time_mjd_s"]))
            if abs(s["time_mjd_s"] - cs["time_mjd_s"]) > 60:
                raise SystemExit(f"no contimg solution near CASA's {cs['field']} scan {cs['scan']}")
            ca = _casa_array(cs, "amp_bandavg") * np.exp(1j * np.radians(_casa_array(cs, "phase_deg_bandavg")))
            gc = np.full(ca.shape, np.nan + 0j)
            for i, a in enumerate(ants):
                k = station_to_k.get(a["station"])
                if k is not None:
                    gc[i] = s[ckey][k]
            # each side's phases referred to the reference antenna (both are already, to rounding)
            ca = ca * np.exp(-1j * np.angle(ca[refid]))[None, :]
            gc = gc * np.exp(-1j * np.angle(gc[refid]))[None, :]
            ratio = np.abs(gc) / np.abs(ca)
            dph = np.degrees(np.angle(gc * np.conj(ca)))
            ok = np.isfinite(ratio) & np.isfinite(dph)
            only_one = int((np.isfinite(ca) != np.isfinite(gc)).sum())
            all_ratio.append(ratio[ok]), all_dph.append(dph[ok])
            dev = np.where(ok, np.abs(ratio - 1), -1)
            i_worst = np.unravel_index(np.argmax(dev), dev.shape)
            per_sol.append({"field": cs["field"], "casa_scan": cs["scan"], "contimg_scan": s["scan"],
                            "time_diff_s": s["time_mjd_s"] - cs["time_mjd_s"], "n": int(ok.sum()),
                            "solutions_on_one_side_only": only_one,
                            "amp_ratio_median": float(np.median(ratio[ok])),
                            "amp_ratio_max_abs_dev": float(np.abs(ratio[ok] - 1).max()),
                            "amp_worst": {"antenna": ants[i_worst[0]]["name"], "station": ants[i_worst[0]]["station"],
                                          "pol": casa["pols"][i_worst[1]], "ratio": float(ratio[i_worst])},
                            "phase_diff_deg_median": float(np.median(dph[ok])),
                            "phase_diff_deg_max_abs": float(np.abs(dph[ok]).max()),
                            "amp_ratio": ratio, "phase_diff_deg": dph})
        r, p = np.concatenate(all_ratio), np.concatenate(all_dph)
        out[kind] = {"n": int(r.size), "amp_ratio_median": float(np.median(r)),
                     "amp_ratio_median_abs_dev": float(np.median(np.abs(r - 1))),
                     "amp_ratio_max_abs_dev": float(np.abs(r - 1).max()),
                     "phase_diff_deg_median": float(np.median(p)),
                     "phase_diff_deg_median_abs": float(np.median(np.abs(p))),
                     "phase_diff_deg_max_abs": float(np.abs(p).max()), "solutions": per_sol}
    # the bandpass itself, channels 6~56 (depends on both sides' normalisation: both unnormalised)
    cb = np.array(casa["bandpass"]["amp"], dtype=float) * np.exp(1j * np.radians(np.array(casa["bandpass"]["phase_deg"], float)))
    gb = np.full(cb.shape, np.nan + 0j)
    for i, a in enumerate(ants):
        k = station_to_k.get(a["station"])
        if k is not None:
            gb[i] = np.where(c["bandpass"]["flags"][k], np.nan, c["bandpass"]["gains"][k])
    sl = slice(CHANS[0], CHANS[1] + 1)
    br = (np.abs(gb) / np.abs(cb))[:, sl]
    bd = np.degrees(np.angle(gb * np.conj(cb)))[:, sl]
    ok = np.isfinite(br) & np.isfinite(bd)
    out["bandpass_chans_6_56"] = {"n": int(ok.sum()), "amp_ratio_median": float(np.median(br[ok])),
                                  "amp_ratio_max_abs_dev": float(np.abs(br[ok] - 1).max()),
                                  "phase_diff_deg_max_abs": float(np.abs(bd[ok]).max())}
    return out


def _dumps(obj) -> str:
    text = json.dumps(obj, indent=1)
    return re.sub(r"\[\s+([^\[\]{}\"]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text) + "\n"


def _rel(p: Path) -> str:
    p = Path(p).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def run_casa(fits: Path, out: Path) -> float:
    """tools/casa_ngc5921.py calibrate in the CASA venv (a subprocess); its wall time."""
    t0 = time.perf_counter()
    cmd = [str(CASA_PYTHON), str(ROOT / "tools/casa_ngc5921.py"), "calibrate", "--fits", str(fits), "--out", str(out),
           "--skip-pyuvdata"]
    print("running:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def cmd_run(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    casa_wall = None
    with tempfile.TemporaryDirectory() as tmp:
        casa_path = args.casa_json
        if args.run_casa:
            casa_path = Path(tmp) / "ngc5921_casa.json"
            casa_wall = run_casa(args.fits, casa_path)
        casa = json.loads(Path(casa_path).read_text())
    c = contimg_side(args.fits)
    cmp = compare(c, casa)
    sols = [{k: s[k] for k in ("scan", "field", "time_mjd_s", "start_mjd_s", "end_mjd_s", "ntime", "refant",
                               "iterations")}
            | {"amp": np.abs(s["gains"]), "phase_deg": np.degrees(np.angle(s["gains"])), "flag": s["flags"],
               "snr": np.round(s["snr"], 2), "amp_bandavg": np.abs(s["bandavg"]),
               "phase_deg_bandavg": np.degrees(np.angle(s["bandavg"]))} for s in c["solutions"]]
    ft = c["flux"]
    result = {
        "tool": "tools/ngc5921_compare.py run",
        "command": " ".join(["python", *sys.argv]),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_1_5_15_at_start": load},
        "input": str(args.fits),
        "casa_json": {"path": "rerun by this tool (--run-casa)" if args.run_casa else _rel(args.casa_json),
                      "date_utc": casa["date_utc"], "casa": casa["versions"]["casa"]},
        "choices": {"refant_station": REFANT_STATION, "gain_channels": list(CHANS), "max_gap_s": MAX_GAP_S,
                    "min_snr_bandpass": MIN_SNR_BANDPASS, "min_snr_gain": MIN_SNR_GAIN,
                    "flux_model": "3C286 Perley-Butler 2017 per channel (contimg.calibrate.fluxscale), point source at the "
                                  "phase centre; 1445+099 1 Jy",
                    "gain_solve": "bandpass divided out, data and model averaged over channels 6~56, then "
                                  "solve_gains (one channel) per scan",
                    "weights": "not used (constant over each calibrator's rows in this file)"},
        "model_3c286_jy": {"first_channel": float(c["model_3c286_jy"][0]),
                           "first_channel_freq_hz": float(c["freq_hz"][0])},
        "scans": c["scans"],
        "flux_1445": cmp["flux_1445"],
        "gains_before_fluxscale": cmp["before_fluxscale"],
        "gains_after_fluxscale": cmp["after_fluxscale"],
        "bandpass_chans_6_56": cmp["bandpass_chans_6_56"],
        "contimg": {"antennas": [{"number": int(n), "station": str(c["antenna_names"][n])} for n in c["antenna_numbers"]],
                    "pols": c["pols"], "flux_ratio_per_antenna": ft.ratio, "solutions": sols,
                    "bandpass_iterations": c["bandpass"]["iterations"]},
        "timings_s": {"contimg": {k: round(v, 3) for k, v in c["timings_s"].items()},
                      "casa": {k: casa["timings_s"].get(k) for k in ("importuvfits", "setjy", "bandpass", "gaincal",
                                                                     "fluxscale", "casa_tasks_total")}
                      | {"subprocess_wall": round(casa_wall, 3) if casa_wall else None},
                      "tool_wall_total": None},
    }
    result["timings_s"]["tool_wall_total"] = round(time.perf_counter() - t_start, 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(_dumps(casa_tool._jsonable(result, digits=9)))
    print(f"1445+099: contimg {ft.flux_jy:.5f} +/- {ft.flux_err_jy:.5f} Jy, CASA {cmp['flux_1445']['casa_jy']:.5f} Jy,"
          f" ratio {cmp['flux_1445']['ratio_contimg_over_casa']:.6f}")
    print(f"wrote {args.out}")
    if args.md is not None:
        write_md(args.md, summary_text(json.loads(args.out.read_text())))
    return 0


def summary_text(r: dict) -> str:
    """Markdown figures of a compare JSON: what docs/benchmarks/ngc5921.md quotes."""
    f, t = r["flux_1445"], r["timings_s"]
    L = [f"contimg (`contimg.calibrate.fluxscale`) beside CASA {r['casa_json']['casa']} (CASA's JSON of "
         f"{r['casa_json']['date_utc']}, {r['casa_json']['path']}), {r['date_utc']}, {r['machine']['cpus']} CPUs"
         + (f" (load average {r['machine']['load_average_1_5_15_at_start'][0]:.2f} at the start)."
            if r["machine"].get("load_average_1_5_15_at_start") else "."), ""]
    L += ["| quantity | contimg | CASA | contimg / CASA |", "|---|---|---|---|"]
    L.append(f"| **1445+099 flux density** | **{f['contimg_jy']:.5f} ± {f['contimg_err_jy']:.5f} Jy** "
             f"(N = {f['contimg_n']}) | {f['casa_jy']:.5f} ± {f['casa_err_jy']:.5f} Jy (N = {f['casa_n']}) | "
             f"**{f['ratio_contimg_over_casa']:.6f}** |")
    L.append(f"| 3C286 model, first channel ({r['model_3c286_jy']['first_channel_freq_hz'] / 1e6:.3f} MHz) | "
             f"{r['model_3c286_jy']['first_channel']:.4f} Jy | (setjy, see above) | |")
    L.append("")
    L.append("Band-averaged gains g·mean(B, ch 6~56), per solution, antenna and polarization, phases referred to "
             "VLA:N2 (\"15\"):")
    L.append("")
    L.append("| gains | N | amplitude ratio contimg/CASA: median | median abs. dev. | max abs. dev. | "
             "phase diff.: median | median abs. | max abs. |")
    L.append("|---|---|---|---|---|---|---|---|")
    for k, label in [("gains_before_fluxscale", "before fluxscale (3C286's scale)"),
                     ("gains_after_fluxscale", "after fluxscale (each side its own flux)")]:
        g = r[k]
        L.append(f"| {label} | {g['n']} | {g['amp_ratio_median']:.6f} | {g['amp_ratio_median_abs_dev']:.2e} | "
                 f"{g['amp_ratio_max_abs_dev']:.2e} | {g['phase_diff_deg_median']:+.4f}° | "
                 f"{g['phase_diff_deg_median_abs']:.4f}° | {g['phase_diff_deg_max_abs']:.4f}° |")
    L.append("")
    L.append("| solution (CASA scan) | N | amp. ratio median | max abs. dev. (antenna, pol) | phase max abs. |")
    L.append("|---|---|---|---|---|")
    for s in r["gains_before_fluxscale"]["solutions"]:
        w = s["amp_worst"]
        L.append(f"| {s['field'][:8]} scan {s['casa_scan']} (contimg scan {s['contimg_scan']}) | {s['n']} | "
                 f"{s['amp_ratio_median']:.6f} | {s['amp_ratio_max_abs_dev']:.2e} ({w['antenna']} = {w['station']}, "
                 f"{w['pol']}) | {s['phase_diff_deg_max_abs']:.4f}° |")
    b = r["bandpass_chans_6_56"]
    L.append("")
    L.append(f"Bandpass (both unnormalised), channels 6~56, {b['n']} antenna-channel-pol values: amplitude ratio median "
             f"{b['amp_ratio_median']:.6f}, max abs. dev. {b['amp_ratio_max_abs_dev']:.2e}; phase max abs. diff. "
             f"{b['phase_diff_deg_max_abs']:.4f}°.")
    L.append("")
    tc, tk = t["contimg"], t["casa"]
    L.append("| step | contimg (s) | CASA (s) |")
    L.append("|---|---|---|")
    L.append(f"| read (pyuvdata UVFITS / importuvfits) | {tc['read_uvfits']:.2f} | {tk['importuvfits']:.2f} |")
    L.append(f"| bandpass | {tc['bandpass']:.2f} | {tk['bandpass']:.2f} |")
    L.append(f"| gaincal (5 scans) | {tc['gaincal']:.2f} | {tk['gaincal']:.2f} |")
    L.append(f"| fluxscale | {tc['fluxscale']:.4f} | {tk['fluxscale']:.2f} |")
    L.append(f"| total | {tc['total']:.2f} | {tk['casa_tasks_total']:.2f} (all CASA tasks of its run) |")
    if tk.get("subprocess_wall"):
        L.append(f"| CASA's tool as a subprocess (wall) | | {tk['subprocess_wall']:.2f} |")
    L.append(f"| this tool (wall) | {t['tool_wall_total']:.2f} | |")
    return "\n".join(L)


def write_md(md: Path, text: str) -> None:
    md_text = md.read_text()
    pat = re.compile(r"(<!-- compare: begin[^\n]*-->\n)(.*?)(<!-- compare: end -->)", re.S)
    if not pat.search(md_text):
        raise SystemExit(f"{md}: no <!-- compare: begin ... --> / <!-- compare: end --> markers")
    md.write_text(pat.sub(lambda m: m.group(1) + text + "\n" + m.group(3), md_text, count=1))
    print(f"updated {md}")


def cmd_summary(args: argparse.Namespace) -> int:
    text = summary_text(json.loads(Path(args.json).read_text()))
    if args.md is None:
        print(text)
    else:
        write_md(args.md, text)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="contimg's calibration beside CASA's, JSON (and markdown) out")
    r.add_argument("--fits", type=Path, default=DATA)
    r.add_argument("--casa-json", type=Path, default=CASA_JSON, help="CASA's committed result (without --run-casa)")
    r.add_argument("--run-casa", action="store_true", help=f"rerun CASA first ({CASA_PYTHON}, a subprocess)")
    r.add_argument("--out", type=Path, default=ROOT / "docs/benchmarks/ngc5921_compare.json")
    r.add_argument("--md", type=Path, default=None, help="rewrite the block between the compare markers of this file")
    m = sub.add_parser("summary", help="markdown figures from a compare JSON")
    m.add_argument("json", type=Path)
    m.add_argument("--md", type=Path, default=None)
    args = ap.parse_args(argv)
    return {"run": cmd_run, "summary": cmd_summary}[args.cmd](args)


if __name__ == "__main__":
    raise SystemExit(main())
