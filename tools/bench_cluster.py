"""Throughput of `contimg run` on a local Dask cluster: 1 worker against 2, beside the
single-process batch, all in the same run on the same simulated groups.

    python tools/bench_cluster.py --work /tmp/clbench --groups 8 --npix 1024 --niter 3000

Simulates the groups once into <work>/in (test-size groups: 96 antennas, 64 channels, 24
integrations), then runs `contimg run` into a fresh root for each case as a child process and
times it from start to exit (the cluster's start-up included). Every case uses one gridding
thread per process (`runtime.nthreads = 1`), so "2 workers" uses the machine's 2 cores as two
processes; the single-process batch is also run with 2 gridding threads for reference. Prints
Markdown for docs/benchmarks/cluster.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil


def _config(work: Path, npix: int, niter: int, nthreads: int) -> Path:
    path = work / f"bench-{nthreads}.toml"
    path.write_text(f'base = "test"\n[image]\nnpix = {npix}\nniter = {niter}\nproducts = ["restored", "pbcor"]\n'
                    f'[runtime]\nnthreads = {nthreads}\n[qa]\nplots = false\n')
    return path


def _run(work: Path, name: str, cfg: Path, extra: list[str]) -> float:
    root = work / f"root-{name}"
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "contimg.cli", "run", str(work / "in"), "--root", str(root),
                           "--config", str(cfg), *extra], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{name}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--npix", type=int, default=1024)
    ap.add_argument("--niter", type=int, default=3000)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if not list((args.work / "in").glob("*_sb00.hdf5")):
        subprocess.run([sys.executable, "-m", "contimg.cli", "simulate", str(args.work / "in"), "--groups",
                        str(args.groups), "--config", "test"], check=True, capture_output=True)
    one, two = _config(args.work, args.npix, args.niter, 1), _config(args.work, args.npix, args.niter, 2)
    cases = [("single process, 1 gridding thread", one, []),
             ("single process, 2 gridding threads", two, []),
             ("Dask, 1 worker", one, ["--workers", "1"]),
             ("Dask, 2 workers", one, ["--workers", "2"])]
    times = {name: _run(args.work, str(k), cfg, extra) for k, (name, cfg, extra) in enumerate(cases)}
    base = times["Dask, 1 worker"]
    print(f"{args.groups} test-size groups ({args.npix}², {args.niter} CLEAN components at most); "
          f"{platform.node()}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB; "
          f"{time.strftime('%Y-%m-%d %H:%M')}\n")
    print("| case | wall (s) | groups/hour | vs Dask, 1 worker |")
    print("| --- | ---: | ---: | ---: |")
    for name, seconds in times.items():
        print(f"| {name} | {seconds:.1f} | {3600 * args.groups / seconds:.0f} | {base / seconds:.2f}× |")


if __name__ == "__main__":
    main()
