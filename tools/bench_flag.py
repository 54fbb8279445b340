"""contimg's flagger beside AOFlagger (PyPI ``aoflagger``, its generic default strategy) on the
same simulated group: detection against the simulator's RFI truth, and wall time.

    python tools/bench_flag.py --out docs/benchmarks/flagging.json [--config test] [--groups 2]
        [--antennas 32 --chans-per-subband 48]   # the real channel width
        [--config dsa110 --groups 1 --sim-dir D]  # a real-size group, kept in D for reruns

Both flag every cross-correlation of each group (ntime x nchan planes, both polarizations);
AOFlagger runs one baseline per call in ``--threads`` threads, contimg's CPU twin uses numba's
threads (set NUMBA_NUM_THREADS to match). Times are the median of ``--repeats`` runs, after one
warm-up (numba compiles on first use).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np


def aoflagger_flags(*, vis: np.ndarray, cross: np.ndarray, threads: int) -> np.ndarray:
    """(ntime, nbl, nchan, npol) bool from AOFlagger's generic strategy, per cross baseline."""
    import aoflagger

    ntime, nbl, nchan, npol = vis.shape
    flagger = aoflagger.AOFlagger()
    strategy = flagger.load_strategy_file(flagger.find_strategy_file(aoflagger.TelescopeId.Generic))
    out = np.zeros(vis.shape, bool)

    def one(b: int) -> None:
        images = flagger.make_image_set(ntime, nchan, 2 * npol)
        for p in range(npol):
            plane = vis[:, b, :, p].T  # (nchan, ntime)
            images.set_image_buffer(2 * p, np.ascontiguousarray(plane.real, np.float32))
            images.set_image_buffer(2 * p + 1, np.ascontiguousarray(plane.imag, np.float32))
        mask = strategy.run(images).get_buffer().astype(bool)  # (nchan, ntime)
        out[:, b, :, :] = mask.T[:, :, None]

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, np.flatnonzero(cross)))
    out[:, ~cross] = True
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="test")
    ap.add_argument("--groups", type=int, default=2)
    ap.add_argument("--antennas", type=int, default=None, help="simulate this many antennas (default: the config's)")
    ap.add_argument("--chans-per-subband", type=int, default=None, help="48 = the real channel width")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--sim-dir", type=Path, default=None,
                    help="simulate into this folder, or reuse the groups already there (truth.h5 present)")
    args = ap.parse_args(argv)

    import aoflagger

    from contimg.config import load_config
    from contimg.flag import flag_group
    from contimg.io.naming import group_files, scan_folder
    from contimg.io.reader import read_group
    from contimg.sim import simulate
    from contimg.sim.flagscore import score_flags

    cfg = load_config(args.config, use_env=False)
    changes = {k: v for k, v in (("n_antennas", args.antennas), ("chans_per_subband", args.chans_per_subband))
               if v is not None}
    sim_cfg = cfg.simulate.model_copy(update=changes)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sim = args.sim_dir or Path(tmp)
        if not (sim / "truth.h5").exists():
            simulate(sim, n_groups=args.groups, cfg=sim_cfg)
        for group in group_files(scan_folder(sim), tolerance_s=60):
            chunk = read_group(group)
            with h5py.File(sim / "truth.h5") as f:
                tg = f[f"groups/{group.group_id}"]
                amp = tg["rfi_amp_sigma"][()]
                has_cal = bool(tg.attrs["has_calibrator"])
            nsb = len(chunk.subbands_present)

            def ours():
                return flag_group(vis=chunk.vis, flags=chunk.flags, ant1=chunk.ant1, ant2=chunk.ant2,
                                  n_antennas=chunk.antenna_enu_m.shape[0],
                                  chans_per_subband=chunk.vis.shape[2] // nsb, cfg=cfg.flag, backend="cpu").flags

            def theirs():
                return aoflagger_flags(vis=chunk.vis, cross=chunk.cross, threads=args.threads)

            row = {"group": group.group_id, "calibrator": has_cal, "shape": list(chunk.vis.shape),
                   "visibilities": int(chunk.vis[:, chunk.cross].size)}
            for name, fn in (("contimg_cpu", ours), ("aoflagger", theirs)):
                flags = fn()  # warm-up
                times = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    flags = fn()
                    times.append(time.perf_counter() - t0)
                s = score_flags(flags=flags, amp_sigma=amp, cross=chunk.cross)
                row[name] = {"time_s": {"min": min(times), "median": statistics.median(times), "max": max(times)},
                             "true_positive_rate_5sigma": s.true_positive_rate, "false_flag_rate": s.false_flag_rate,
                             "weak_detected": s.weak_detected, "by_amp": s.by_amp}
            row["speedup"] = row["aoflagger"]["time_s"]["median"] / row["contimg_cpu"]["time_s"]["median"]
            rows.append(row)
            print(json.dumps(row, indent=1))
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
              "versions": {"aoflagger": aoflagger.AOFlagger().get_version_string(), "numpy": np.__version__},
              "config": args.config, "simulate_changes": changes, "threads": args.threads, "groups": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
