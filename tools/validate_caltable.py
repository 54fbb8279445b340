"""CASA's applycal of contimg's exported calibration table, beside contimg's own apply.

Runs in contimg's environment (never CASA's); CASA runs as a subprocess with the CASA venv's
python (``tools/casa_ngc5921.py applycal``):

    python tools/validate_caltable.py [--out docs/benchmarks/caltable.json] [--workdir DIR] [--keep]

1. A small group is simulated (the ``test`` config, as ``tests/test_interop.py``: no RFI) and
   processed by ``run_batch`` (flag, solve on the transiting calibrator, apply, image).
2. ``export_ms`` (``contimg export-ms``'s function) writes it as an MS: DATA raw, CORRECTED_DATA contimg's apply.
3. ``contimg export-cal`` writes the solution applied to it as a CASA B Jones table (``.bcal``,
   subtables built by contimg); a second table with the gains conjugated is written as a
   negative control (it must *not* agree, or the check could not tell the conventions apart).
4. CASA's ``applycal`` (calflag, calwt False, interp linear, gainfield '') applies each table to a
   copy of the MS; its CORRECTED_DATA and FLAG are compared with contimg's CORRECTED_DATA and FLAG
   row by row: max |CASA - contimg| / max |contimg| over the samples neither flags, the max
   per-sample relative difference, and how many samples' flags differ.

The JSON (``--out``) holds those figures, the versions, the sizes and the timings.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
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


def _contimg(*args: str) -> str:
    import os

    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-m", "contimg.cli", *args], check=True, capture_output=True,
                         text=True, env=env)
    return out.stdout.strip()


def _read_ms(ms: Path) -> dict:
    from casacore import tables

    with tables.table(str(ms), ack=False) as t:
        return {c: t.getcol(c) for c in ("ANTENNA1", "ANTENNA2", "TIME", "DATA", "CORRECTED_DATA", "FLAG")}


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
    from contimg.interop.ms import export_ms
    from contimg.pipeline import run_batch
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
    ours = _read_ms(ms)
    with __import__("casacore.tables").tables.table(f"{ms}/FIELD", ack=False) as f:
        field = str(f.getcol("NAME")[0])

    out = {"group_id": gid, "calibrator": sol.calibrator, "refant": sol.refant,
           "shape": {"rows": int(ours["TIME"].size), "channels": int(sol.freq_hz.size),
                     "pols": int(sol.gains.shape[2]), "antennas_solved": int(sol.antenna_numbers.size),
                     "gain_flags": int(sol.flags.sum())},
           "tables": {}}
    for name, table in (("exported", bcal), ("conjugated_control", conj)):
        copy = work / f"group_{name}.ms"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(ms, copy)
        npz = work / f"casa_{name}.npz"
        step(f"casa_applycal_{name}", subprocess.run,
             [str(CASA_PYTHON), str(CASA_TOOL), "applycal", "--ms", str(copy), "--caltable", str(table),
              "--field", field, "--out", str(npz), "--log", str(work / f"casa_{name}.log")],
             check=True, cwd=work)
        with np.load(npz) as casa:
            out["tables"][name] = _compare(ours, dict(casa))
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
    exp, ctl = result["tables"]["exported"], result["tables"]["conjugated_control"]
    result["verdict"] = {
        "exported_within_float32": bool(exp["max_abs_diff_over_max_abs"] < 1e-5 and exp["flags_differ"] == 0),
        "conjugated_control_disagrees": bool(ctl["max_abs_diff_over_max_abs"] > 1e-2),
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["tables"], indent=1))
    print(f"wrote {args.out}")
    return 0 if all(result["verdict"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
