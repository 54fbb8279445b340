"""CASA's calibration of the VLA NGC5921 data set, the reference that contimg's solver is checked
against on real data; and CASA's applycal of any caltable (CASA's own or one contimg exports).

Runs with the CASA venv's python (``bash tools/install_casa.sh`` makes it), never contimg's:

    /work/casa-venv/bin/python tools/casa_ngc5921.py calibrate \\
        --out docs/benchmarks/ngc5921_casa.json [--workdir DIR] [--keep]
    /work/casa-venv/bin/python tools/casa_ngc5921.py prepare --ms DIR/ngc5921.ms
    /work/casa-venv/bin/python tools/casa_ngc5921.py applycal --ms DIR/ngc5921.ms \\
        --caltable T1 [--caltable T2 ...] [--gainfield F1 ...] [--interp linear ...] \\
        --field 1445+099 --out corrected.npz
    /work/casa-venv/bin/python tools/casa_ngc5921.py image --spec SPEC.json --workdir DIR \\
        --out casa_images.json    # calibrate as below, then tclean each field (tools/ngc5921_images.py)
    python tools/casa_ngc5921.py summary docs/benchmarks/ngc5921_casa.json \\
        [--md docs/benchmarks/ngc5921.md]   # markdown figures (into the doc's markers); no CASA

``calibrate`` does the CASA NGC5921 tutorial (the "Use Case Script for NGC 5921" of the CASA
cookbook) with today's tasks, step by step, timing each:

1. ``importuvfits`` of ``NGC5921.fits`` to an MS; ``listobs``.
2. ``flagdata`` autocorrelations (the tutorial's ``flagautocorr``).
3. ``setjy`` on 1331+305 (3C286), Perley-Butler 2017, no model image (3C286 is unresolved at
   L band in D configuration, as the tutorial says), scaled per channel.
4. ``bandpass`` on 1331+305: bandtype B, one solution over its one scan (solint inf), all 63
   channels, ``solnorm=False`` (CASA's default and the tutorial's: the bandpass also carries
   each antenna's amplitude and phase during the 3C286 scan, so gaincal's solutions on 3C286
   are close to 1; the JSON's band-averaged gains g * mean(B) do not depend on this choice, and
   neither should the transferred flux: steps 4-6 are run again with ``solnorm=True`` and that
   flux is recorded in ``checks``).
5. ``gaincal`` on 1331+305 and 1445+099 with the bandpass applied: gaintype G, calmode ap,
   solint inf without combining scans (one solution per scan and antenna), channels 6~56
   (the tutorial's choice: the bandpass rolls off in the first six and last six channels),
   minsnr 1.
6. ``fluxscale``: reference 1331+305, transfer 1445+099.
7. ``applycal`` of the fluxscaled gains (gainfield = the field itself; linear) and the bandpass
   (nearest) to both calibrators, checked two ways: CORRECTED_DATA of 1331+305 against the
   caltables applied by hand in numpy (V / (g_i conj(g_j)) / (b_i conj(b_j))), and the vector
   mean of 1445+099's corrected visibilities against fluxscale's flux density.

Then the same UVFITS is written to an MS by pyuvdata, compared with importuvfits' (antennas
matched by station, rows by time and baseline: data, uvw, flags, weights, scans, frequency
frame), and calibrated with steps 2-7; the differences and its 1445+099 flux go into
``pyuvdata_ms``.

The reference antenna is the tutorial's: antenna name "15" (VLA:N2, ID 14; the archive's VA15).

The JSON (``--out``) is built so that a later tool can put contimg's numbers beside it: the
antennas (ID, name, station) in table order, the caltables' solutions as arrays indexed
[solution][antenna][pol] (gains) and [antenna][channel][pol] (bandpass), amplitude and phase
(degrees) with flags, in CASA's convention V_obs_ij = g_i conj(g_j) V_true_ij, phases referred
to the reference antenna. ``gains`` holds gaincal's table (3C286's scale on every field before
the transfer); ``gains_fluxscaled`` holds fluxscale's output table (1445+099's amplitudes
rescaled to the transferred flux). Times are MJD seconds (UTC, the MS's TIME column) and ISO.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

def _shared_data(relative: str) -> Path:
    """A file of the project's shared data folder: $CONTIMG_SHARED, else the ``shared`` folder
    beside this checkout, else /work/shared (where a clone elsewhere finds it)."""
    root = Path(__file__).resolve().parents[1]
    for base in (os.environ.get("CONTIMG_SHARED"), root.parent / "shared", "/work/shared"):
        if base and (Path(base) / relative).exists():
            return Path(base) / relative
    return root.parent / "shared" / relative


DATA = _shared_data("data/vla_ngc5921/NGC5921.fits")
FLUXCAL = "1331+305"  # 3C286: setjy, bandpass, gaincal
PHASECAL = "1445+099"  # gaincal; fluxscale transfers 3C286's scale to it
TARGET = "N5921"
REFANT = "15"  # VLA:N2 (ID 14), the tutorial's reference antenna
GAIN_CHANS = "6~56"  # the tutorial's: the bandpass rolls off outside these
# Perley & Butler 2017 (ApJS 230, 7), 3C286: log10 S[Jy] = sum a_k log10(nu/GHz)^k
PB2017_3C286 = (1.2481, -0.4507, -0.1798, 0.0357)
PUBLISHED_1445 = {
    "flux_jy": 2.48576,
    "err_jy": 0.00123122,
    "source": "CASA cookbook 'Use Case Script for NGC 5921' (2007), fluxscale log quoted there; "
    "its setjy used Perley-Taylor 99 (3C286 = 14.76 Jy at this frequency)",
}


def _casa():
    """casatools/casatasks, imported late so --help works without CASA."""
    import casatasks
    import casatools

    return casatools, casatasks


class Timer:
    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    def run(self, name: str, fn, *a, **kw):
        t0 = time.perf_counter()
        out = fn(*a, **kw)
        self.times[name] = round(time.perf_counter() - t0, 3)
        print(f"  {name}: {self.times[name]:.2f} s", flush=True)
        return out


def _jsonable(x, digits: int | None = None):
    """``x`` with numpy scalars and arrays as JSON values; non-finite floats as null, floats
    rounded to ``digits`` where given."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v, digits) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v, digits) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist(), digits)
    if isinstance(x, (np.bool_,)):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        if not np.isfinite(x):
            return None
        return round(x, digits) if digits is not None else x
    return x


