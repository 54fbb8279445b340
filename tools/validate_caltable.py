"""CASA's applycal of contimg's exported calibration table, beside contimg's own apply.

Runs in contimg's environment (never CASA's); CASA runs as a subprocess with the CASA venv's
python (``tools/casa_ngc5921.py applycal``):

    python tools/validate_caltable.py [--out docs/benchmarks/caltable.json] [--workdir DIR] [--keep]

1. A small group is simulated (the ``test`` config, as ``tests/test_interop.py``: no RFI) and
   processed by ``run_batch`` (flag, solve on the transiting calibrator, apply, image).
2. ``export_ms`` (``contimg export-ms``'s function) writes it as an MS: DATA raw, CORRECTED_DATA
   contimg's apply.
3. ``contimg export-cal`` writes the solution applied to it as a CASA B Jones table (``.bcal``,
   subtables built by contimg); a second table with the gains conjugated is written as a
   negative control (it must *not* agree, or the check could not tell the conventions apart);
   a third with its subtables copied from the MS (``export-cal --ms``); a fourth from the solution
   with gains flagged (one antenna entirely, one in ten channels of one polarization) and one
   antenna left out, whose reference is contimg's ``apply_gains`` of that solution to the MS's
   DATA and FLAG (the gains divide each row, so applying before or after the rephasing is the same).
4. CASA's ``applycal`` (calflag, calwt False, interp ``linear,linearflag``, gainfield '') applies
   each table to a copy of the MS; its CORRECTED_DATA and FLAG are compared with contimg's
   (CORRECTED_DATA and FLAG as export-ms wrote them, or the fourth case's reference) row by row,
   cross-correlations only:
   max |CASA - contimg| / max |contimg| over the samples neither flags, the max per-sample relative
   difference, and how many samples' flags differ. The flagged table is applied a second time
   with interp ``linear`` (CASA's default), which interpolates over the flagged channels instead
   of flagging them: recorded, not required to agree.

The JSON (``--out``) holds those figures, the versions, the sizes and the timings.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CASA_PYTHON = Path("/work/casa-venv/bin/python")
CASA_TOOL = REPO / "tools" / "casa_ngc5921.py"
# applycal's interp for a B table from contimg: time linear (one solution: any), frequency linear
# with flags propagated ("linearflag"); plain "linear" interpolates over flagged channels instead
INTERP = "linear,linearflag"


def _contimg(*args: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-m", "contimg.cli", *args], check=True, capture_output=True,
                         text=True, env=env)
    return out.stdout.strip()


def _read_ms(ms: Path) -> dict:
    from casacore import tables

    with tables.table(str(ms), ack=False) as t:
        return {c: t.getcol(c) for c in ("ANTENNA1", "ANTENNA2", "TIME", "DATA", "CORRECTED_DATA", "FLAG")}


def _flagged_variant(sol):
    """``sol`` with gains flagged and one antenna dropped (the flag paths of both applies)."""
    from contimg.calibrate import GainSolution

    keep = np.arange(sol.antenna_numbers.size) != 3
    flags = sol.flags.copy()
    flags[1] = True
    flags[5, 10:20, 0] = True
    return GainSolution(sol.antenna_numbers[keep], sol.freq_hz, sol.gains[keep], flags[keep], sol.snr[keep],
                        sol.refant, sol.mid_jd, sol.calibrator, sol.group_id)


def _contimg_apply_to_ms(ms: dict, sol) -> dict:
    """contimg's apply_gains of ``sol`` to the MS's DATA and FLAG (rows as one integration)."""
    from contimg.calibrate import apply_gains

    vis = ms["DATA"][None].copy()
    flags = ms["FLAG"][None].copy()
    apply_gains(vis=vis, flags=flags, ant1=ms["ANTENNA1"], ant2=ms["ANTENNA2"], antenna_numbers=sol.antenna_numbers,
                gains=sol.gains, gain_flags=sol.flags)
    return dict(ms, CORRECTED_DATA=vis[0], FLAG=flags[0])


def _compare(contimg: dict, casa: dict) -> dict:
    for c in ("antenna1", "antenna2", "time_mjd_s"):
        key = {"antenna1": "ANTENNA1", "antenna2": "ANTENNA2", "time_mjd_s": "TIME"}[c]
        if not np.array_equal(np.asarray(casa[c]), contimg[key]):
            raise RuntimeError(f"CASA's dump is not in the MS's row order ({c})")
    cross = contimg["ANTENNA1"] != contimg["ANTENNA2"]
    a = contimg["CORRECTED_DATA"][cross]
    b = np.asarray(casa["corrected_data"])[cross]
    fa = contimg["FLAG"][cross]
    fb = np.asarray(casa["flag"])[cross]
    ok = ~fa & ~fb
    scale = float(np.abs(a[ok]).max())
    diff = np.abs(b[ok] - a[ok])
    rel = diff / np.maximum(np.abs(a[ok]), 1e-30)
    return {
        "samples_compared": int(ok.sum()), "samples_cross": int(a.size),
        "flags_differ": int((fa != fb).sum()), "flagged_contimg": int(fa.sum()), "flagged_casa": int(fb.sum()),
        "max_abs_diff_over_max_abs": float(diff.max() / scale),
        "max_rel_diff_per_sample": float(rel.max()),
        "median_rel_diff_per_sample": float(np.median(rel)),
        "max_abs_contimg_jy": scale,
    }


def _versions() -> dict:
    out = {}
    for p in ("contimg", "pyuvdata", "python-casacore", "numpy"):
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = None
    out["casa"] = subprocess.run([str(CASA_PYTHON), "-c", "import casatools; print(casatools.version_string())"],
                                 capture_output=True, text=True).stdout.strip().splitlines()[-1]
    out["python"] = platform.python_version()
    return out


def run(work: Path) -> dict:
    from contimg.config import load_config
    from contimg.interop.caltable import stored_solution, write_casa_caltable
    from contimg.pipeline.exports import export_ms
    from contimg.service.batch import run_batch
    from contimg.sim import simulate

    times: dict[str, float] = {}

    def step(name, fn, *a, **kw):
        t0 = time.perf_counter()
        out = fn(*a, **kw)
        times[name] = round(time.perf_counter() - t0, 2)
        print(f"  {name}: {times[name]:.1f} s", flush=True)
        return out

    cfg = load_config("test", use_env=False, overrides={
        "simulate": {"n_times": 6, "rfi": False},
        "image": {"npix": 256, "cell_arcsec": 20.0, "niter": 100, "products": ["restored"]},
        "sky": {"catalogue": str(work / "in" / "catalogue.csv")}})
    step("simulate", simulate, work / "in", n_groups=1, cfg=cfg.simulate)
    results, code = step("run_batch", run_batch, work / "in", root=work / "root", cfg=cfg)
    if code != 0:
        raise SystemExit(f"run_batch failed ({code})")
    gid = results[0].group_id
    root = work / "root"
    ms = work / "group.ms"
    # export-ms's function (the CLI would need the test config's overrides as a TOML file)
    step("export_ms", export_ms, gid, root=root, out=ms, cfg=cfg)
    bcal = work / "group.bcal"
    step("export_cal", _contimg, "export-cal", gid, "--root", str(root), "--out", str(bcal))
    sol, _ = stored_solution(gid, root=root)
    conj = write_casa_caltable(work / "group_conj.bcal", sol=sol, conjugate=True)
    with_ms = work / "group_ms_subtables.bcal"
    step("export_cal_ms", _contimg, "export-cal", gid, "--root", str(root), "--out", str(with_ms), "--ms", str(ms))
    flagged_sol = _flagged_variant(sol)
    flagged = write_casa_caltable(work / "group_flagged.bcal", sol=flagged_sol)
    ours = _read_ms(ms)
    ref_flagged = _contimg_apply_to_ms(ours, flagged_sol)
    cases = [("exported", bcal, INTERP, ours), ("conjugated_control", conj, INTERP, ours),
             ("ms_subtables", with_ms, INTERP, ours), ("flagged_gains", flagged, INTERP, ref_flagged),
             ("flagged_gains_interp_linear", flagged, "linear", ref_flagged)]
    from casacore import tables

    with tables.table(f"{ms}/FIELD", ack=False) as f:
        field = str(f.getcol("NAME")[0])

    out = {"group_id": gid, "calibrator": sol.calibrator, "refant": sol.refant,
           "shape": {"rows": int(ours["TIME"].size), "channels": int(sol.freq_hz.size),
                     "pols": int(sol.gains.shape[2]), "antennas_solved": int(sol.antenna_numbers.size),
                     "gain_flags": int(sol.flags.sum())},
           "tables": {}}
    for name, table, interp, reference in cases:
        copy = work / f"group_{name}.ms"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(ms, copy)
        npz = work / f"casa_{name}.npz"
        step(f"casa_applycal_{name}", subprocess.run,
             [str(CASA_PYTHON), str(CASA_TOOL), "applycal", "--ms", str(copy), "--caltable", str(table),
              "--interp", interp, "--field", field, "--out", str(npz), "--log", str(work / f"casa_{name}.log")],
             check=True, cwd=work)
        with np.load(npz) as casa:
            out["tables"][name] = _compare(reference, dict(casa)) | {"interp": interp}
    out["timings_s"] = times
    out["versions"] = _versions()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "caltable.json")
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="contimg_caltable_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        result = run(work)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    tabs = result["tables"]

    def agrees(r):
        return bool(r["max_abs_diff_over_max_abs"] < 1e-5 and r["flags_differ"] == 0)

    result["verdict"] = {
        "exported_within_float32": agrees(tabs["exported"]),
        "ms_subtables_within_float32": agrees(tabs["ms_subtables"]),
        "flagged_gains_within_float32": agrees(tabs["flagged_gains"]),
        "conjugated_control_disagrees": bool(tabs["conjugated_control"]["max_abs_diff_over_max_abs"] > 1e-2),
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["tables"], indent=1))
    print(f"wrote {args.out}")
    return 0 if all(result["verdict"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
