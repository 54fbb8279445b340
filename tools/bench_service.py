"""The service under load: resident memory over a replay, the event loop's lag while the
processor is busy, and throughput in groups per hour.

    # memory curve and loop lag: 20 small groups replayed at 1000x through `contimg replay`
    python tools/bench_service.py --work /tmp/svcbench --groups 20 --size test --mode replay
    # throughput: real-size groups through `contimg run` (batch), prefetch 1 against prefetch 0
    python tools/bench_service.py --work /tmp/svcbench --groups 3 --size real --mode run --config quick

Simulates the groups once into <work>/in-<size>-<groups> (reused when present), runs the command
in a child process whose RSS is sampled every 0.25 s (psutil), then reads the run's
ingest.sqlite3 (per-stage seconds, each group's completion time and the largest timer lag of
the event loop while it was processed). Prints Markdown for docs/benchmarks/.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

SIZES = {  # simulate overrides
    "test": ["--config", "test"],
    "real": ["--config", "dsa110"],
}


def _simulate(folder: Path, size: str, n: int) -> float:
    if list(folder.glob("*_sb00.hdf5")):
        return 0.0
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "contimg.cli", "simulate", str(folder), "--groups", str(n),
                    *SIZES[size]], check=True)
    return time.perf_counter() - t0


def _sampled(cmd: list[str], env: dict, log: Path) -> tuple[int, float, list[tuple[float, float]], float]:
    """Run ``cmd``; return (exit code, wall s, [(t since launch, rss MiB)], launch time since the epoch)."""
    launched = time.time()
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        ps = psutil.Process(proc.pid)
        samples = []
        while proc.poll() is None:
            try:
                samples.append((time.perf_counter() - t0, ps.memory_info().rss / 2**20))
            except psutil.NoSuchProcess:
                break
            time.sleep(0.25)
    return proc.returncode, time.perf_counter() - t0, samples, launched


def _metrics(root: Path) -> list[dict]:
    con = sqlite3.connect(root / "state" / "ingest.sqlite3")
    con.row_factory = sqlite3.Row
    rows = [dict(r) for r in con.execute("SELECT * FROM performance_metrics ORDER BY id")]
    con.close()
    return rows


def _sparkline(values: list[float]) -> str:
    ticks = "▁▂▃▄▅▆▇█"
    lo, hi = min(values), max(values)
    return "".join(ticks[int((v - lo) / (hi - lo + 1e-9) * (len(ticks) - 1))] for v in values)


def run_once(args, in_dir: Path, prefetch: int) -> dict:
    root = args.work / f"root-{args.mode}-{args.size}-p{prefetch}"
    if root.exists():
        subprocess.run(["rm", "-rf", str(root)], check=True)
    env = dict(os.environ, CONTIMG__SERVICE__PREFETCH=str(prefetch))
    cmd = [sys.executable, "-m", "contimg.cli", args.mode, str(in_dir), "--root", str(root), "--config", args.config]
    if args.mode == "replay":
        cmd += ["--speed", str(args.speed)]
    code, wall, samples, launched = _sampled(cmd, env, args.work / f"{root.name}.log")
    rows = _metrics(root)
    done = sorted(r["finished_at"] for r in rows if r["stage"] == "write")
    lag = [r["seconds"] for r in rows if r["stage"] == "loop_lag_max"]
    lag99 = [r["seconds"] for r in rows if r["stage"] == "loop_lag_p99"]
    gcmax = [r["seconds"] for r in rows if r["stage"] == "gc_max"]
    by_stage: dict[str, list[float]] = {}
    for r in rows:
        if r["stage"] in ("read", "flag", "calibrate", "image", "write"):
            by_stage.setdefault(r["stage"], []).append(r["seconds"])
    spans = [(r["finished_at"] - launched - r["seconds"], r["finished_at"] - launched, r["group_id"], r["stage"])
             for r in rows if r["stage"] in ("read", "flag", "calibrate", "image", "write", "catalogue_mosaic")]
    per_group: dict[str, dict[str, float]] = {}
    for r in rows:
        if r["stage"] in ("read", "flag", "calibrate", "image", "write", "catalogue_mosaic"):
            g = per_group.setdefault(r["group_id"], {})
            g[r["stage"]] = g.get(r["stage"], 0.0) + r["seconds"]
    return {"prefetch": prefetch, "code": code, "wall": wall, "samples": samples, "done": done, "lag": lag,
            "lag99": lag99, "gc": gcmax, "per_group": per_group,
            "stages": {k: statistics.median(v) for k, v in by_stage.items()}, "launched": launched,
            "spans": spans}


def window_peaks(r: dict) -> tuple[list[float], list[float]]:
    """Each written group's window, from the previous group's completion to its own: the peak
    RSS in it (MiB) and when it was sampled (s since launch)."""
    windows, at, prev = [], [], 0.0
    for e in (d - r["launched"] for d in r["done"]):
        w = [(m, t) for t, m in r["samples"] if prev <= t <= e]
        if w:
            windows.append(max(w)[0])
            at.append(max(w)[1])
        prev = e
    return windows, at


def _running(spans: list[tuple[float, float, str, str]], t: float) -> str:
    """The stages running at ``t`` s after launch, as ``HH:MM:SS stage`` (the group's time of day)."""
    now = sorted((g, st) for a, b, g, st in spans if a <= t <= b)
    return ", ".join(f"{g[11:19]} {st}" for g, st in now) or "-"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--groups", type=int, default=20)
    ap.add_argument("--size", choices=list(SIZES), default="test")
    ap.add_argument("--mode", choices=["replay", "run"], default="replay")
    ap.add_argument("--config", default=None, help="pipeline config (default: the size's)")
    ap.add_argument("--speed", type=float, default=1000.0)
    ap.add_argument("--prefetch", type=int, action="append", help="prefetch values to compare (default 1; run: 0 and 1)")
    args = ap.parse_args()
    args.config = args.config or SIZES[args.size][1]
    args.work.mkdir(parents=True, exist_ok=True)
    in_dir = args.work / f"in-{args.size}-{args.groups}"
    sim_s = _simulate(in_dir, args.size, args.groups)
    prefetches = args.prefetch or ([0, 1] if args.mode == "run" else [1])
    results = [run_once(args, in_dir, p) for p in prefetches]

    print(f"# Service benchmark: {args.mode}, {args.groups} {args.size}-size groups, config {args.config}\n")
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB; Python {platform.python_version()}; "
          f"{time.strftime('%Y-%m-%d')}. Simulation: {sim_s:.0f} s (0 = reused).\n")
    print("Command: `python tools/bench_service.py " + " ".join(sys.argv[1:]) + "`\n")
    print("| prefetch | exit | wall s | groups/hour | peak RSS MiB | median stage s (read/flag/cal/image/write) "
          "| loop lag max ms (median / worst group) | loop lag p99 ms (worst group) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        n = len(r["done"])
        span = (r["done"][-1] - r["done"][0]) if n > 1 else float("nan")
        rate = 3600 * (n - 1) / span if n > 1 else float("nan")  # steady state: completion to completion
        st = r["stages"]
        stages = "/".join(f"{st.get(k, float('nan')):.1f}" for k in ("read", "flag", "calibrate", "image", "write"))
        peak = max(m for _, m in r["samples"]) if r["samples"] else float("nan")
        lag = (f"{1e3 * statistics.median(r['lag']):.0f} / {1e3 * max(r['lag']):.0f}" if r["lag"] else "-")
        lag99 = f"{1e3 * max(r['lag99']):.0f}" if r["lag99"] else "-"
        print(f"| {r['prefetch']} | {r['code']} | {r['wall']:.1f} | {rate:.0f} | {peak:.0f} | {stages} | {lag} "
              f"| {lag99} |")
    for r in results:
        if not r["samples"] or len(r["done"]) < 2:
            continue
        print(f"\nResident memory (prefetch {r['prefetch']}), MiB, sampled every 0.25 s; "
              f"the peak in each group's window (between completions):\n")
        windows, at = window_peaks(r)
        print("| group | " + " | ".join(str(i + 1) for i in range(len(windows))) + " |")
        print("|---|" + "---|" * len(windows))
        print("| peak RSS MiB | " + " | ".join(f"{w:.0f}" for w in windows) + " |")
        print("\nWhat ran at each window's peak (the recorded stage intervals; `catalogue_mosaic` is the "
              "after-group update):\n")
        print("| group | peak RSS MiB | at s | running |")
        print("|---:|---:|---:|---|")
        for i, (w, t) in enumerate(zip(windows, at)):
            print(f"| {i + 1} | {w:.0f} | {t:.0f} | {_running(r['spans'], t)} |")
        print(f"\nCurve: `{_sparkline([m for _, m in r['samples']])}` "
              f"({min(m for _, m in r['samples']):.0f}–{max(m for _, m in r['samples']):.0f} MiB)")
        if len(windows) >= 10:
            first, last = max(windows[:5]), max(windows[-5:])
            print(f"\nPeak of the first five groups {first:.0f} MiB, of the last five {last:.0f} MiB "
                  f"(ratio {last / first:.3f}).")
        if r["lag"]:
            print("\nEvent-loop timer lag (a 50 ms timer's lateness) per group, ms — largest: "
                  + ", ".join(f"{1e3 * x:.0f}" for x in r["lag"]) + "; 99th percentile: "
                  + ", ".join(f"{1e3 * x:.0f}" for x in r["lag99"]))
        if r["gc"]:
            print("\nLongest garbage collection per group (it stops every thread), ms: "
                  + ", ".join(f"{1e3 * x:.0f}" for x in r["gc"]))
        after = {g: v for g, v in sorted(r["per_group"].items()) if "catalogue_mosaic" in v}
        if after:
            print("\nThe after-group catalogue and mosaic update (stage `catalogue_mosaic`, in the writer thread beside "
                  "the next group's processing) and the group's own stages (read + flag + calibrate + image + write):\n")
            print("| group | stages (s) | catalogue + mosaic (s) | ratio |")
            print("|---|---:|---:|---:|")
            for g, v in after.items():
                stages = sum(x for k, x in v.items() if k != "catalogue_mosaic")
                print(f"| {g} | {stages:.1f} | {v['catalogue_mosaic']:.1f} | {v['catalogue_mosaic'] / stages:.2f} |")
    if len(results) == 2 and all(len(r["done"]) > 1 for r in results):
        a, b = results
        print(f"\nWall time prefetch {a['prefetch']} / prefetch {b['prefetch']}: {a['wall'] / b['wall']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
