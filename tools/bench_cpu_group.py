"""Wall time and peak memory of `contimg run` on one real-size DSA-110 group (CPU).

    python tools/bench_cpu_group.py --work /tmp/bench [--config quick] [--config dsa110]

Simulates one group at the real size (96 antennas, 16 x 48 channels, 24 integrations, 2 pols)
unless it is already in <work>/in, then runs `contimg run` once per config in a child process
and reads its peak resident memory (getrusage of the child) and the per-stage seconds from the
run's summary.json. Prints a Markdown table for docs/benchmarks/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path


_WRAP = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
         "print('PEAK_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")


def _run(cmd: list[str]) -> tuple[float, float, int]:
    """Run ``cmd`` under a small wrapper that reports the peak RSS of that command alone."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _WRAP, *cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    wall = time.perf_counter() - t0
    peak_kib = next(int(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("PEAK_KIB"))
    if proc.returncode not in (0, 2):
        print(proc.stdout[-3000:], file=sys.stderr)
    return wall, peak_kib / 1024**2, proc.returncode


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--config", action="append", default=None)
    args = ap.parse_args()
    configs = args.config or ["quick", "dsa110"]
    incoming = args.work / "in"
    rows = []
    if not list(incoming.glob("*_sb00.hdf5")):
        incoming.mkdir(parents=True, exist_ok=True)
        wall, peak, rc = _run([sys.executable, "-m", "contimg.cli", "simulate", str(incoming), "--groups", "1",
                               "--config", "dsa110"])
        rows.append(("simulate (dsa110, 1 group)", wall, peak, rc, {}))
    size = sum(p.stat().st_size for p in incoming.glob("*.hdf5"))
    for name in configs:
        root = args.work / f"root-{name}"
        shutil.rmtree(root, ignore_errors=True)
        wall, peak, rc = _run([sys.executable, "-m", "contimg.cli", "run", str(incoming), "--root", str(root),
                               "--config", name])
        summary = json.loads((root / "summary.json").read_text()) if (root / "summary.json").exists() else []
        stages = summary[0]["timings_s"] if summary else {}
        rows.append((f"contimg run --config {name}", wall, peak, rc, stages))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
    print(f"group on disk: {size / 1e9:.3f} GB in {len(list(incoming.glob('*.hdf5')))} files\n")
    print("| step | wall (s) | peak RSS (GiB) | exit | stages (s) |")
    print("| --- | --- | --- | --- | --- |")
    for label, wall, peak, rc, stages in rows:
        st = ", ".join(f"{k} {v:.1f}" for k, v in stages.items())
        print(f"| {label} | {wall:.1f} | {peak:.2f} | {rc} | {st} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
