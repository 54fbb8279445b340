"""Subband header parsing: `contimg.io.reader.read_subband_meta` beside pyuvdata's bare
`FastUVH5Meta` reading the same facts from the same files, in one run (docs/benchmarks/header.md:
the h5py reader it was measured against, before the reader moved onto FastUVH5Meta).

    python tools/bench_header.py DIR [--repeats 5] [--json docs/benchmarks/header.json]

DIR holds subband files (e.g. `contimg simulate DIR --groups 1 --config test`, or a real group).
Each method reads every file's header ``repeats`` times, the two methods' passes interleaved
(after one warm-up pass, so both read from the page cache); the median per file is reported,
and both results are checked to agree.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
from pyuvdata.uvdata.uvh5 import FastUVH5Meta

from contimg.io.reader import read_subband_meta


def fast_meta(path: Path) -> dict:
    """The facts `read_subband_meta` returns, through pyuvdata's FastUVH5Meta."""
    meta = FastUVH5Meta(path)
    try:
        lat, lon, alt = meta.telescope_location_lat_lon_alt
        times = meta.times
        out = {"nblts": int(meta.Nblts), "ntime": int(times.size), "nbl": int(meta.Nbls), "nchan": int(meta.Nfreqs),
               "npol": int(meta.Npols), "time_jd": np.asarray(times, float),
               "ant1": np.asarray(meta.ant_1_array[:meta.Nbls]), "ant2": np.asarray(meta.ant_2_array[:meta.Nbls]),
               "freq_hz": np.ravel(meta.freq_array).astype(float), "pols": np.asarray(meta.polarization_array),
               "antenna_names": np.asarray(meta.antenna_names), "antenna_numbers": np.asarray(meta.antenna_numbers),
               "antenna_positions_m": np.asarray(meta.antenna_positions),
               "pointing_dec_rad": float(meta.extra_keywords["phase_center_dec"]), "location": (lat, lon, alt)}
    finally:
        meta.close()
    return out


def ours(path: Path) -> dict:
    m = read_subband_meta(path)
    return {"nblts": m.nblts, "ntime": m.ntime, "nbl": m.nbl, "nchan": m.nchan, "npol": m.npol, "time_jd": m.time_jd,
            "ant1": m.ant1, "ant2": m.ant2, "freq_hz": m.freq_hz, "pols": m.pols, "antenna_names": m.antenna_names,
            "antenna_numbers": m.antenna_numbers, "antenna_positions_m": m.antenna_positions_m,
            "pointing_dec_rad": m.pointing_dec_rad, "location": m.location}


def _same(a: dict, b: dict) -> list[str]:
    bad = []
    for k in a:
        x, y = a[k], b[k]
        if k == "location":
            ok = np.allclose(x, y, rtol=0, atol=1e-9)
        elif isinstance(x, np.ndarray) and x.dtype.kind in "fc":
            ok = np.allclose(x, y, rtol=1e-12, atol=0)
        else:
            ok = np.array_equal(np.asarray(x), np.asarray(y))
        if not ok:
            bad.append(k)
    return bad


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir", type=Path)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    files = sorted(args.dir.glob("*_sb??.hdf5"))
    if not files:
        raise SystemExit(f"{args.dir}: no subband files")
    for f in files:  # warm-up, and the two must agree
        bad = _same(ours(f), fast_meta(f))
        if bad:
            raise SystemExit(f"{f}: contimg and FastUVH5Meta disagree on {bad}")
    # interleaved (one pass of each in turn), so that load from other processes falls on both alike
    methods = (("contimg_read_subband_meta", ours), ("pyuvdata_FastUVH5Meta", fast_meta))
    runs: dict[str, list[float]] = {name: [] for name, _ in methods}
    for _ in range(args.repeats):
        for name, fn in methods:
            t0 = time.perf_counter()
            for f in files:
                fn(f)
            runs[name].append((time.perf_counter() - t0) / len(files))
    res = {name: {"median_s_per_file": statistics.median(r), "runs": r} for name, r in runs.items()}
    m0 = fast_meta(files[0])
    doc = {"files": len(files), "nblts": m0["nblts"], "nchan": m0["nchan"], "machine": platform.processor() or
           platform.machine(), "python": platform.python_version(), "results": res,
           "ratio_fastuvh5meta_over_contimg": res["pyuvdata_FastUVH5Meta"]["median_s_per_file"]
           / res["contimg_read_subband_meta"]["median_s_per_file"]}
    print(json.dumps({k: v for k, v in doc.items() if k != "results"} |
                     {k: round(v["median_s_per_file"] * 1e3, 3) for k, v in res.items()}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