def _dumps(obj) -> str:
    """JSON, indented, with each innermost list of numbers on one line."""
    text = json.dumps(obj, indent=1)
    return re.sub(r"\[\s+([^\[\]{}\"]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text) + "\n"


def _iso(mjd_s: np.ndarray) -> list[str]:
    from astropy.time import Time

    return list(Time(np.asarray(mjd_s) / 86400.0, format="mjd", scale="utc").isot)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _versions() -> dict:
    out = {}
    for p in ("casatools", "casatasks", "casadata", "python-casacore", "pyuvdata", "numpy", "astropy"):
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = None
    casatools, _ = _casa()
    out["casa"] = casatools.version_string()
    return out


# ---------------------------------------------------------------------------------------------
# MS and caltable reading (casatools.table only)


def ms_summary(ms: str) -> dict:
    casatools, _ = _casa()
    tb = casatools.table()
    tb.open(f"{ms}/ANTENNA")
    ants = [{"id": i, "name": n, "station": s} for i, (n, s) in
            enumerate(zip(tb.getcol("NAME"), tb.getcol("STATION")))]
    flagged_row = tb.getcol("FLAG_ROW")
    tb.close()
    tb.open(f"{ms}/FIELD")
    names = list(tb.getcol("NAME"))
    dirs = tb.getcol("PHASE_DIR")  # (2, 1, nfield) rad
    tb.close()
    tb.open(f"{ms}/SPECTRAL_WINDOW")
    freqs = tb.getcol("CHAN_FREQ")[:, 0]
    widths = tb.getcol("CHAN_WIDTH")[:, 0]
    ref_freq = float(tb.getcol("REF_FREQUENCY")[0])
    tb.close()
    tb.open(f"{ms}/POLARIZATION")
    corr = tb.getcol("CORR_TYPE")[:, 0]
    tb.close()
    stokes = {5: "RR", 6: "RL", 7: "LR", 8: "LL", 9: "XX", 10: "XY", 11: "YX", 12: "YY"}
    tb.open(ms)
    field_id = tb.getcol("FIELD_ID")
    scan = tb.getcol("SCAN_NUMBER")
    t = tb.getcol("TIME")
    a1, a2 = tb.getcol("ANTENNA1"), tb.getcol("ANTENNA2")
    nrow = tb.nrows()
    tb.close()
    used = sorted(set(a1) | set(a2))
    fields = []
    for i, n in enumerate(names):
        sel = field_id == i
        fields.append({
            "id": i, "name": n,
            "ra_deg": float(np.degrees(dirs[0, 0, i]) % 360), "dec_deg": float(np.degrees(dirs[1, 0, i])),
            "rows": int(sel.sum()), "scans": sorted(int(s) for s in set(scan[sel])),
        })
    scans = []
    for s in sorted(set(scan)):
        sel = scan == s
        scans.append({"scan": int(s), "field_id": int(field_id[sel][0]), "field": names[int(field_id[sel][0])],
                      "start": _iso([t[sel].min()])[0], "end": _iso([t[sel].max()])[0],
                      "integrations": int(len(set(t[sel]))), "rows": int(sel.sum())})
    return {
        "rows": int(nrow),
        "antennas": [a | {"flag_row": bool(f), "in_main": a["id"] in used} for a, f in zip(ants, flagged_row)],
        "fields": fields, "scans": scans,
        "spw": {"nchan": int(len(freqs)), "freq0_hz": float(freqs[0]), "chan_width_hz": float(widths[0]),
                "ref_freq_hz": ref_freq,
                "freqs_hz": freqs.tolist()},
        "corr": [stokes.get(int(c), str(c)) for c in corr],
        "cross_baselines": int(len({(x, y) for x, y in zip(a1, a2) if x != y})),
    }


def field_id(ms: str, name: str) -> int:
    """Field ID whose name starts with ``name`` (the MS names carry AIPS qualifiers), else ``name``
    read as an ID."""
    casatools, _ = _casa()
    tb = casatools.table()
    tb.open(f"{ms}/FIELD")
    names = list(tb.getcol("NAME"))
    tb.close()
    hits = [i for i, n in enumerate(names) if n.startswith(name)]
    if len(hits) == 1:
        return hits[0]
    if not hits and name.isdigit() and int(name) < len(names):
        return int(name)
    raise SystemExit(f"field {name!r}: {len(hits)} matches in {names}")


def read_caltable(path: str, ms: str, nant: int) -> dict:
    """A G/B caltable as arrays: rows grouped by (time, field, scan) solution interval."""
    casatools, _ = _casa()
    tb = casatools.table()
    tb.open(path)
    vtype = tb.getkeyword("VisCal")
    cols = {c: tb.getcol(c) for c in ("TIME", "FIELD_ID", "SCAN_NUMBER", "ANTENNA1", "ANTENNA2",
                                     "SPECTRAL_WINDOW_ID", "CPARAM", "PARAMERR", "FLAG", "SNR")}
    tb.close()
    tb.open(f"{ms}/FIELD")
    names = list(tb.getcol("NAME"))
    tb.close()
    # casatools gives cell arrays with the row axis last and the cell's axes reversed:
    # (npol, nchan, nrow) -> (nrow, nchan, npol)
    cp = cols["CPARAM"].transpose(2, 1, 0)
    fl = cols["FLAG"].transpose(2, 1, 0)
    snr = cols["SNR"].transpose(2, 1, 0)
    err = cols["PARAMERR"].transpose(2, 1, 0)
    keys = sorted({(round(float(t), 3), int(f), int(s)) for t, f, s in
                   zip(cols["TIME"], cols["FIELD_ID"], cols["SCAN_NUMBER"])})
    nchan, npol = cp.shape[1:]
    sols = []
    for (t, f, s) in keys:
        sel = np.flatnonzero((np.abs(cols["TIME"] - t) < 1e-3) & (cols["FIELD_ID"] == f) & (cols["SCAN_NUMBER"] == s))
        g = np.full((nant, nchan, npol), np.nan + 0j, complex)
        flag = np.ones((nant, nchan, npol), bool)
        sn = np.zeros((nant, nchan, npol))
        pe = np.zeros((nant, nchan, npol))
        for r in sel:
            a = int(cols["ANTENNA1"][r])
            g[a], flag[a], sn[a], pe[a] = cp[r], fl[r], snr[r], err[r]
        g = np.where(flag, np.nan, g)
        sols.append({"time_mjd_s": t, "time": _iso([t])[0], "field_id": f, "field": names[f], "scan": s,
                     "refant_id": int(np.bincount(cols["ANTENNA2"][sel]).argmax()),
                     "g": g, "flag": flag, "snr": sn, "paramerr": pe})
    return {"type": vtype, "nchan": int(nchan), "npol": int(npol), "solutions": sols}


def gains_json(cal: dict, bcal: dict, chans: tuple[int, int]) -> dict:
    """G table: per solution, [antenna][pol] amp and phase (deg), flags, SNR (NaN -> null); and the
    band-averaged gain g * mean(B over the gain channels), which does not depend on how the
    bandpass is normalised (what a solver without CASA's bandpass finds on those channels)."""
    b = bcal["solutions"][0]["g"][:, chans[0]:chans[1] + 1, :]  # (nant, nchan, npol)
    with warnings.catch_warnings():  # antennas without data: all NaN, mean NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        bmean = np.nanmean(b, axis=1)
    out = []
    for s in cal["solutions"]:
        g = s["g"][:, 0, :]
        gb = g * bmean
        out.append({k: s[k] for k in ("time_mjd_s", "time", "field_id", "field", "scan", "refant_id")} | {
            "amp": np.round(np.abs(g), 7), "phase_deg": np.round(np.degrees(np.angle(g)), 5),
            "flag": s["flag"][:, 0, :], "snr": np.round(s["snr"][:, 0, :], 2),
            "amp_bandavg": np.round(np.abs(gb), 7), "phase_deg_bandavg": np.round(np.degrees(np.angle(gb)), 5)})
    return {"type": cal["type"], "index": "[solution][antenna][pol]",
            "bandavg": f"g * mean(B, channels {chans[0]}~{chans[1]})", "solutions": _jsonable(out)}


def bandpass_json(cal: dict) -> dict:
    if len(cal["solutions"]) != 1:
        raise SystemExit(f"expected one bandpass solution, got {len(cal['solutions'])}")
    s = cal["solutions"][0]
    g = s["g"]
    return {"type": cal["type"], "index": "[antenna][channel][pol]",
            **_jsonable({k: s[k] for k in ("time_mjd_s", "time", "field_id", "field", "scan", "refant_id")}),
            "amp": _jsonable(np.round(np.abs(g), 7)), "phase_deg": _jsonable(np.round(np.degrees(np.angle(g)), 5)),
            "flag": _jsonable(s["flag"])}


# ---------------------------------------------------------------------------------------------
# applycal and the CORRECTED_DATA dump


def dump_field(ms: str, fid: int, out: Path | None = None) -> dict:
    """DATA, CORRECTED_DATA (if present), FLAG, TIME, ANTENNA1/2, UVW of one field, rows in MS order,
    arrays (nrow, nchan, npol)."""
    casatools, _ = _casa()
    tb = casatools.table()
    tb.open(ms)
    sub = tb.query(f"FIELD_ID=={fid}")
    d = {"time_mjd_s": sub.getcol("TIME"), "antenna1": sub.getcol("ANTENNA1"), "antenna2": sub.getcol("ANTENNA2"),
         "scan": sub.getcol("SCAN_NUMBER"), "uvw_m": sub.getcol("UVW").T}
    for c in ("DATA", "CORRECTED_DATA", "FLAG", "WEIGHT"):
        if c in sub.colnames():
            v = sub.getcol(c)
            d[c.lower()] = v.transpose(2, 1, 0) if v.ndim == 3 else v.T  # (nrow, nchan, npol) / (nrow, npol)
    sub.close()
    tb.close()
    tb.open(f"{ms}/SPECTRAL_WINDOW")
    d["freqs_hz"] = tb.getcol("CHAN_FREQ")[:, 0]
    tb.close()
    d["field_id"] = np.int64(fid)
    if out is not None:
        np.savez(out, **d)
    return d


def run_applycal(timer: Timer, ms: str, field: str, caltables: list[str], gainfield: list[str],
                 interp: list[str], name: str = "applycal") -> None:
    _, ct = _casa()
    timer.run(name, ct.applycal, vis=ms, field=field, gaintable=caltables, gainfield=gainfield,
              interp=interp, calwt=False, flagbackup=False, applymode="calflag")


def cmd_applycal(args: argparse.Namespace) -> int:
    _setup_log(args.log)
    ms = str(args.ms)
    fid = field_id(ms, args.field)
    n = len(args.caltable)
    # field names given as prefixes (the MS's carry AIPS qualifiers) become IDs for CASA
    gf = [str(field_id(ms, g)) if g else "" for g in (args.gainfield or [""] * n)]
    ip = args.interp or ["linear"] * n
    if len(gf) != n or len(ip) != n:
        raise SystemExit("--gainfield and --interp: one per --caltable, or none")
    timer = Timer()
    run_applycal(timer, ms, str(fid), [str(c) for c in args.caltable], gf, ip)
    d = timer.run("dump", dump_field, ms, fid, args.out)
    print(f"field {fid}: {len(d['time_mjd_s'])} rows -> {args.out} ({timer.times})")
    return 0


# ---------------------------------------------------------------------------------------------
# pyuvdata's MS beside importuvfits'


def pyuvdata_ms(fits: Path, out_ms: str) -> None:
    from pyuvdata import UVData

    uv = UVData.from_file(str(fits), file_type="uvfits")
    uv.write_ms(out_ms, clobber=True)


def station_to_name(ms: str) -> dict[str, str]:
    casatools, _ = _casa()
    tb = casatools.table()
    tb.open(f"{ms}/ANTENNA")
    out = {st: n for n, st in zip(tb.getcol("NAME"), tb.getcol("STATION")) if st}
    tb.close()
    return out


def compare_ms(casa_ms: str, pyuv_ms: str) -> dict:
    """How pyuvdata's MS of the UVFITS differs from importuvfits': antennas matched by station,
    rows by (time, antenna pair)."""
    casatools, _ = _casa()
    tb = casatools.table()

    def load(ms):
        tb.open(ms)
        d = {c: tb.getcol(c) for c in ("TIME", "ANTENNA1", "ANTENNA2", "UVW", "DATA", "FLAG", "FIELD_ID",
                                      "SCAN_NUMBER", "WEIGHT")}
        tb.close()
        tb.open(f"{ms}/FIELD")
        d["field_names"] = list(tb.getcol("NAME"))
        tb.close()
        tb.open(f"{ms}/ANTENNA")
        d["ant_names"] = [str(x) for x in tb.getcol("NAME")]
        d["ant_stations"] = [str(x) for x in tb.getcol("STATION")]
        d["ant_pos"] = tb.getcol("POSITION").T
        tb.close()
        tb.open(f"{ms}/SPECTRAL_WINDOW")
        d["freqs"] = tb.getcol("CHAN_FREQ")[:, 0]
        d["freq_frame"] = int(tb.getcol("MEAS_FREQ_REF")[0])
        tb.close()
        return d

    frames = {0: "REST", 1: "LSRK", 2: "LSRD", 3: "BARY", 4: "GEO", 5: "TOPO", 6: "GALACTO", 7: "LGROUP", 8: "CMB"}
    a, b = load(casa_ms), load(pyuv_ms)
    # pyuvdata's ANTENNA rows are indexed by antenna number (row 0 a blank placeholder here, as
    # the UVFITS numbers from 1); CASA's are 0-based. Match them by station.
    amap = {j: a["ant_stations"].index(st) for j, st in enumerate(b["ant_stations"]) if st in a["ant_stations"]}
    out: dict = {
        "rows": [int(a["TIME"].size), int(b["TIME"].size)],
        "n_antennas": [len(a["ant_names"]), len(b["ant_names"])],
        "antenna_ids": "importuvfits: 0-based rows, NAME = the VLA antenna number ('1'..'28'); pyuvdata: "
                       "row = antenna number (row 0 a blank placeholder), NAME = the station ('VLA:N7')",
        "antenna_examples": [{"importuvfits": {"id": amap[j], "name": a["ant_names"][amap[j]]},
                              "pyuvdata": {"id": j, "name": b["ant_names"][j]}} for j in sorted(amap)[:2]],
        "antenna_position_max_diff_m": float(max(np.abs(a["ant_pos"][i] - b["ant_pos"][j]).max()
                                                 for j, i in amap.items())),
        "field_names_equal": a["field_names"] == b["field_names"],
        "freq_max_diff_hz": float(np.abs(a["freqs"] - b["freqs"]).max()),
        "freq_frame": [frames.get(a["freq_frame"]), frames.get(b["freq_frame"])],
        "scans": [sorted(int(x) for x in set(a["SCAN_NUMBER"])), sorted(int(x) for x in set(b["SCAN_NUMBER"]))],
    }
    ka = {(round(float(t), 1), int(x), int(y)): i for i, (t, x, y) in
          enumerate(zip(a["TIME"], a["ANTENNA1"], a["ANTENNA2"]))}
    ia, ib, swapped = [], [], []
    for j, (t, x, y) in enumerate(zip(b["TIME"], b["ANTENNA1"], b["ANTENNA2"])):
        t, x, y = round(float(t), 1), amap.get(int(x)), amap.get(int(y))
        if (t, x, y) in ka:
            ia.append(ka[(t, x, y)]), ib.append(j), swapped.append(False)
        elif (t, y, x) in ka:
            ia.append(ka[(t, y, x)]), ib.append(j), swapped.append(True)
    ia, ib, swapped = np.array(ia, int), np.array(ib, int), np.array(swapped, bool)
    out["rows_matched"] = int(ia.size)
    out["rows_matched_with_antennas_swapped"] = int(swapped.sum())
    if ia.size:
        da, db = a["DATA"][..., ia], b["DATA"][..., ib]
        db = np.where(swapped, np.conj(db), db)
        out["data_max_abs_diff_rel"] = float(np.abs(da - db).max() / np.abs(da).max())
        ua, ub = a["UVW"][:, ia], np.where(swapped, -1, 1) * b["UVW"][:, ib]
        out["uvw_max_abs_diff_m"] = float(np.abs(ua - ub).max())
        fa, fb = a["FLAG"][..., ia], b["FLAG"][..., ib]
        auto = a["ANTENNA1"][ia] == a["ANTENNA2"][ia]
        out["flagged_fraction"] = [float(fa.mean()), float(fb.mean())]
        out["flags_differ_samples"] = int((fa != fb).sum())
        out["flags_differ_outside_autocorrelations"] = int((fa != fb)[..., ~auto].sum())
        out["autocorrelations_flagged_fraction"] = [float(fa[..., auto].mean()), float(fb[..., auto].mean())]
        out["field_id_differs_rows"] = int((a["FIELD_ID"][ia] != b["FIELD_ID"][ib]).sum())
        out["scan_differs_rows"] = int((a["SCAN_NUMBER"][ia] != b["SCAN_NUMBER"][ib]).sum())
        ratio = a["WEIGHT"][:, ia] / np.where(b["WEIGHT"][:, ib] == 0, np.nan, b["WEIGHT"][:, ib])
        out["weight_ratio_importuvfits_over_pyuvdata"] = [float(np.nanmin(ratio)), float(np.nanmax(ratio))]
    return out


# ---------------------------------------------------------------------------------------------
# calibrate


def _setup_log(path: Path | None) -> None:
    _, ct = _casa()
    if path is not None:
        ct.casalog.setlogfile(str(path))


def pb2017_3c286(freq_hz: float) -> float:
    x = np.log10(freq_hz / 1e9)
    return float(10 ** sum(a * x**k for k, a in enumerate(PB2017_3C286)))


def fluxscale_json(fs: dict, transfer_id: int) -> dict:
    """fluxscale's return dict for the transfer field, spw 0."""
    f = fs[str(transfer_id)]
    s0 = f["0"]
    out = {
        "field_id": transfer_id, "field": f["fieldName"],
        "flux_jy": float(s0["fluxd"][0]), "flux_err_jy": float(s0["fluxdErr"][0]),
        "stokes_iquv_jy": _jsonable(s0["fluxd"]), "n_solutions": int(s0.get("numSol", [0])[0]),
        "freq_hz": float(fs["freq"][0]) if "freq" in fs else None,
    }
    out["snr"] = out["flux_jy"] / out["flux_err_jy"] if out["flux_err_jy"] > 0 else None
    # One spw here, so CASA fits no spectral index (it needs two or more).
    for k in ("fitFluxd", "fitFluxdErr", "fitRefFreq", "spidx", "spidxerr"):
        if k in f:
            out[k] = _jsonable(f[k])
    out["spectral_index_fitted"] = bool(np.any(np.asarray(f.get("spidx", [0.0]))[1:] != 0))
    return out


def manual_apply_check(ms: str, fid: int, gcal: dict, bcal: dict) -> dict:
    """CASA's CORRECTED_DATA of one single-solution field against V / (g_i g_j*) / (b_i b_j*) in numpy."""
    d = dump_field(ms, fid)
    sols = [s for s in gcal["solutions"] if s["field_id"] == fid]
    if len(sols) != 1:
        return {"skipped": f"{len(sols)} gain solutions on field {fid}"}
    g = sols[0]["g"][:, 0, :]  # (nant, npol)
    b = bcal["solutions"][0]["g"]  # (nant, nchan, npol)
    a1, a2 = d["antenna1"], d["antenna2"]
    den = (g[a1][:, None, :] * np.conj(g[a2][:, None, :])) * (b[a1] * np.conj(b[a2]))
    mine = d["data"] / den
    ok = ~d["flag"] & np.isfinite(mine) & (a1 != a2)[:, None, None]
    diff = np.abs(mine - d["corrected_data"])[ok]
    ref = np.abs(d["corrected_data"][ok])
    return {"field_id": fid, "samples": int(ok.sum()), "max_abs_diff_jy": float(diff.max()),
            "max_rel_diff": float((diff / ref).max()), "median_corrected_amp_jy": float(np.median(ref))}


def vector_mean(ms: str, fid: int, chans: tuple[int, int]) -> dict:
    d = dump_field(ms, fid)
    c = d["corrected_data"][:, chans[0]:chans[1] + 1, :]
    ok = ~d["flag"][:, chans[0]:chans[1] + 1, :] & (d["antenna1"] != d["antenna2"])[:, None, None]
    v = c[ok]
    return {"field_id": fid, "channels": f"{chans[0]}~{chans[1]}", "samples": int(ok.sum()),
            "vector_mean_re_jy": float(v.real.mean()), "vector_mean_im_jy": float(v.imag.mean()),
            "vector_mean_amp_jy": float(np.abs(v.mean())), "median_amp_jy": float(np.median(np.abs(v)))}


def solve(timer: Timer, ms: str, prefix: str, refant: str, chans: tuple[int, int], tag: str = "") -> dict:
    """The tutorial's calibration on one MS: flag autos, setjy, bandpass, gaincal, fluxscale, applycal."""
    _, ct = _casa()
    bcal, gcal, fcal = (f"{prefix}.{x}" for x in ("bcal", "gcal", "fluxscale"))
    for p in (bcal, gcal, fcal):
        shutil.rmtree(p, ignore_errors=True)
    fc, pc, tg = field_id(ms, FLUXCAL), field_id(ms, PHASECAL), field_id(ms, TARGET)
    lo, hi = chans
    timer.run(tag + "flagdata_autocorr", ct.flagdata, vis=ms, mode="manual", autocorr=True, flagbackup=False)
    sj = timer.run(tag + "setjy", ct.setjy, vis=ms, field=str(fc), standard="Perley-Butler 2017",
                   scalebychan=True, usescratch=False)
    timer.run(tag + "bandpass", ct.bandpass, vis=ms, caltable=bcal, field=str(fc), spw="", solint="inf",
              combine="scan", refant=refant, bandtype="B", solnorm=False, minsnr=3.0)
    timer.run(tag + "gaincal", ct.gaincal, vis=ms, caltable=gcal, field=f"{fc},{pc}", spw=f"0:{lo}~{hi}",
              gaintype="G", calmode="ap", solint="inf", combine="", refant=refant, minsnr=1.0,
              gaintable=[bcal], interp=["nearest"])
    fs = timer.run(tag + "fluxscale", ct.fluxscale, vis=ms, caltable=gcal, fluxtable=fcal,
                   reference=str(fc), transfer=[str(pc)])
    # The tutorial's apply: each calibrator with its own fluxscaled gains, the target with the
    # phase calibrator's, the bandpass everywhere.
    run_applycal(timer, ms, str(fc), [fcal, bcal], [str(fc), ""], ["linear", "nearest"], tag + "applycal_fluxcal")
    run_applycal(timer, ms, f"{pc},{tg}", [fcal, bcal], [str(pc), ""], ["linear", "nearest"],
                 tag + "applycal_phasecal_target")
    return {"fc": fc, "pc": pc, "tg": tg, "setjy": sj, "fluxscale": fs, "bcal": bcal, "gcal": gcal, "fcal": fcal}


def cmd_calibrate(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    _, ct = _casa()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="casa_ngc5921_"))
    work.mkdir(parents=True, exist_ok=True)
    _setup_log(work / "casa.log")
    ms = str(work / "ngc5921.ms")
    pyuv_ms = str(work / "ngc5921_pyuvdata.ms")
    for p in (ms, ms + ".flagversions", pyuv_ms, pyuv_ms + ".flagversions"):
        shutil.rmtree(p, ignore_errors=True)
    timer = Timer()
    print(f"work folder {work}", flush=True)
    lo, hi = (int(x) for x in args.gain_chans.split("~"))

    timer.run("importuvfits", ct.importuvfits, fitsfile=str(args.fits), vis=ms)
    timer.run("listobs", ct.listobs, vis=ms, listfile=str(work / "listobs.txt"), overwrite=True)
    summary = ms_summary(ms)
    names = {a["name"]: a["id"] for a in summary["antennas"]}
    if args.refant not in names:
        raise SystemExit(f"refant {args.refant!r} not among {sorted(names)}")
    refant_station = summary["antennas"][names[args.refant]]["station"]
    cal = solve(timer, ms, str(work / "ngc5921"), args.refant, (lo, hi))
    fc, pc, tg = cal["fc"], cal["pc"], cal["tg"]
    sj, fs, bcal, gcal, fcal = cal["setjy"], cal["fluxscale"], cal["bcal"], cal["gcal"], cal["fcal"]

    nant = len(summary["antennas"])
    g_tab, f_tab, b_tab = (read_caltable(p, ms, nant) for p in (gcal, fcal, bcal))
    for name, fid in ((PHASECAL, pc), (FLUXCAL, fc)):
        dump_field(ms, fid, work / f"corrected_{name}.npz")
    checks = {
        "manual_apply_vs_casa_" + FLUXCAL: manual_apply_check(ms, fc, f_tab, b_tab),
        "corrected_" + PHASECAL: vector_mean(ms, pc, (lo, hi)),
        "corrected_" + FLUXCAL: vector_mean(ms, fc, (lo, hi)),
    }
    # solnorm moves amplitude between bandpass and gains; the transferred flux must not care.
    nb, ng, nf = (str(work / f"solnorm_true.{x}") for x in ("bcal", "gcal", "fluxscale"))
    for p in (nb, ng, nf):
        shutil.rmtree(p, ignore_errors=True)
    ct.bandpass(vis=ms, caltable=nb, field=str(fc), spw="", solint="inf", combine="scan", refant=args.refant,
                bandtype="B", solnorm=True, minsnr=3.0)
    ct.gaincal(vis=ms, caltable=ng, field=f"{fc},{pc}", spw=f"0:{lo}~{hi}", gaintype="G", calmode="ap",
               solint="inf", combine="", refant=args.refant, minsnr=1.0, gaintable=[nb], interp=["nearest"])
    fs_n = fluxscale_json(ct.fluxscale(vis=ms, caltable=ng, fluxtable=nf, reference=str(fc), transfer=[str(pc)]), pc)
    checks["fluxscale_with_bandpass_solnorm_true"] = {"flux_jy": fs_n["flux_jy"], "flux_err_jy": fs_n["flux_err_jy"]}
    # The applycal subcommand (what a later test runs on contimg's exported table), here with
    # CASA's own tables: it must reproduce the tutorial apply above exactly.
    before = np.load(work / f"corrected_{PHASECAL}.npz")
    sub_npz = work / f"applycal_subcommand_{PHASECAL}.npz"
    cmd_applycal(argparse.Namespace(ms=Path(ms), caltable=[Path(fcal), Path(bcal)], gainfield=[PHASECAL, ""],
                                    interp=["linear", "nearest"], field=PHASECAL, out=sub_npz, log=None))
    after = np.load(sub_npz)
    checks["applycal_subcommand_vs_tutorial_apply_" + PHASECAL] = {
        "rows": int(after["time_mjd_s"].size),
        "max_abs_diff_jy": float(np.abs(after["corrected_data"] - before["corrected_data"]).max()),
        "flags_differ": int((after["flag"] != before["flag"]).sum())}

    # The same UVFITS through pyuvdata's MS writer: how it differs, and CASA's answer on it.
    pyuv: dict
    if args.skip_pyuvdata:
        pyuv = {"skipped": True}
    else:
        try:
            timer.run("pyuvdata.uvfits_to_ms", pyuvdata_ms, args.fits, pyuv_ms)
            pyuv = compare_ms(ms, pyuv_ms)
            ref_p = station_to_name(pyuv_ms)[refant_station]
            cal_p = solve(timer, pyuv_ms, str(work / "ngc5921_pyuvdata"), ref_p, (lo, hi), tag="pyuvdata.")
            fs_p = fluxscale_json(cal_p["fluxscale"], cal_p["pc"])
            f_tab_p = read_caltable(cal_p["fcal"], pyuv_ms, pyuv["n_antennas"][1])
            pyuv["casa_calibration_on_it"] = {
                "refant": ref_p, "flux_1445_jy": fs_p["flux_jy"], "flux_1445_err_jy": fs_p["flux_err_jy"],
                "flux_1445_ratio_to_importuvfits_ms": None,  # filled below
                "gain_solutions": [{"field": s["field"], "scan": s["scan"], "time": s["time"]}
                                   for s in f_tab_p["solutions"]],
            }
        except Exception as e:  # recorded, not fatal: the CASA run does not depend on it
            pyuv = {"error": f"{type(e).__name__}: {e}"}

    setjy_flux = sj[str(fc)]["0"]["fluxd"]
    fsj = fluxscale_json(fs, pc)
    if "casa_calibration_on_it" in pyuv:
        c = pyuv["casa_calibration_on_it"]
        c["flux_1445_ratio_to_importuvfits_ms"] = c["flux_1445_jy"] / fsj["flux_jy"]
    result = {
        "tool": "tools/casa_ngc5921.py calibrate",
        "command": " ".join([Path(sys.executable).as_posix(), *sys.argv]),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_1_5_15_at_start": load_at_start},
        "versions": _versions(),
        "input": {"fits": str(args.fits), "bytes": args.fits.stat().st_size, "sha256": _sha256(args.fits)},
        "ms": summary,
        "pyuvdata_ms": pyuv,
        "choices": {
            "refant": {"name": args.refant, "id": names[args.refant],
                       "station": summary["antennas"][names[args.refant]]["station"]},
            "flux_calibrator": {"field_id": fc, "name": summary["fields"][fc]["name"]},
            "phase_calibrator": {"field_id": pc, "name": summary["fields"][pc]["name"]},
            "target": {"field_id": tg, "name": summary["fields"][tg]["name"]},
            "flux_standard": "Perley-Butler 2017, point source (no model image), scalebychan",
            "autocorrelations": "flagged (flagdata autocorr=True)",
            "bandpass": {"field": "flux calibrator", "spw": "0 (all 63 channels)", "solint": "inf",
                         "combine": "scan", "bandtype": "B", "solnorm": False, "minsnr": 3.0},
            "gaincal": {"fields": "flux + phase calibrator", "spw": f"0:{lo}~{hi}", "gain_channels": [lo, hi],
                        "why_channels": "the tutorial's: the bandpass rolls off in the first and last six channels",
                        "gaintype": "G", "calmode": "ap", "solint": "inf (one solution per scan)", "combine": "",
                        "minsnr": 1.0, "gaintable": "bandpass (nearest)"},
            "fluxscale": {"reference": "flux calibrator", "transfer": "phase calibrator"},
            "applycal": {"gaintable": ["fluxscale", "bandpass"], "gainfield": ["the field itself (target: phase cal)", ""],
                         "interp": ["linear", "nearest"], "calwt": False},
            "gain_convention": "V_obs_ij = g_i conj(g_j) B_i conj(B_j) V_true_ij; phases referred to refant",
        },
        "setjy": {"field_id": fc, "field": sj[str(fc)]["fieldName"], "stokes_iquv_jy": _jsonable(setjy_flux),
                  # setjy reports the flux at channel 0's frequency (its log: "@ 1.4127e+09Hz");
                  # with scalebychan each channel's model follows the PB2017 spectrum
                  "flux_jy": float(setjy_flux[0]), "at_freq_hz": summary["spw"]["freqs_hz"][0],
                  "pb2017_polynomial_jy": pb2017_3c286(summary["spw"]["freqs_hz"][0]),
                  "band_centre_hz": fsj["freq_hz"],
                  "pb2017_polynomial_at_band_centre_jy": pb2017_3c286(fsj["freq_hz"]),
                  "pb2017_coefficients": list(PB2017_3C286)},
        "fluxscale": fsj,
        "published_tutorial_1445": PUBLISHED_1445
        | {"scaled_to_pb2017_jy": PUBLISHED_1445["flux_jy"] * pb2017_3c286(fsj["freq_hz"]) / 14.76,
           "note": "the published value times (PB2017's 3C286 at the band centre / 14.76 Jy): the same gain "
                   "ratio at today's 3C286 flux (approximate to a few 0.01 %: the 2007 setjy's frequency "
                   "and per-channel scaling are not known here)"},
        "timings_s": timer.times | {"casa_tasks_total": round(sum(v for k, v in timer.times.items()
                                                                  if not k.startswith("pyuvdata.")), 3),
                                    "tool_wall_total": None},  # filled just before writing
        "checks": checks,
        "antennas": [{"id": a["id"], "name": a["name"], "station": a["station"]} for a in summary["antennas"]],
        "pols": summary["corr"],
        "gains": gains_json(g_tab, b_tab, (lo, hi)),
        "gains_fluxscaled": gains_json(f_tab, b_tab, (lo, hi)),
        "bandpass": bandpass_json(b_tab),
        "workdir": str(work),
        "caltables": {"bandpass": Path(bcal).name, "gains": Path(gcal).name, "fluxscaled": Path(fcal).name},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result["timings_s"]["tool_wall_total"] = round(time.perf_counter() - t_start, 3)
    args.out.write_text(_dumps(_jsonable(result)))
    print(f"1445+099: {fsj['flux_jy']:.5f} +/- {fsj['flux_err_jy']:.5f} Jy  (3C286 setjy {setjy_flux[0]:.4f} Jy)")
    print(f"wrote {args.out}")
    if not args.keep and args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    """The MS a later comparison runs on: importuvfits (as ``calibrate`` does), autocorrelations
    flagged; its summary (antennas, fields, scans, channels) as JSON beside it."""
    _, ct = _casa()
    _setup_log(args.log)
    ms = str(args.ms)
    for p in (ms, ms + ".flagversions"):
        shutil.rmtree(p, ignore_errors=True)
    timer = Timer()
    timer.run("importuvfits", ct.importuvfits, fitsfile=str(args.fits), vis=ms)
    timer.run("flagdata_autocorr", ct.flagdata, vis=ms, mode="manual", autocorr=True, flagbackup=False)
    summary = ms_summary(ms) | {"fits": str(args.fits), "timings_s": timer.times}
    Path(ms + ".json").write_text(_dumps(_jsonable(summary)))
    print(f"wrote {ms} and {ms}.json")
    return 0


def _image_stats(ia, image: str, residual: str) -> dict:
    """Peak, centre pixel, beam of a tclean image; robust RMS (1.4826 MAD) of its residual."""
    ia.open(image)
    pix = ia.getchunk()[:, :, 0, 0]  # (nx, ny)
    beam = ia.restoringbeam()
    ia.close()
    ia.open(residual)
    res = ia.getchunk()[:, :, 0, 0]
    ia.close()
    nx, ny = pix.shape
    return {"peak_jy": float(pix.max()), "centre_jy": float(pix[nx // 2, ny // 2]),
            "noise_jy": float(1.4826 * np.median(np.abs(res - np.median(res)))),
            "beam_arcsec": [float(beam["major"]["value"]) if beam["major"]["unit"] == "arcsec" else None,
                            float(beam["minor"]["value"]) if beam["minor"]["unit"] == "arcsec" else None],
            "beam_pa_deg": float(beam["positionangle"]["value"])}


def cmd_image(args: argparse.Namespace) -> int:
    """The tutorial's calibration (``solve``: flag autos, setjy, bandpass, gaincal, fluxscale,
    applycal) then a Stokes I MFS ``tclean`` of each field with the geometry and weighting
    given in ``--spec`` (a JSON: per field name prefix imsize, cell_arcsec, spw; robust,
    niter, nsigma), restored/residual/pb exported to FITS; JSON out."""
    tools, ct = _casa()
    spec = json.loads(Path(args.spec).read_text())
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    _setup_log(work / "casa.log")
    ms = str(work / "ngc5921.ms")
    for p in (ms, ms + ".flagversions"):
        shutil.rmtree(p, ignore_errors=True)
    timer = Timer()
    timer.run("importuvfits", ct.importuvfits, fitsfile=str(args.fits), vis=ms)
    cal = solve(timer, ms, str(work / "cal"), args.refant, tuple(int(x) for x in GAIN_CHANS.split("~")))
    fs = fluxscale_json(cal["fluxscale"], cal["pc"])
    ia = tools.image()
    fields = {}
    for prefix, f in spec["fields"].items():
        fid = field_id(ms, prefix)
        name = str(work / f"img_{prefix}")
        for suffix in (".image", ".residual", ".model", ".psf", ".pb", ".sumwt", ".image.pbcor", ".mask"):
            shutil.rmtree(name + suffix, ignore_errors=True)
        timer.run(f"tclean_{prefix}", ct.tclean, vis=ms, imagename=name, field=str(fid), spw=f["spw"],
                  datacolumn="corrected", specmode="mfs", stokes="I", gridder="standard", deconvolver="hogbom",
                  imsize=[f["imsize"], f["imsize"]], cell=f"{f['cell_arcsec']}arcsec", weighting="briggs",
                  robust=spec["robust"], niter=spec["niter"], gain=spec["gain"], nsigma=spec["nsigma"],
                  pblimit=-0.0001, pbcor=False)
        files = {}
        for kind, suffix in (("restored", ".image"), ("residual", ".residual"), ("pb", ".pb")):
            out = str(work / f"casa.{prefix}.{kind}.fits")
            ct.exportfits(imagename=name + suffix, fitsimage=out, overwrite=True)
            files[kind] = out
        fields[prefix] = {"field_id": fid, **_image_stats(ia, name + ".image", name + ".residual"), "files": files,
                          "tclean": {"imsize": f["imsize"], "cell_arcsec": f["cell_arcsec"], "spw": f["spw"]}}
        print(f"  {prefix}: peak {fields[prefix]['peak_jy']:.4f} Jy/beam, rms {fields[prefix]['noise_jy']:.2e}",
              flush=True)
    result = {"tool": "tools/casa_ngc5921.py image", "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "versions": _versions(), "fits": str(args.fits), "refant": args.refant, "spec": spec,
              "fluxscale": fs, "fields": fields, "timings_s": timer.times}
    args.out.write_text(_dumps(_jsonable(result)))
    print(f"wrote {args.out}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    """Markdown figures from a calibrate JSON (no CASA needed): what docs/benchmarks/ngc5921.md quotes."""
    r = json.loads(Path(args.json).read_text())
    fs, sj, pub, ck, t = r["fluxscale"], r["setjy"], r["published_tutorial_1445"], r["checks"], r["timings_s"]
    pu = r["pyuvdata_ms"]
    L = []
    load = r["machine"].get("load_average_1_5_15_at_start")
    L.append(f"CASA {r['versions']['casa']} (casatools {r['versions']['casatools']}, casadata "
             f"{r['versions']['casadata']}), {r['date_utc']}, {r['machine']['cpus']} CPUs"
             + (f" (load average {load[0]} at the start: shared machine)." if load else "."))
    L.append("")
    L.append("| quantity | value |")
    L.append("|---|---|")
    L.append(f"| 3C286 (setjy, Perley-Butler 2017) at {sj['at_freq_hz'] / 1e6:.3f} MHz | {sj['flux_jy']:.4f} Jy "
             f"(the PB2017 polynomial there: {sj['pb2017_polynomial_jy']:.4f} Jy) |")
    L.append(f"| **1445+099, fluxscale** | **{fs['flux_jy']:.5f} ± {fs['flux_err_jy']:.5f} Jy** "
             f"(SNR {fs['snr']:.0f}, {fs['n_solutions']} antenna-pol solutions) |")
    L.append(f"| spectral index | {'fitted' if fs['spectral_index_fitted'] else 'not fitted (one spw)'} |")
    L.append(f"| 1445+099, published tutorial (3C286 = 14.76 Jy) | {pub['flux_jy']} ± {pub['err_jy']} Jy |")
    L.append(f"| the same, scaled to PB2017's 3C286 ({sj['pb2017_polynomial_at_band_centre_jy']:.4f} Jy at "
             f"{sj['band_centre_hz'] / 1e6:.3f} MHz) | {pub['scaled_to_pb2017_jy']:.5f} Jy "
             f"(CASA 6.7 / scaled = {fs['flux_jy'] / pub['scaled_to_pb2017_jy']:.5f}) |")
    c = ck[f"corrected_{PHASECAL}"]
    L.append(f"| 1445+099 corrected, vector mean (ch {c['channels']}) | {c['vector_mean_re_jy']:.5f} "
             f"{c['vector_mean_im_jy']:+.5f}i Jy |")
    c = ck[f"corrected_{FLUXCAL}"]
    L.append(f"| 3C286 corrected, vector mean (ch {c['channels']}) | {c['vector_mean_re_jy']:.5f} "
             f"{c['vector_mean_im_jy']:+.5f}i Jy |")
    m = ck[f"manual_apply_vs_casa_{FLUXCAL}"]
    L.append(f"| numpy apply of the caltables vs CASA's CORRECTED_DATA (3C286) | max rel. diff "
             f"{m['max_rel_diff']:.1e} over {m['samples']} samples |")
    a = ck[f"applycal_subcommand_vs_tutorial_apply_{PHASECAL}"]
    L.append(f"| `applycal` subcommand vs the tutorial apply (1445+099) | max diff {a['max_abs_diff_jy']} Jy, "
             f"{a['flags_differ']} flags differ |")
    if "fluxscale_with_bandpass_solnorm_true" in ck:
        q = ck["fluxscale_with_bandpass_solnorm_true"]
        L.append(f"| 1445+099 with the bandpass normalised (solnorm=True) | {q['flux_jy']:.5f} ± "
                 f"{q['flux_err_jy']:.5f} Jy (ratio {q['flux_jy'] / fs['flux_jy']:.6f}) |")
    if "casa_calibration_on_it" in pu:
        q = pu["casa_calibration_on_it"]
        L.append(f"| 1445+099 on pyuvdata's MS (same CASA steps) | {q['flux_1445_jy']:.5f} ± "
                 f"{q['flux_1445_err_jy']:.5f} Jy (ratio {q['flux_1445_ratio_to_importuvfits_ms']:.5f}) |")
    L.append("")
    L.append("| step | wall (s) |")
    L.append("|---|---|")
    for k, v in t.items():
        if v is not None:
            L.append(f"| {k} | {v:.2f} |")
    L.append("")
    if "rows_matched" in pu:
        L.append(f"pyuvdata's MS vs importuvfits': {pu['rows_matched']}/{pu['rows'][0]} rows matched, data max rel. "
                 f"diff {pu['data_max_abs_diff_rel']}, uvw max diff {pu['uvw_max_abs_diff_m']} m, antennas "
                 f"{pu['n_antennas'][0]} vs {pu['n_antennas'][1]} rows, frequency frame {pu['freq_frame'][0]} vs "
                 f"{pu['freq_frame'][1]}, scans {len(pu['scans'][0])} vs {len(pu['scans'][1])}, autocorrelations "
                 f"flagged {pu['autocorrelations_flagged_fraction'][0]:.0%} vs "
                 f"{pu['autocorrelations_flagged_fraction'][1]:.0%}, flags differing outside them "
                 f"{pu['flags_differ_outside_autocorrelations']}, WEIGHT ratio "
                 f"{pu['weight_ratio_importuvfits_over_pyuvdata'][0]:g}.")
        L.append("")
    # per-antenna fluxscaled band-averaged gains on 1445+099: spread over its scans
    g = r["gains_fluxscaled"]["solutions"]
    names = [x["name"] for x in r["antennas"]]
    pc = [s for s in g if s["field_id"] == r["choices"]["phase_calibrator"]["field_id"]]
    amps = np.array([[[np.nan if v is None else v for v in ant] for ant in s["amp_bandavg"]] for s in pc], float)
    ph = np.array([[[np.nan if v is None else v for v in ant] for ant in s["phase_deg_bandavg"]] for s in pc], float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        spread = np.nanmax(amps, 0) / np.nanmin(amps, 0) - 1
        rel = (ph - ph[:1] + 180) % 360 - 180  # change from the first scan, wrapped
        dph = np.nanmax(rel, 0) - np.nanmin(rel, 0)
    good = np.isfinite(spread)
    L.append(f"1445+099's {len(pc)} scans, band-averaged fluxscaled gains ({int(good[:, 0].sum())} antennas with "
             f"solutions): amplitude {np.nanmin(amps):.4f}–{np.nanmax(amps):.4f}; largest change of one antenna's "
             f"amplitude over the scans {np.nanmax(spread):.2%} (median {np.nanmedian(spread):.2%}); largest phase "
             f"change {np.nanmax(dph):.1f}° (median {np.nanmedian(dph):.1f}°, antenna "
             f"{names[int(np.nanargmax(np.where(good, dph, -1).max(1)))]}).")
    text = "\n".join(L)
    if args.md is None:
        print(text)
        return 0
    md_text = args.md.read_text()
    pat = re.compile(r"(<!-- summary: begin[^\n]*-->\n)(.*?)(<!-- summary: end -->)", re.S)
    if not pat.search(md_text):
        raise SystemExit(f"{args.md}: no <!-- summary: begin ... --> / <!-- summary: end --> markers")
    args.md.write_text(pat.sub(lambda m: m.group(1) + text + "\n" + m.group(3), md_text, count=1))
    print(f"updated {args.md}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("calibrate", help="the tutorial calibration, JSON out")
    c.add_argument("--fits", type=Path, default=DATA)
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--workdir", type=Path, default=None, help="keep the MS and caltables here (default: a temp folder)")
    c.add_argument("--keep", action="store_true", help="keep the temp work folder")
    c.add_argument("--refant", default=REFANT)
    c.add_argument("--gain-chans", default=GAIN_CHANS)
    c.add_argument("--skip-pyuvdata", action="store_true")
    a = sub.add_parser("applycal", help="apply caltables to an MS, dump one field's CORRECTED_DATA to .npz")
    a.add_argument("--ms", type=Path, required=True)
    a.add_argument("--caltable", type=Path, action="append", required=True)
    a.add_argument("--gainfield", action="append", default=None, help="one per --caltable: field name prefix or ID whose solutions to use ('' = all)")
    a.add_argument("--interp", action="append", default=None, help="one per --caltable (default linear)")
    a.add_argument("--field", required=True, help="field name prefix (e.g. 1445+099) or ID")
    a.add_argument("--out", type=Path, required=True)
    a.add_argument("--log", type=Path, default=None)
    p = sub.add_parser("prepare", help="importuvfits the UVFITS to an MS, autocorrelations flagged")
    p.add_argument("--fits", type=Path, default=DATA)
    p.add_argument("--ms", type=Path, required=True)
    p.add_argument("--log", type=Path, default=None)
    i = sub.add_parser("image", help="the tutorial calibration, then tclean of each field (geometry from --spec)")
    i.add_argument("--fits", type=Path, default=DATA)
    i.add_argument("--spec", type=Path, required=True, help="JSON: fields {prefix: imsize, cell_arcsec, spw}, robust, niter, gain, nsigma")
    i.add_argument("--workdir", type=Path, required=True)
    i.add_argument("--refant", default=REFANT)
    i.add_argument("--out", type=Path, required=True)
    m = sub.add_parser("summary", help="markdown figures from a calibrate JSON (no CASA needed)")
    m.add_argument("json", type=Path)
    m.add_argument("--md", type=Path, default=None, help="replace the block between the summary markers of this file")
    args = ap.parse_args(argv)
    return {"calibrate": cmd_calibrate, "prepare": cmd_prepare, "applycal": cmd_applycal, "image": cmd_image,
            "summary": cmd_summary}[args.cmd](args)


if __name__ == "__main__":
    raise SystemExit(main())
